// Package testsupport holds what tests of several packages share and that
// knows nothing of FastCGI: a log buffer safe for concurrent use, a bounded
// poll for a condition, and a goroutine-leak check. internal/fcgitest builds
// the FastCGI helpers on it.
//
// It is imported only by tests.
package testsupport
