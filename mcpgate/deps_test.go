package mcpgate

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: the gate is for MCP servers, which import it with the
// SDK: it pulls in the SDK's packages, the go-sdk, and no server package.
func TestDependencies(t *testing.T) {
	const module = "github.com/countersign/countersign"
	allowed := map[string]bool{module + "/mcpgate": true, module + "/client": true, module + "/protocol": true, module + "/rar/canonical": true}
	forbidden := []string{"cel.dev/", "github.com/santhosh-tekuri/jsonschema", "yaml", "github.com/a-h/templ",
		"github.com/jmoiron/sqlx", "github.com/lib/pq", "github.com/pressly/goose", "github.com/prometheus/"}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	sdk := false
	for _, d := range deps {
		sdk = sdk || d == "github.com/modelcontextprotocol/go-sdk/mcp"
		if strings.HasPrefix(d, module+"/") && !allowed[d] {
			t.Errorf("mcpgate depends on the server package %s", d)
		}
		for _, f := range forbidden {
			if strings.Contains(d, f) {
				t.Errorf("mcpgate depends on %s", d)
			}
		}
	}
	if !sdk {
		t.Errorf("go list -deps listed %q, without the go-sdk", deps)
	}
}
