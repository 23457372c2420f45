package rar

import (
	"os"
	"path/filepath"
	"testing"
)

const demoTypesDir = "../examples/demo/types"

// demoTypes loads the shipped demo type files.
func demoTypes(tb testing.TB) []Type {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(demoTypesDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no demo types in %s: %v", demoTypesDir, err)
	}
	var types []Type
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		t, err := ParseTypeFile(data)
		if err != nil {
			tb.Fatalf("%s: %v", p, err)
		}
		types = append(types, t)
	}
	return types
}

func demoRegistry(tb testing.TB) *Registry {
	tb.Helper()
	r, err := Compile(demoTypes(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}
