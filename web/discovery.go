package web

import (
	"maps"
	"net/http"
	"slices"

	"github.com/countersign/countersign/approvals"
)

// metadata is the provider metadata of OpenID Connect Discovery 1.0 §3 and
// RFC 8414 §2, with the CIBA (CIBA §4) and RAR (RFC 9396 §10) fields.
type metadata struct {
	Issuer                                 string   `json:"issuer"`
	TokenEndpoint                          string   `json:"token_endpoint"`
	BackchannelAuthenticationEndpoint      string   `json:"backchannel_authentication_endpoint"`
	JWKSURI                                string   `json:"jwks_uri"`
	IntrospectionEndpoint                  string   `json:"introspection_endpoint"`
	RevocationEndpoint                     string   `json:"revocation_endpoint"`
	RedeemEndpoint                         string   `json:"redeem_endpoint"`
	BackchannelCancelEndpoint              string   `json:"backchannel_cancel_endpoint"`
	ScopesSupported                        []string `json:"scopes_supported"`
	ResponseTypesSupported                 []string `json:"response_types_supported"`
	GrantTypesSupported                    []string `json:"grant_types_supported"`
	SubjectTypesSupported                  []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported       []string `json:"id_token_signing_alg_values_supported"`
	TokenEndpointAuthMethodsSupported      []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgs           []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpointAuthMethods       []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethods          []string `json:"revocation_endpoint_auth_methods_supported"`
	RevocationEndpointAuthSigningAlgs      []string `json:"revocation_endpoint_auth_signing_alg_values_supported"`
	ClaimsSupported                        []string `json:"claims_supported"`
	ACRValuesSupported                     []string `json:"acr_values_supported"`
	BackchannelTokenDeliveryModesSupported []string `json:"backchannel_token_delivery_modes_supported"`
	BackchannelUserCodeParameterSupported  bool     `json:"backchannel_user_code_parameter_supported"`
	AuthorizationDetailsTypesSupported     []string `json:"authorization_details_types_supported"`
	RequestParameterSupported              bool     `json:"request_parameter_supported"`
	ClaimsParameterSupported               bool     `json:"claims_parameter_supported"`
}

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
	m := metadata{
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
