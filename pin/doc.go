// Package pin decides, for one request, which release it runs in, and
// rewrites its params to that release.
//
// A site deployed by symlink swap has a docroot such as /srv/www/current
// pointing at releases/B; a deploy points it at releases/C with rename(2).
// PHP resolves paths through the link at different moments (the script, each
// include, opcache lookups), so one request can mix files of two releases.
// Pinning a request means giving PHP the release directory itself, resolved
// once at the start of the request. [Pinner.Pin] is the one entry point and
// owns the whole decision, in this order:
//
//   - [Name] names the front end from the request's params: INCPATH_SAPI if
//     the web server sets it, else the product in SERVER_SOFTWARE.
//   - [Policy] maps that name to a [Mode], as incpath's
//     incpath.docroot_sapi_list and incpath.realpath_sapi_list did for PHP
//     SAPI names: trust DOCUMENT_ROOT as already resolved (nginx with
//     $realpath_root, Apache with mod_realdoc), resolve it here, or leave
//     the request alone (passed through, still confined to the allowed
//     roots: guard.go).
//   - DOCUMENT_ROOT is refused with a NUL byte or a ".." component before
//     any system call (package pathsafe).
//   - [Resolver] resolves a docroot natively, as mod_realdoc did inside
//     Apache: a realpath (or, with UseReadlink, only the first symlink),
//     cached, one resolution at a time per docroot; a [Watcher] keeps the
//     cache right with inotify.
//   - The params are rewritten by package rewrite, with the pool's own ini
//     values as defaults once learned (pooldefaults.go), and what php-fpm
//     may run as the script is confined to Resolver.AllowRoots (guard.go).
//   - The request is counted in flight on its release, and the cache checked
//     again after the count, against a flip that raced it (pinner.go).
//
// # Differences from mod_realdoc and incpath
//
// mod_realdoc cached one docroot per process under ServerName:port, raced in
// threaded MPMs, served the unresolved symlink path when realpath() failed,
// and with UseReadlink never looked at the last path component. Resolver
// keys its cache by the docroot, is safe for concurrent use, returns an
// error on failure, and examines the last component (a DOCUMENT_ROOT of
// /srv/current, where current is the link, is the common case).
//
// incpath resolved on every request with no cache, inside PHP. Here the
// resolution happens before PHP sees the request, so SCRIPT_FILENAME,
// DOCUMENT_ROOT and include_path can all be pinned to the same directory.
//
// # Caveats
//
// With a cache (Resolver.Every > 0) and no [Watcher], a request that
// arrives within Every of the last resolution still gets the release from
// before a flip. A Watcher watches the directories every resolution went
// through (inotify) and has the Resolver forget a docroot as soon as one of
// its links changes; watched resolutions then stay cached until that
// happens, so the steady state makes no system call at all. Where watching
// is not possible (network file systems, the inotify limit), Every applies.
//
// As with mod_realdoc (its issue #8), access rules that name the symlinked
// path stop matching once requests carry the resolved one.
package pin
