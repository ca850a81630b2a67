// Package prometheus holds incpathd's alerting rules
// (incpathd.rules.yml) and their tests; this file runs promtool on them.
package prometheus

import (
	"os/exec"
	"testing"

	"github.com/incpathd/incpathd/internal/testenv"
)

// The rules load and their unit tests pass, as promtool (Debian's
// prometheus package) runs them.
func TestRules(t *testing.T) {
	promtool := testenv.RequireBinary(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "incpathd.rules.yml"},
		{"test", "rules", "incpathd.rules.test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
