package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var staticFS embed.FS

// assets are the embedded static files, served under names that carry a
// hash of their content, so they can be cached for a year and a new build
// is never served from an old cache.
type assets struct {
	byName map[string]string // "app.css" → "/static/app.3f2a….css"
	byURL  map[string]asset
}

type asset struct {
	body  []byte
	ctype string
}

func loadAssets() assets {
	a := assets{byName: map[string]string{}, byURL: map[string]asset{}}
	entries, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	for _, e := range entries {
		body, err := staticFS.ReadFile("static/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(body)
		ext := path.Ext(e.Name())
		url := "/static/" + strings.TrimSuffix(e.Name(), ext) + "." + hex.EncodeToString(sum[:6]) + ext
		a.byName[e.Name()] = url
		a.byURL[url] = asset{body: body, ctype: mime.TypeByExtension(ext)}
	}
	return a
}

// url returns the content-hashed URL of asset name.
func (a assets) url(name string) string { return a.byName[name] }

func (a assets) serve(w http.ResponseWriter, r *http.Request) {
	f, ok := a.byURL[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(f.body)
}
