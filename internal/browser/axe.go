package browser

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// axe-core, the accessibility engine the tests inject, comes from the npm
// registry at this exact version; the package must match its registry
// integrity (the SHA-512 of the tarball) before it is used.
const (
	axeVersion   = "4.14.1"
	axeIntegrity = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)

// wcagTags are the axe rule tags of WCAG 2.1 levels A and AA.
var wcagTags = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa"}

var axe struct {
	once   sync.Once
	source string
	err    error
}

// axeSource returns axe.min.js, fetched once with `npm pack` into the user
// cache (~/.cache/countersign/axe-core-VERSION) and verified.
func axeSource() (string, error) {
	axe.once.Do(func() { axe.source, axe.err = loadAxe() })
	return axe.source, axe.err
}

func loadAxe() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "countersign", "axe-core-"+axeVersion)
	script := filepath.Join(dir, "axe.min.js")
	if b, err := os.ReadFile(script); err == nil {
		return string(b), nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tgz := filepath.Join(dir, "axe-core-"+axeVersion+".tgz")
	if _, err := os.Stat(tgz); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			return "", errors.New("axe-core comes from npm, and there is no npm: install Node.js and npm (apt-get install nodejs npm; .ci/run does)")
		}
		cmd := exec.Command(npm, "pack", "axe-core@"+axeVersion, "--pack-destination", dir, "--silent")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("npm pack axe-core@%s: %v\n%s", axeVersion, err, out)
		}
	}
	raw, err := os.ReadFile(tgz)
	if err != nil {
		return "", err
	}
	sum := sha512.Sum512(raw)
	if got := "sha512-" + base64.StdEncoding.EncodeToString(sum[:]); got != axeIntegrity {
		os.Remove(tgz)
		return "", fmt.Errorf("axe-core@%s: integrity %s, want %s (the download was removed)", axeVersion, got, axeIntegrity)
	}
	src, err := untar(raw, "package/axe.min.js")
	if err != nil {
		return "", fmt.Errorf("axe-core@%s: %w", axeVersion, err)
	}
	if err := os.WriteFile(script, src, 0o644); err != nil {
		return "", err
	}
	return string(src), nil
}

func untar(tgz []byte, name string) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("no %s in the package: %v", name, err)
		}
		if h.Name == name {
			return io.ReadAll(tr)
		}
	}
}

// Violation is one axe-core rule a page breaks.
type Violation struct {
	ID      string   `json:"id"`
	Impact  string   `json:"impact"`
	Help    string   `json:"help"`
	HelpURL string   `json:"helpUrl"`
	Nodes   []string `json:"nodes"` // the elements, as selectors and their HTML
}

func (v Violation) String() string {
	return fmt.Sprintf("%s (%s): %s — %s\n    %s", v.ID, v.Impact, v.Help, v.HelpURL, strings.Join(v.Nodes, "\n    "))
}

// Axe runs axe-core's WCAG 2.1 A and AA rules on the page as it is and
// returns what it breaks. axe is evaluated through DevTools, which the
// page's Content-Security-Policy does not govern.
func (tab *Tab) Axe(t testing.TB) []Violation {
	t.Helper()
	src, err := axeSource()
	if err != nil {
		t.Fatal(err)
	}
	tab.Eval(t, src+";\nnull", nil)
	tags := `["` + strings.Join(wcagTags, `","`) + `"]`
	var out []Violation
	tab.Eval(t, `axe.run(document, {runOnly: {type: "tag", values: `+tags+`}, resultTypes: ["violations"]}).then(r =>
		r.violations.map(v => ({id: v.id, impact: v.impact || "", help: v.help, helpUrl: v.helpUrl,
			nodes: v.nodes.map(n => n.target.join(" ") + "  " + n.html)})))`, &out)
	return out
}

// CheckAccessibility fails the test, without stopping it, for each WCAG 2.1
// AA violation on the page.
func (tab *Tab) CheckAccessibility(t testing.TB) {
	t.Helper()
	for _, v := range tab.Axe(t) {
		t.Errorf("accessibility at %s: %s", tab.location(), v)
	}
}
