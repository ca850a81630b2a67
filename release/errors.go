package release

import "errors"

// Errors returned by Activate and Rollback, wrapped with the paths involved
// and the cause where there is one. Test with errors.Is.
var (
	// ErrNotLink means the link path, or its previous-target record,
	// exists and is not a symlink. Nothing was replaced.
	ErrNotLink = errors.New("release: not a symlink")

	// ErrNoRelease means the release does not exist, or a link on the way
	// to it dangles.
	ErrNoRelease = errors.New("release: release does not exist")

	// ErrNotDir means the release exists but is not a directory.
	ErrNotDir = errors.New("release: release is not a directory")

	// ErrSelf means the release is the link or its previous-target
	// record, lies below or resolves through one of them, or contains the
	// link: the link would point at itself.
	ErrSelf = errors.New("release: release is the link itself")

	// ErrOutsideRoot means the release's real path is outside every
	// Link.AllowRoots.
	ErrOutsideRoot = errors.New("release: release outside allowed roots")

	// ErrNoPrevious means Rollback found no previous target recorded next
	// to the link.
	ErrNoPrevious = errors.New("release: no previous release recorded")

	// ErrLocked means the link's directory stayed locked for
	// Link.LockTimeout. Nothing was changed.
	ErrLocked = errors.New("release: link's directory is locked")
)
