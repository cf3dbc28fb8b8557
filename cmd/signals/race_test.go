//go:build race

package main

// Under go test -race, the binary the tests run is race-checked too.
func init() { buildFlags = append(buildFlags, "-race") }
