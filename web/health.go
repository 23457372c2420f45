package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/countersign/countersign/migrations"
)

type probeResponse struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// healthz answers while the process is up; it touches nothing else.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, probeResponse{Status: "ok"})
}

// readyz answers 200 only while the database is reachable and migrated to the
// schema this binary expects, so a load balancer sends no traffic before.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	v, err := migrations.Current(ctx, s.db.DB)
	switch {
	case err != nil:
		s.logger.WarnContext(ctx, "readiness: database unreachable", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, probeResponse{Status: "unavailable", Reason: "database unreachable"})
	case v < migrations.Latest():
		writeJSON(w, http.StatusServiceUnavailable, probeResponse{Status: "unavailable",
			Reason: fmt.Sprintf("database schema at migration %d, want %d", v, migrations.Latest())})
	default:
		writeJSON(w, http.StatusOK, probeResponse{Status: "ok"})
	}
}

// writeJSON writes v as the whole response. Unless the handler set its own
// Cache-Control, the response is not to be stored: it carries state or tokens.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if h.Get("Cache-Control") == "" {
		// RFC 6749 §5.1: no-store, and Pragma for HTTP/1.0 caches.
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
