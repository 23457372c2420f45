package client

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/countersign/countersign/protocol"
)

// assertionLifetime is how long a client assertion lives: each request
// signs a new one, so a minute is plenty and a stolen one soon useless.
const assertionLifetime = time.Minute

// clientAuth authenticates one request to an endpoint: it sets the header
// or adds the form parameters of the configured method.
type clientAuth func(req *http.Request, form url.Values, audience string) error

func newClientAuth(cfg Config) (clientAuth, error) {
	id, secret := cfg.ClientID, cfg.ClientSecret
	switch cfg.AuthMethod {
	case protocol.AuthClientSecretBasic:
		if secret == "" {
			return nil, errors.New("client: client_secret_basic needs ClientSecret")
		}
		return func(req *http.Request, _ url.Values, _ string) error {
			// RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic.
			req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
			return nil
		}, nil
	case protocol.AuthClientSecretPost:
		if secret == "" {
			return nil, errors.New("client: client_secret_post needs ClientSecret")
		}
		return func(_ *http.Request, form url.Values, _ string) error {
			form.Set("client_id", id)
			form.Set("client_secret", secret)
			return nil
		}, nil
	case protocol.AuthPrivateKeyJWT:
		signer, err := assertionSigner(cfg.Key)
		if err != nil {
			return nil, err
		}
		return func(_ *http.Request, form url.Values, audience string) error {
			// RFC 7523 §3: iss and sub are the client_id, aud the
			// authorization server, exp soon, jti single use.
			now := time.Now()
			a, err := jwt.Signed(signer).Claims(jwt.Claims{
				Issuer: id, Subject: id, Audience: jwt.Audience{audience}, ID: randomToken(),
				IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(assertionLifetime)),
			}).Serialize()
			if err != nil {
				return fmt.Errorf("client: sign client assertion: %w", err)
			}
			form.Set("client_id", id)
			form.Set("client_assertion_type", protocol.ClientAssertionType)
			form.Set("client_assertion", a)
			return nil
		}, nil
	}
	return nil, fmt.Errorf("client: unknown AuthMethod %q", cfg.AuthMethod)
}

func assertionSigner(key *jose.JSONWebKey) (jose.Signer, error) {
	if key == nil || key.Key == nil {
		return nil, errors.New("client: private_key_jwt needs Key")
	}
	if key.IsPublic() {
		return nil, errors.New("client: Key must be a private key")
	}
	alg := jose.SignatureAlgorithm(key.Algorithm)
	if alg == "" {
		switch k := key.Key.(type) {
		case *ecdsa.PrivateKey:
			if k.Curve != elliptic.P256() {
				return nil, errors.New("client: set Key.Algorithm for an ECDSA key not on P-256")
			}
			alg = jose.ES256
		case *rsa.PrivateKey:
			alg = jose.RS256
		case ed25519.PrivateKey:
			alg = jose.EdDSA
		default:
			return nil, errors.New("client: set Key.Algorithm")
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: *key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("client: private_key_jwt: %w", err)
	}
	return s, nil
}
