//go:build !unix

package main

import "errors"

func reexec([]string, []string) error {
	return errors.New("exec is not supported on this system")
}
