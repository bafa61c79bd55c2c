package route

import (
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/golang-jwt/jwt/v5"
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
	jwt.RegisteredClaims
	Lxm string `json:"lxm,omitempty"` // service auth: the method it is for
}

// Account returns the DID an Authorization header value speaks for, for
// routing only: the token's signature and expiry are NOT checked. It
// reads the sub claim of a Bearer or DPoP JWT, or iss for a service-auth
// token (lxm set, no sub), and returns it when it is a syntactically
// valid DID (indigo's syntax.ParseDID). Otherwise did is "" and the
// outcome says why.
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
	var c claims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		return "", Malformed
	}
	id := c.Subject
	if id == "" && c.Lxm != "" {
		id = c.Issuer
	}
	d, err := syntax.ParseDID(id)
	if err != nil {
		return "", Malformed
	}
	return d.String(), Routed
}
