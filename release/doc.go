// Package release points a site's docroot symlink at a release directory,
// atomically, and back.
//
// A site deployed by symlink swap keeps one directory per release and a
// symlink that web servers and incpathd use as the docroot:
//
//	/srv/site/releases/A/
//	/srv/site/releases/B/
//	/srv/site/current -> releases/B
//	/srv/site/current.previous -> releases/A
//
// [Link.Activate] replaces the hand-written `ln -s ... tmp && mv -T tmp
// current`: it checks the release, writes a symlink under a temporary name
// in the link's directory and renames it over the link, so every reader
// sees either the old target or the new one, never a missing or half-made
// link. It then syncs the directory, so the flip survives a crash. The
// target is relative when the release lies below the link's directory
// (current -> releases/B), so the site can be moved or mounted elsewhere as
// a whole; otherwise it is the release's absolute path.
//
// # The previous target
//
// Before each flip the old target is recorded in a second symlink next to
// the link, named after it with ".previous" appended (current.previous),
// written atomically the same way. A symlink rather than a file: it is
// written with the same rename, `ls -l` shows it, and a relative target
// means the same thing next to the link as in it. [Link.Rollback] points
// the link back at that target and records the target it replaces, so a
// second rollback undoes the first.
//
// Releases are not deleted here. A deploy that deletes old releases must
// keep the previous one, or Rollback fails with [ErrNoRelease].
//
// # What is refused, and what is not an error
//
//   - A link path that exists but is not a symlink (a real directory left
//     by an older deploy style): [ErrNotLink]. Nothing is replaced; move the
//     directory into releases/ and activate it from there. The same goes for
//     a previous-target record that is not a symlink.
//   - A release that does not exist, or is not a directory: [ErrNoRelease],
//     [ErrNotDir]. Refused before anything is written, so a typo never
//     leaves the site pointing at nothing.
//   - A release that is the link itself, lies below it, or resolves
//     through it (releases/X -> ../current): [ErrSelf]. Activating it would
//     make the link point at itself.
//   - A release whose real path is outside every Link.AllowRoots:
//     [ErrOutsideRoot].
//   - Activating the release the link already resolves to is not an error:
//     nothing is written and Result.Changed is false. Rewriting the link
//     would record the active release as the previous one and leave
//     nothing to roll back to.
//
// # Concurrency
//
// Concurrent Activate and Rollback calls on one link, from goroutines or
// processes, are serialised with flock(2) on the link's directory, so the
// recorded previous target is always the one the last flip replaced. Web
// servers and PHP never take the lock and need not: each rename is atomic
// on its own. The wait for the lock ends with the context or after
// Link.LockTimeout ([ErrLocked]); a deploy script that wants a lock of its
// own must take it on another path than the link's directory, or its own
// activation waits for it. Where the file system offers no flock (some network file
// systems), the calls go ahead unlocked: the link still only ever names a
// checked release, but concurrent calls may record a previous target that
// another call replaced.
package release
