package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPlanRuntime(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want runtimePlan
	}{
		{"defaults", nil, nil, runtimePlan{procs: 1, exec: true, godebug: sysmonAwake}},
		{"GOMAXPROCS wins over the default", nil, map[string]string{"GOMAXPROCS": "2"},
			runtimePlan{procs: 0, exec: true, godebug: sysmonAwake}},
		{"the flag wins over GOMAXPROCS", []string{"--gomaxprocs", "3"}, map[string]string{"GOMAXPROCS": "2"},
			runtimePlan{procs: 3, exec: true, godebug: sysmonAwake}},
		{"INCPATHD_GOMAXPROCS too", nil, map[string]string{"GOMAXPROCS": "2", "INCPATHD_GOMAXPROCS": "4"},
			runtimePlan{procs: 4, exec: true, godebug: sysmonAwake}},
		{"0 keeps Go's choice", []string{"--gomaxprocs", "0"}, nil, runtimePlan{procs: 0, exec: true, godebug: sysmonAwake}},
		{"other GODEBUG settings stay", nil, map[string]string{"GODEBUG": "http2debug=1"},
			runtimePlan{procs: 1, exec: true, godebug: "http2debug=1," + sysmonAwake}},
		{"a schedtrace in GODEBUG is the user's", nil, map[string]string{"GODEBUG": "gctrace=1, schedtrace=0"},
			runtimePlan{procs: 1}},
		{"the started process does not start again", nil, map[string]string{"GODEBUG": sysmonAwake},
			runtimePlan{procs: 1}},
		{"schedtracer is another key", nil, map[string]string{"GODEBUG": "schedtracer=1"},
			runtimePlan{procs: 1, exec: true, godebug: "schedtracer=1," + sysmonAwake}},
		{"monitor left to Go", []string{"--sysmon-awake=false"}, nil, runtimePlan{procs: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			c, err := parse(tc.args, getenv, nil)
			require.NoError(t, err)
			assert.Equal(t, tc.want, planRuntime(c.rt, c.from["gomaxprocs"] != "", getenv))
		})
	}
}

func TestGOMAXPROCSFlagRejectsNegative(t *testing.T) {
	_, err := parse([]string{"--gomaxprocs", "-1"}, func(string) string { return "" }, nil)
	assert.ErrorContains(t, err, "--gomaxprocs: -1 is negative")
}

func TestWithGODEBUG(t *testing.T) {
	got := withGODEBUG([]string{"A=1", "GODEBUG=gctrace=1", "B=2", "GODEBUG=x=1"}, "gctrace=1,"+sysmonAwake)
	assert.Equal(t, []string{"A=1", "B=2", "GODEBUG=gctrace=1," + sysmonAwake}, got)
	assert.Equal(t, []string{"GODEBUG=" + sysmonAwake}, withGODEBUG(nil, sysmonAwake))
}
