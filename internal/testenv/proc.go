package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long a server gets to exit after SIGTERM before its whole
// process group is killed.
const stopGrace = 5 * time.Second

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 15 * time.Second

// errExited reports that a server exited while it was being waited for.
var errExited = errors.New("testenv: process exited during start-up")

// process is one server's master process, started in its own process group
// with stdout and stderr appended to a file.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the master has been reaped
	err  error         // Wait's result, valid after done
}

// startProcess runs bin with args and env in its own process group, output
// appended to outPath.
func startProcess(bin string, args, env []string, dir, outPath string) (*process, error) {
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	// Files rather than pipes: workers inherit these descriptors, and Wait
	// must not wait for them to close.
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	prepareReaper()
	err = cmd.Start()
	out.Close()
	if err != nil {
		return nil, fmt.Errorf("testenv: start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go p.reapMaster()
	return p, nil
}

// reapMaster waits for the master process and records how it ended.
func (p *process) reapMaster() {
	p.err = p.cmd.Wait()
	close(p.done)
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the master alone.
func (p *process) signal(sig syscall.Signal) error {
	if p.exited() {
		return errExited
	}
	return p.cmd.Process.Signal(sig)
}

// stop sends sig to the master and waits up to grace for it to exit; then,
// or if it exited already, it kills and reaps whatever is left in the
// process group. After stop returns no process of the group is running.
func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
		t := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-t.C:
			killGroup(p.pid())
			<-p.done
		}
		t.Stop()
	}
	// Workers outlive a master only when it was killed; they are orphans now.
	killGroup(p.pid())
	reapGroup(p.pid())
}

// kill kills the whole process group at once, the way a crash or the OOM
// killer would, and reaps it.
func (p *process) kill() {
	killGroup(p.pid())
	<-p.done
	reapGroup(p.pid())
}

// waitReady polls ready every few milliseconds until it reports true, the
// process exits, or the start-up timeout passes.
func (p *process) waitReady(ready func() (bool, error)) error {
	deadline := time.Now().Add(startTimeout)
	delay := time.Millisecond
	for {
		ok, err := ready()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if p.exited() {
			// One last look: the process may have got ready and then died.
			if ok, _ := ready(); ok {
				return nil
			}
			return fmt.Errorf("%w (%v)", errExited, p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: not ready after %v", startTimeout)
		}
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// childEnv is the test's environment without variables that would make a
// server inherit sockets or talk to systemd, plus extra.
func childEnv(extra ...string) []string {
	drop := []string{"NGINX=", "FPM_SOCKETS=", "NOTIFY_SOCKET=", "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "PHP_INI_SCAN_DIR=", "PHPRC="}
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, d := range drop {
			if strings.HasPrefix(kv, d) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// fileSize returns the size of path, or 0 if it does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the contents of path from offset on.
func readFrom(path string, offset int64) []byte {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return nil
	}
	return b[offset:]
}

// tail returns at most the last n bytes of path, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
		b = append([]byte("...\n"), b...)
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}
