package web

import (
	_ "embed"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/countersign/countersign/approvals"
)

// The installable app (Web App Manifest) and its service worker, which
// does Web Push and notification clicks only.

//go:embed pwa/sw.js
var serviceWorker []byte

// serviceWorkerJS serves /sw.js: at the root, so its scope is the whole
// site, and revalidated on every load, so a new build's worker takes over.
func (s *Server) serviceWorkerJS(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(serviceWorker)
}

// manifest serves the Web App Manifest.
func (s *Server) manifest(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/manifest+json")
	w.Header().Set("Cache-Control", "no-cache")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"name": "Countersign", "short_name": "Countersign", "description": "Approve what your agents ask to do",
		"start_url": "/", "scope": "/", "display": "standalone",
		"background_color": "#fafaf9", "theme_color": "#1d4ed8",
		"icons": []map[string]string{
			{"src": s.assets.url("icon-192.png"), "sizes": "192x192", "type": "image/png", "purpose": "any"},
			{"src": s.assets.url("icon-512.png"), "sizes": "512x512", "type": "image/png", "purpose": "any"},
		},
	})
}

// pushKey answers the application server key a page subscribes with.
func (s *Server) pushKey(w http.ResponseWriter, r *http.Request) {
	if sessionOf(r) == nil {
		jsonError(w, http.StatusUnauthorized, "sign in first")
		return
	}
	k, err := s.svc.Keys().VAPID(r.Context())
	if err != nil {
		s.logger.ErrorContext(r.Context(), "VAPID keys", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "notifications are not available right now")
		return
	}
	jsonOK(w, map[string]string{"public_key": k.Public})
}

// subscribeBody is what the settings page posts: the browser's
// PushSubscription.toJSON() and the device's name.
type subscribeBody struct {
	Subscription struct {
		Endpoint string `json:"endpoint"`
		Keys     struct {
			P256dh string `json:"p256dh"`
			Auth   string `json:"auth"`
		} `json:"keys"`
	} `json:"subscription"`
	Name string `json:"name"`
}

// subscribe stores this device's push subscription for the signed-in user.
func (s *Server) subscribe(w http.ResponseWriter, r *http.Request) {
	si := sessionOf(r)
	if si == nil || !csrfOK(r, si) {
		jsonError(w, http.StatusForbidden, "sign in again")
		return
	}
	var b subscribeBody
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := readJSON(r, &b); err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	sub, err := s.svc.Store().AddPushSubscription(r.Context(), approvals.PushSubscription{UserID: si.User.ID,
		Endpoint: b.Subscription.Endpoint, P256dh: b.Subscription.Keys.P256dh, Auth: b.Subscription.Keys.Auth,
		Name: b.Name, UserAgent: r.UserAgent()})
	if ie := (*approvals.InputError)(nil); errors.As(err, &ie) {
		jsonError(w, http.StatusUnprocessableEntity, ie.Msg)
		return
	}
	if err != nil {
		s.logger.ErrorContext(r.Context(), "push subscription", "err", err)
		jsonError(w, http.StatusInternalServerError, "the device could not be saved")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]string{"id": sub.ID, "name": sub.Name})
}
