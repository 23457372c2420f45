package protocol

// ProviderMetadata is the provider metadata of OpenID Connect Discovery 1.0
// §3 and RFC 8414 §2, with the CIBA (CIBA §4) and RAR (RFC 9396 §10) fields
// and Countersign's redeem_endpoint and backchannel_cancel_endpoint.
type ProviderMetadata struct {
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
