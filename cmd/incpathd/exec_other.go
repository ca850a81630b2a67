//go:build !unix

package main

import "errors"

func execReplace(string, []string, []string, string) error {
	return errors.New("exec is not supported on this system")
}
