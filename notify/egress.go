package notify

import (
	"net/netip"

	"github.com/countersign/countersign/internal/egress"
)

// Policy says which callback targets may be reached; see egress.Policy,
// which the JWKS fetches of approvals share.
type Policy = egress.Policy

// Resolver looks up the addresses of a host name; see egress.Resolver.
type Resolver = egress.Resolver

// ErrForbiddenTarget is the error for a callback target that the policy does
// not allow: a scheme other than https, or an address that is not public.
var ErrForbiddenTarget = egress.ErrForbiddenTarget

// ParseAllowlist parses CIDRs such as 10.20.0.0/16 or fd00::/8; its error is
// an *egress.AllowlistError.
func ParseAllowlist(cidrs []string) ([]netip.Prefix, error) { return egress.ParseAllowlist(cidrs) }
