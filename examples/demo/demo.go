// Package demo embeds the demo request types and the demo risk policy that
// `countersign serve --dev` loads, so the dev server needs no files beside
// its binary.
package demo

import (
	"embed"
	"fmt"
	"io/fs"

	"github.com/countersign/countersign/rar"
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

// TypeDefinitions parses the demo type files.
func TypeDefinitions() ([]rar.Type, error) {
	var out []rar.Type
	err := fs.WalkDir(Types(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Types(), p)
		if err != nil {
			return err
		}
		t, err := rar.ParseTypeFile(b)
		if err != nil {
			return fmt.Errorf("demo type %s: %w", p, err)
		}
		out = append(out, t)
		return nil
	})
	return out, err
}
