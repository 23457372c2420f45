package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/countersign/countersign/protocol"
	"github.com/countersign/countersign/rar/canonical"
)

// maxGuardedBody bounds the request body a Guard reads for Details.
const maxGuardedBody = 1 << 20

// Guard lets a request reach the handler only with a Countersign token
// issued for exactly what the handler is about to execute, and spends the
// token on the way: checked offline by Verifier, then redeemed once by
// Redeemer. Refusals are answered with RFC 6750 §3 challenges:
//
//   - no token: 401, WWW-Authenticate: Bearer realm="…"
//   - a token that does not verify, has expired, is for another audience or
//     was already redeemed: 401, error="invalid_token"
//   - a token for other details than the request's: 403,
//     error="insufficient_scope" (and the token is not spent)
//   - a token whose acr is not one ACR asks for: 401,
//     error="insufficient_user_authentication" with acr_values (RFC 9470 §3),
//     before anything is spent
type Guard struct {
	Verifier *Verifier
	Redeemer *Redeemer
	// Details derives from the incoming request the authorization_details
	// it would execute, as RequestApproval takes them. The body can be read
	// here and again by the handler. An error is answered 400 with its text.
	Details func(r *http.Request) (any, error)
	// ACR, when set, names the acr values of which the token must carry one
	// for r and its details (RFC 9470), such as protocol.ACRStepUp for a
	// large payment; nil or empty accepts any.
	ACR func(r *http.Request, details json.RawMessage) []string
	// Realm is the challenges' realm (default "countersign").
	Realm string
}

type claimsKey struct{}

// ClaimsFromContext returns the claims of the token a Guard redeemed for
// the request whose context this is.
func ClaimsFromContext(ctx context.Context) (*protocol.AccessTokenClaims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*protocol.AccessTokenClaims)
	return c, ok
}

// Handler wraps next.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			// RFC 6750 §3.1: a request without authentication gets no
			// error code.
			g.challenge(w, http.StatusUnauthorized, "", "a Countersign access token is required", "")
			return
		}
		claims, err := g.Verifier.Verify(r.Context(), token)
		if err != nil {
			if d, ok := verifyDescription(err); ok {
				g.challenge(w, http.StatusUnauthorized, "invalid_token", d, "")
				return
			}
			// The keys could not be had: the token may be good.
			w.Header().Set("Retry-After", "5")
			http.Error(w, "the token cannot be checked now; retry later", http.StatusServiceUnavailable)
			return
		}
		details, err := g.details(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		hash, err := canonical.DetailsHash(details)
		if err != nil {
			http.Error(w, "the request's authorization_details: "+err.Error(), http.StatusBadRequest)
			return
		}
		if hash != claims.AuthorizationDetailsHash {
			g.challenge(w, http.StatusForbidden, "insufficient_scope", "the token was issued for another transaction", "")
			return
		}
		if g.ACR != nil {
			if want := g.ACR(r, details); len(want) > 0 && !slices.Contains(want, claims.ACR) {
				g.challenge(w, http.StatusUnauthorized, "insufficient_user_authentication",
					"a different authentication level is required", strings.Join(want, " "))
				return
			}
		}
		redeemed, err := g.Redeemer.RedeemHash(r.Context(), token, hash)
		var re *RedeemError
		switch {
		case errors.Is(err, ErrTransactionMismatch):
			g.challenge(w, http.StatusForbidden, "insufficient_scope", "the token was issued for another transaction", "")
			return
		case errors.As(err, &re):
			g.challenge(w, http.StatusUnauthorized, "invalid_token", "the token was not redeemed: "+re.Reason, "")
			return
		case err != nil:
			// The once-only check could not be made: fail closed.
			w.Header().Set("Retry-After", "5")
			http.Error(w, "the token could not be redeemed now; retry later", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, redeemed)))
	})
}

// details runs Details with the body readable again afterwards.
func (g *Guard) details(r *http.Request) (json.RawMessage, error) {
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxGuardedBody+1))
		r.Body.Close()
		if err != nil {
			return nil, errors.New("the request body could not be read")
		}
		if len(b) > maxGuardedBody {
			return nil, errors.New("the request body is too large")
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		defer func() { r.Body = io.NopCloser(bytes.NewReader(b)) }()
	}
	d, err := g.Details(r)
	if err != nil {
		return nil, err
	}
	return detailsJSON(d)
}

// challenge answers a refusal with an RFC 6750 §3 challenge (RFC 9470 §3
// for acr_values) and the same error as JSON.
func (g *Guard) challenge(w http.ResponseWriter, status int, code, description, acrValues string) {
	realm := g.Realm
	if realm == "" {
		realm = "countersign"
	}
	params := []string{`realm=` + quote(realm)}
	if code != "" {
		params = append(params, `error=`+quote(code), `error_description=`+quote(description))
	}
	if acrValues != "" {
		params = append(params, `acr_values=`+quote(acrValues))
	}
	w.Header().Set("WWW-Authenticate", "Bearer "+strings.Join(params, ", "))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if code == "" {
		code = "invalid_request"
	}
	_ = json.NewEncoder(w).Encode(protocol.ErrorResponse{Error: code, Description: description})
}

// quote writes an RFC 9110 §5.6.4 quoted-string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// bearerToken reads the Authorization: Bearer credential (RFC 6750 §2.1).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "Bearer") && token != ""
}

// verifyDescription says why a token did not verify, in words a client may
// read (RFC 6750 §3: error_description is for the developer), and false
// when the failure was not the token's.
func verifyDescription(err error) (string, bool) {
	switch {
	case errors.Is(err, ErrTokenExpired):
		return "the token has expired", true
	case errors.Is(err, ErrWrongAudience):
		return "the token is not for this resource server", true
	case errors.Is(err, ErrUnknownKey), errors.Is(err, ErrInvalidToken):
		return "the token is not a valid Countersign access token", true
	}
	return "", false
}
