package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Workers returns the process ids of nginx's worker processes (Linux only).
func (n *Nginx) Workers() []int {
	pid := n.PID()
	if pid == 0 {
		return nil
	}
	return childrenOf(pid)
}

// UID returns the real user id of process pid, from /proc (Linux only).
func UID(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("testenv: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("testenv: no Uid line in /proc/%d/status", pid)
}
