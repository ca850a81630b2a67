//go:build race

package sapi

const raceEnabled = true
