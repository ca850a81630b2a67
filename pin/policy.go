package pin

import (
	"strconv"
	"strings"
)

// Mode says what incpathd does with the docroot of a request.
type Mode int

const (
	// Passthrough leaves the params untouched: the request is not pinned.
	Passthrough Mode = iota
	// TrustDocroot takes DOCUMENT_ROOT as already resolved by the front end
	// (nginx with $realpath_root, Apache with mod_realdoc) and pins the
	// request to it without touching the file system.
	TrustDocroot
	// Realpath has incpathd resolve DOCUMENT_ROOT itself (see Resolver).
	Realpath
)

// String returns the mode's name, for logs.
func (m Mode) String() string {
	switch m {
	case Passthrough:
		return "passthrough"
	case TrustDocroot:
		return "trust-docroot"
	case Realpath:
		return "realpath"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Policy chooses a Mode from the front end's name (see Name). It carries
// incpath's pair of settings, incpath.docroot_sapi_list and
// incpath.realpath_sapi_list, applied to front-end names instead of PHP SAPI
// names.
//
// Names compare case-insensitively. The entry "*" matches every name, the
// empty one (front end unknown) included.
type Policy struct {
	// DocrootList names the front ends whose DOCUMENT_ROOT is trusted as
	// already resolved. It wins over RealpathList, as in incpath: a front
	// end that resolved the docroot itself must not pay for a second
	// resolution, and its answer is the one its own SCRIPT_FILENAME agrees
	// with. Nil or empty means none.
	DocrootList []string

	// RealpathList names the front ends whose DOCUMENT_ROOT incpathd
	// resolves. Nil means {"*"}: every front end not in DocrootList, so that
	// the zero Policy pins every request. An empty, non-nil slice means none.
	RealpathList []string
}

// defaultRealpathList is what a nil RealpathList stands for.
var defaultRealpathList = []string{"*"}

// Mode returns the mode for the front end called name. A name in neither
// list gets Passthrough. A nil *Policy behaves as the zero Policy.
func (p *Policy) Mode(name string) Mode {
	var docroot, realpath []string
	if p != nil {
		docroot, realpath = p.DocrootList, p.RealpathList
	}
	if realpath == nil {
		realpath = defaultRealpathList
	}
	switch {
	case matches(docroot, name):
		return TrustDocroot
	case matches(realpath, name):
		return Realpath
	}
	return Passthrough
}

func matches(list []string, name string) bool {
	for _, s := range list {
		if s == "*" || strings.EqualFold(s, name) {
			return true
		}
	}
	return false
}
