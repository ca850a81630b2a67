// Package testsupport holds what tests of several packages share: a log
// buffer safe for concurrent use and a bounded poll for a condition.
//
// It is imported only by tests.
package testsupport
