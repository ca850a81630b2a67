package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ReleaseMarker is the file NewSite writes at the top of every release; it
// holds the release name and a newline.
const ReleaseMarker = "release.txt"

// siteMtime is the modification time given to every copied file. Opcache
// refuses to cache a file modified within opcache.file_update_protection
// (2 s) of the request, so freshly copied files would make opcache tests
// depend on timing; real deployments are older than that too.
var siteMtime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// flipSeq makes temporary symlink names unique within the process.
var flipSeq atomic.Uint64

// Site is a PHP site deployed by symlink swap: Root/releases/<name>/ for each
// release and Root/current, a relative symlink to one of them.
type Site struct {
	// Root is the directory holding releases/ and current.
	Root string
	// Current is Root/current, the path a web server uses as its docroot.
	Current string
	// Releases maps each release name to the absolute path of its directory.
	Releases map[string]string
}

// NewSite copies testdata/site into Root/releases/<name> for each name
// ("A" and "B" if none are given), writes ReleaseMarker into each, and points
// current at the first. Root is a new directory under t.TempDir().
func NewSite(t testing.TB, names ...string) *Site {
	t.Helper()
	s, err := newSite(t.TempDir(), names)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newSite(root string, names []string) (*Site, error) {
	if len(names) == 0 {
		names = []string{"A", "B"}
	}
	src, err := testdataSite()
	if err != nil {
		return nil, err
	}
	s := &Site{
		Root:     filepath.Join(root, "site"),
		Releases: make(map[string]string, len(names)),
	}
	s.Current = filepath.Join(s.Root, "current")
	for _, name := range names {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
			return nil, fmt.Errorf("testenv: bad release name %q", name)
		}
		if _, dup := s.Releases[name]; dup {
			return nil, fmt.Errorf("testenv: release %q named twice", name)
		}
		dir := filepath.Join(s.Root, "releases", name)
		if err := copyTree(src, dir); err != nil {
			return nil, err
		}
		marker := filepath.Join(dir, ReleaseMarker)
		if err := os.WriteFile(marker, []byte(name+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("testenv: %w", err)
		}
		if err := os.Chtimes(marker, siteMtime, siteMtime); err != nil {
			return nil, fmt.Errorf("testenv: %w", err)
		}
		s.Releases[name] = dir
	}
	if err := os.Symlink(filepath.Join("releases", names[0]), s.Current); err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	return s, nil
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, b, 0o644); err != nil {
				return err
			}
			return os.Chtimes(target, siteMtime, siteMtime)
		default:
			return nil
		}
	})
}

// Flip points current at release name atomically: it creates a symlink
// under a temporary name in Root and renames it over current, as deploy
// tools do. Concurrent flips are safe; the last rename wins.
func (s *Site) Flip(name string) error {
	if _, ok := s.Releases[name]; !ok {
		return fmt.Errorf("testenv: flip: no release %q", name)
	}
	tmp := filepath.Join(s.Root, ".current."+strconv.Itoa(os.Getpid())+"."+strconv.FormatUint(flipSeq.Add(1), 10))
	if err := os.Symlink(filepath.Join("releases", name), tmp); err != nil {
		return fmt.Errorf("testenv: flip: %w", err)
	}
	if err := os.Rename(tmp, s.Current); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("testenv: flip: %w", err)
	}
	return nil
}

// Active returns the name of the release current points at.
func (s *Site) Active() (string, error) {
	target, err := os.Readlink(s.Current)
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	return filepath.Base(target), nil
}

// IncludeDir returns the site's include directory reached through current,
// the entry tests put in include_path.
func (s *Site) IncludeDir() string { return filepath.Join(s.Current, "include") }

// patternPeriod is the period of the byte pattern big.php sends.
const patternPeriod = 251

// PatternReader returns a reader of the n bytes big.php?bytes=n sends: byte
// i is i % 251. Use it as a request body of known content, too.
func PatternReader(n int64) io.Reader { return &patternReader{left: n} }

// patternBlock holds 64 periods of the pattern, copied from at any phase.
var patternBlock = func() []byte {
	b := make([]byte, 64*patternPeriod)
	for i := range b {
		b[i] = byte(i % patternPeriod)
	}
	return b
}()

type patternReader struct {
	off, left int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for n := 0; n < len(p); {
		n += copy(p[n:], patternBlock[(r.off+int64(n))%patternPeriod:])
	}
	r.off += int64(len(p))
	r.left -= int64(len(p))
	return len(p), nil
}

// PatternSHA256 returns the hex SHA-256 of the first n pattern bytes.
func PatternSHA256(n int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, PatternReader(n)); err != nil {
		panic(err) // writes to a hash never fail
	}
	return hex.EncodeToString(h.Sum(nil))
}
