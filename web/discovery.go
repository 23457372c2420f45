package web

import (
	"maps"
	"net/http"
	"slices"

	"github.com/countersign/countersign/approvals"
	"github.com/countersign/countersign/protocol"
)

// discovery serves /.well-known/openid-configuration and
// /.well-known/oauth-authorization-server (the same document).
func (s *Server) discovery(w http.ResponseWriter, r *http.Request) error {
	_, versions, err := s.svc.Types().Registry(r.Context())
	if err != nil {
		return err
	}
	// RFC 9396 §10: a JSON array, empty before any type is registered.
	types := append([]string{}, slices.Sorted(maps.Keys(versions))...)
	iss := s.svc.Issuer()
	secretMethods := []string{approvals.AuthClientSecretBasic, approvals.AuthClientSecretPost}
	m := protocol.ProviderMetadata{
		Issuer:                            iss,
		TokenEndpoint:                     iss + "/token",
		BackchannelAuthenticationEndpoint: iss + "/bc-authorize",
		JWKSURI:                           iss + "/jwks.json",
		IntrospectionEndpoint:             iss + "/introspect",
		RevocationEndpoint:                iss + "/revoke",
		RedeemEndpoint:                    iss + "/redeem",
		BackchannelCancelEndpoint:         iss + "/bc-cancel",
		ScopesSupported:                   []string{"openid", "email"},
		ResponseTypesSupported:            []string{"id_token"},
		GrantTypesSupported:               []string{GrantTypeCIBA},
		SubjectTypesSupported:             []string{"public"},
		IDTokenSigningAlgValuesSupported:  []string{"ES256", "RS256"},
		TokenEndpointAuthMethodsSupported: append(secretMethods, approvals.AuthPrivateKeyJWT),
		TokenEndpointAuthSigningAlgs:      approvals.AssertionAlgs(),
		IntrospectionEndpointAuthMethods:  secretMethods,
		RevocationEndpointAuthMethods:     append(secretMethods, approvals.AuthPrivateKeyJWT),
		// RFC 8414 §2: required when private_key_jwt is listed.
		RevocationEndpointAuthSigningAlgs:      approvals.AssertionAlgs(),
		ClaimsSupported:                        []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "amr", "email", "at_hash", "urn:openid:params:jwt:claim:auth_req_id"},
		ACRValuesSupported:                     []string{approvals.ACRPolicy, approvals.ACRApproval, approvals.ACRStepUp},
		BackchannelTokenDeliveryModesSupported: []string{approvals.DeliveryPoll, approvals.DeliveryPing},
		BackchannelUserCodeParameterSupported:  true,
		AuthorizationDetailsTypesSupported:     types,
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, m)
	return nil
}
