// Package inflight counts the requests in flight per release, so that a
// deploy can tell when nothing uses an old release any more and it is safe
// to delete.
//
// The count is on every request's path: Acquire is a lock-free map lookup
// and a compare-and-swap on the release's own counter, with no lock shared
// by all requests.
package inflight
