// Package demo embeds the demo request types and the demo risk policy that
// `countersign serve --dev` loads, so the dev server needs no files beside
// its binary.
package demo

import (
	"embed"
	"io/fs"
)

//go:embed types/*.yaml policy.yaml
var files embed.FS

// Policy returns the demo risk policy (policy.yaml).
func Policy() []byte {
	b, err := files.ReadFile("policy.yaml")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	return b
}

// Types returns the demo type files, one per request type.
func Types() fs.FS {
	sub, err := fs.Sub(files, "types")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	return sub
}
