package pin

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// inotify is a Linux inotify instance read through the runtime's poller,
// so that Close wakes a blocked read.
//
// It uses golang.org/x/sys/unix directly rather than fsnotify: the Watcher
// needs watch descriptors (a directory's path can come to name another
// inode after a rename; the descriptor cannot), IN_DONT_FOLLOW and
// IN_ONLYDIR, IN_Q_OVERFLOW as an event rather than an error, and statfs
// to refuse network file systems, and fsnotify would bring the same
// dependency underneath anyway.
type inotify struct {
	fd int
	f  *os.File
}

// watchMask is what a watched directory reports: entries appearing,
// disappearing or renamed over (a deploy's rename(2) of a temporary link
// onto current is IN_MOVED_TO), and the directory itself going away.
// IN_DONT_FOLLOW and IN_ONLYDIR: only real directories are watched.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW

func newNotifier() (notifier, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pin: inotify_init1: %w", err)
	}
	// A non-blocking descriptor is registered with the poller by NewFile.
	return &inotify{fd: fd, f: os.NewFile(uintptr(fd), "inotify")}, nil
}

func (n *inotify) add(dir string) (int32, error) {
	wd, err := unix.InotifyAddWatch(n.fd, dir, watchMask)
	if err != nil {
		if err == unix.ENOSPC {
			return 0, fmt.Errorf("inotify_add_watch: %w (raise fs.inotify.max_user_watches)", err)
		}
		return 0, fmt.Errorf("inotify_add_watch: %w", err)
	}
	return int32(wd), nil
}

func (n *inotify) remove(wd int32) {
	unix.InotifyRmWatch(n.fd, uint32(wd)) // it may be gone already: IN_IGNORED is on its way
}

func (n *inotify) close() error { return n.f.Close() }

// read reads events until the descriptor is closed.
func (n *inotify) read(handle func([]event)) error {
	// Room for at least 256 events with long names; the kernel never
	// splits an event across reads.
	buf := make([]byte, 256*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	var evs []event
	for {
		k, err := n.f.Read(buf)
		if err != nil {
			return err
		}
		evs = parseEvents(evs[:0], buf[:k])
		handle(evs)
	}
}

// parseEvents appends the events in b, a whole number of struct
// inotify_event records, to dst.
func parseEvents(dst []event, b []byte) []event {
	for len(b) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(b[0:]))
		mask := binary.NativeEndian.Uint32(b[4:])
		nameLen := int(binary.NativeEndian.Uint32(b[12:]))
		b = b[unix.SizeofInotifyEvent:]
		if nameLen > len(b) {
			break
		}
		name := b[:nameLen]
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1] // NUL padding
		}
		dst = append(dst, event{wd: wd, mask: mask, name: string(name)})
		b = b[nameLen:]
	}
	return dst
}

func statfsType(dir string) (uint32, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint32(st.Type), nil
}
