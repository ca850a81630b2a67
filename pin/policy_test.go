package pin

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPolicyMode(t *testing.T) {
	tests := []struct {
		desc   string
		policy *Policy
		name   string
		want   Mode
	}{
		{"nil policy resolves everything", nil, "nginx", Realpath},
		{"nil policy, unknown front end", nil, "", Realpath},
		{"zero policy resolves everything", &Policy{}, "apache", Realpath},
		{"zero policy, unknown front end", &Policy{}, "", Realpath},
		{"empty realpath list means none", &Policy{RealpathList: []string{}}, "nginx", Passthrough},
		{"in realpath list", &Policy{RealpathList: []string{"apache", "nginx"}}, "nginx", Realpath},
		{"not in realpath list", &Policy{RealpathList: []string{"apache"}}, "nginx", Passthrough},
		{"unknown not in realpath list", &Policy{RealpathList: []string{"apache"}}, "", Passthrough},
		{"in docroot list", &Policy{DocrootList: []string{"nginx"}}, "nginx", TrustDocroot},
		{"docroot list, others still resolved", &Policy{DocrootList: []string{"nginx"}}, "apache", Realpath},
		{
			"docroot list wins",
			&Policy{DocrootList: []string{"nginx"}, RealpathList: []string{"nginx"}},
			"nginx", TrustDocroot,
		},
		{
			"docroot list wins over star",
			&Policy{DocrootList: []string{"apache"}, RealpathList: []string{"*"}},
			"apache", TrustDocroot,
		},
		{
			"star in docroot list wins over a name",
			&Policy{DocrootList: []string{"*"}, RealpathList: []string{"nginx"}},
			"nginx", TrustDocroot,
		},
		{"star matches unknown", &Policy{RealpathList: []string{"*"}}, "", Realpath},
		{"star in docroot list matches unknown", &Policy{DocrootList: []string{"*"}}, "", TrustDocroot},
		{"empty entry matches unknown only", &Policy{RealpathList: []string{""}}, "", Realpath},
		{"empty entry does not match a name", &Policy{RealpathList: []string{""}}, "nginx", Passthrough},
		{"case-insensitive", &Policy{DocrootList: []string{"NGINX"}}, "nginx", TrustDocroot},
		{"no prefix match", &Policy{RealpathList: []string{"nginx"}}, "nginx-edge", Passthrough},
		{
			"both lists empty",
			&Policy{DocrootList: []string{}, RealpathList: []string{}},
			"nginx", Passthrough,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.policy.Mode(tt.name))
		})
	}
}

func TestModeString(t *testing.T) {
	assert.Equal(t, "passthrough", Passthrough.String())
	assert.Equal(t, "trust-docroot", TrustDocroot.String())
	assert.Equal(t, "realpath", Realpath.String())
	assert.Equal(t, "Mode(7)", Mode(7).String())
}
