package route

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

const (
	// Path is where pdsmux's main listener answers the sub-request; the
	// Caddyfile's forward_auth uri names it.
	Path = "/_pdsmux/route"
	// Header carries the account's DID in the answer; the Caddyfile
	// copies it (copy_headers) and hashes it (lb_policy header).
	Header = "Pdsmux-Did"
	// maxToken bounds the token decoded (Cocoon's tokens are under 1 KiB).
	maxToken = 8 << 10
)

// Handler answers forward_auth sub-requests. Any method is accepted
// (Caddy sends GET); the answer is always 200 with an empty body.
type Handler struct {
	m *Metrics
}

// New returns the handler; m may be nil.
func New(m *Metrics) *Handler { return &Handler{m: m} }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	did, o := Account(r.Header.Get("Authorization"))
	h.m.observe(o)
	w.Header().Set("Cache-Control", "no-store")
	if did != "" {
		w.Header().Set(Header, did)
	}
	w.WriteHeader(http.StatusOK)
}

// claims are the parts of an atproto access token routing reads.
type claims struct {
	Sub string `json:"sub"`
	Iss string `json:"iss"`
	Lxm string `json:"lxm"` // service auth: the method it is for
}

// Account returns the DID an Authorization header value speaks for, for
// routing only: the token's signature and expiry are NOT checked. It
// reads the sub claim of a Bearer or DPoP JWT, or iss for a service-auth
// token (lxm set, no sub), and returns it when it is a syntactically
// valid DID (indigo's syntax.ParseDID). Otherwise did is "" and the
// outcome says why.
//
// The token must be a JWS in compact form (RFC 7515 section 7.1: three
// base64url segments; RFC 7519 section 7.2): the header a JSON object,
// the payload a JSON object whose sub/iss, when present, are strings. The
// algorithm is not read: atproto user keys are usually secp256k1
// (ES256K), service-auth tokens are signed with them, and a JWT library
// that rejects algorithms it does not know would leave those unrouted.
func Account(authorization string) (did string, o Outcome) {
	if authorization == "" {
		return "", NoToken
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	if !strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "DPoP") {
		return "", OtherScheme
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || len(tok) > maxToken {
		return "", Malformed
	}
	c, ok := payload(tok)
	if !ok {
		return "", Malformed
	}
	id := c.Sub
	if id == "" && c.Lxm != "" {
		id = c.Iss
	}
	d, err := syntax.ParseDID(id)
	if err != nil {
		return "", Malformed
	}
	return d.String(), Routed
}

// payload decodes the claims of a compact JWS without looking at its
// algorithm or signature. ok is false unless tok has three segments, the
// first two base64url (padding tolerated) JSON objects.
func payload(tok string) (c claims, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, false
	}
	var header map[string]json.RawMessage
	if !decode(parts[0], &header) || header == nil {
		return c, false
	}
	// a payload that is not an object fails here, or ("null") leaves c
	// empty, which names no DID
	return c, decode(parts[1], &c)
}

// decode reads one base64url segment holding JSON into v.
func decode(seg string, v any) bool {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
}
