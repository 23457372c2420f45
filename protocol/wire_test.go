package protocol

import (
	"encoding/json"
	"testing"
)

// TestWireBytes holds the exact JSON each type writes: what the server sent
// before these types were shared, byte for byte.
func TestWireBytes(t *testing.T) {
	claims := &AccessTokenClaims{Issuer: "https://cs.example", Subject: "u1", Audience: Audience{"https://api.example.com"}, ClientID: "c1",
		Act: Actor{Subject: "c1"}, IssuedAt: 100, Expiry: 400, JTI: "j1", Txn: "t1", Scope: "openid",
		AuthorizationDetails: json.RawMessage(`[{"type":"x"}]`), AuthorizationDetailsHash: "h", ACR: ACRApproval, AMR: []string{"user"}, AuthTime: 90}
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"authorize", AuthorizeResponse{AuthReqID: "a", ExpiresIn: 300, Interval: 5, ApprovalURL: "https://x/approve/1"},
			`{"auth_req_id":"a","expires_in":300,"interval":5,"approval_url":"https://x/approve/1"}`},
		{"error", ErrorResponse{CodeSlowDown, "d"}, `{"error":"slow_down","error_description":"d"}`},
		{"error without description", ErrorResponse{Error: CodeServerError}, `{"error":"server_error"}`},
		{"inactive", IntrospectionResponse{}, `{"active":false}`},
		{"inactive with reason", IntrospectionResponse{Reason: ReasonExpired}, `{"active":false,"reason":"expired"}`},
		{"active", IntrospectionResponse{Active: true, TokenType: "Bearer", AccessTokenClaims: claims},
			`{"active":true,"token_type":"Bearer","iss":"https://cs.example","sub":"u1","aud":"https://api.example.com","client_id":"c1","act":{"sub":"c1"},"iat":100,"exp":400,"jti":"j1","txn":"t1","scope":"openid","authorization_details":[{"type":"x"}],"authorization_details_hash":"h","acr":"urn:countersign:acr:approval","amr":["user"],"auth_time":90}`},
		{"active, two audiences", IntrospectionResponse{Active: true, TokenType: "Bearer", AccessTokenClaims: &AccessTokenClaims{Audience: Audience{"a", "b"}}},
			`{"active":true,"token_type":"Bearer","iss":"","sub":"","aud":["a","b"],"client_id":"","act":{"sub":""},"iat":0,"exp":0,"jti":"","txn":"","authorization_details":null,"authorization_details_hash":"","acr":"","amr":null}`},
		{"token", TokenResponse{AccessToken: "at", TokenType: "Bearer", ExpiresIn: 300, IDToken: "id", AuthorizationDetails: json.RawMessage(`[{"type":"x"}]`), Scope: "openid"},
			`{"access_token":"at","token_type":"Bearer","expires_in":300,"id_token":"id","authorization_details":[{"type":"x"}],"scope":"openid"}`},
		{"token without scope", TokenResponse{AuthorizationDetails: json.RawMessage(`[]`)},
			`{"access_token":"","token_type":"","expires_in":0,"id_token":"","authorization_details":[]}`},
		{"ID token", IDTokenClaims{Issuer: "i", Subject: "s", Audience: Audience{"c"}, Expiry: 2, IssuedAt: 1, AuthTime: 1, Nonce: "n", ACR: "a", AMR: []string{"x"}, AtHash: "h", AuthReqID: "r", Email: "e"},
			`{"iss":"i","sub":"s","aud":"c","exp":2,"iat":1,"auth_time":1,"nonce":"n","acr":"a","amr":["x"],"at_hash":"h","urn:openid:params:jwt:claim:auth_req_id":"r","email":"e"}`},
		{"empty ID token", IDTokenClaims{}, `{"iss":"","sub":"","aud":[],"exp":0,"iat":0}`},
		{"metadata", ProviderMetadata{Issuer: "i", ScopesSupported: []string{"openid"}, BackchannelUserCodeParameterSupported: true},
			`{"issuer":"i","token_endpoint":"","backchannel_authentication_endpoint":"","jwks_uri":"","introspection_endpoint":"","revocation_endpoint":"","redeem_endpoint":"","backchannel_cancel_endpoint":"","scopes_supported":["openid"],"response_types_supported":null,"grant_types_supported":null,"subject_types_supported":null,"id_token_signing_alg_values_supported":null,"token_endpoint_auth_methods_supported":null,"token_endpoint_auth_signing_alg_values_supported":null,"introspection_endpoint_auth_methods_supported":null,"revocation_endpoint_auth_methods_supported":null,"revocation_endpoint_auth_signing_alg_values_supported":null,"claims_supported":null,"acr_values_supported":null,"backchannel_token_delivery_modes_supported":null,"backchannel_user_code_parameter_supported":true,"authorization_details_types_supported":null,"request_parameter_supported":false,"claims_parameter_supported":false}`},
		{"ping", PingNotification{AuthReqID: "r"}, `{"auth_req_id":"r"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("JSON\n got %s\nwant %s", b, tt.want)
			}
		})
	}
}

// TestIntrospectionResponseDecode: a client reads both shapes of the answer
// into one value.
func TestIntrospectionResponseDecode(t *testing.T) {
	var active IntrospectionResponse
	if err := json.Unmarshal([]byte(`{"active":true,"token_type":"Bearer","aud":["a","b"],"txn":"t1","acr":"urn:countersign:acr:step-up"}`), &active); err != nil {
		t.Fatal(err)
	}
	if !active.Active || active.AccessTokenClaims == nil || active.Txn != "t1" || !active.Audience.Contains("b") || active.ACR != ACRStepUp {
		t.Errorf("active = %+v", active)
	}
	var inactive IntrospectionResponse
	if err := json.Unmarshal([]byte(`{"active":false,"reason":"already_redeemed"}`), &inactive); err != nil {
		t.Fatal(err)
	}
	if inactive.Active || inactive.Reason != ReasonAlreadyRedeemed || inactive.AccessTokenClaims != nil {
		t.Errorf("inactive = %+v", inactive)
	}
	var aud Audience
	if err := json.Unmarshal([]byte(`"x"`), &aud); err != nil || !aud.Contains("x") {
		t.Errorf("string aud = %v, %v", aud, err)
	}
	if err := json.Unmarshal([]byte(`7`), &aud); err == nil {
		t.Error("numeric aud accepted")
	}
}
