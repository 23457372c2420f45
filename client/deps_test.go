package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: the SDK, and the leaf packages it shares with the
// server, pull in no server package and nothing heavy — what an agent or a
// resource server imports is the protocol, the canonical hash and go-jose.
func TestDependencies(t *testing.T) {
	const module = "github.com/countersign/countersign"
	allowed := map[string]bool{module + "/client": true, module + "/protocol": true, module + "/rar/canonical": true}
	forbidden := []string{"cel.dev/", "github.com/google/cel-go", "github.com/santhosh-tekuri/jsonschema", "yaml",
		"github.com/a-h/templ", "github.com/jmoiron/sqlx", "github.com/lib/pq", "github.com/pressly/goose", "github.com/prometheus/"}
	for _, pkg := range []string{"./", "../protocol", "../rar/canonical"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed %d packages: %q", pkg, len(deps), deps)
		}
		for _, d := range deps {
			if strings.HasPrefix(d, module+"/") && !allowed[d] {
				t.Errorf("%s depends on the server package %s", pkg, d)
			}
			for _, f := range forbidden {
				if strings.Contains(d, f) {
					t.Errorf("%s depends on %s", pkg, d)
				}
			}
		}
	}
}
