package route_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/route"
)

// token signs claims with a throwaway ES256 key: routing never checks it.
func token(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, c).SignedString(k)
	require.NoError(t, err)
	return s
}

// rawToken builds a compact JWS with any header (an algorithm golang-jwt
// does not know, say) and a signature of random bytes: routing reads
// neither.
func rawToken(t testing.TB, header, claims map[string]any) string {
	t.Helper()
	seg := func(v map[string]any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	sig := make([]byte, 64)
	_, _ = rand.Read(sig)
	return seg(header) + "." + seg(claims) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestAccount(t *testing.T) {
	const did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	session := token(t, jwt.MapClaims{"scope": "com.atproto.access", "aud": "did:web:pds.example.com", "sub": did, "exp": 1})
	oauth := token(t, jwt.MapClaims{"scope": "atproto", "sub": did, "client_id": "https://app.example/client.json", "cnf": "x"})
	service := token(t, jwt.MapClaims{"iss": did, "aud": "did:web:pds.example.com", "lxm": "com.atproto.repo.uploadBlob"})
	hs := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("any"))
		require.NoError(t, err)
		return s
	}
	for _, tc := range []struct {
		name, authz, did string
		o                route.Outcome
	}{
		{"session token, expired", "Bearer " + session, did, route.Routed},
		{"oauth DPoP token", "DPoP " + oauth, did, route.Routed},
		{"scheme case and spaces", "  bearer   " + session + " ", did, route.Routed},
		{"HS256 with any key", "Bearer " + hs(jwt.MapClaims{"sub": "did:web:alice.example.com"}), "did:web:alice.example.com", route.Routed},
		{"service auth: iss", "Bearer " + service, did, route.Routed},
		// atproto user keys are usually secp256k1: service-auth tokens
		// signed by them say ES256K; Ed25519 keys say EdDSA.
		{"service auth, ES256K", "Bearer " + rawToken(t, map[string]any{"alg": "ES256K", "typ": "JWT"},
			map[string]any{"iss": did, "aud": "did:web:pds.example.com", "lxm": "com.atproto.repo.uploadBlob", "exp": 1}), did, route.Routed},
		{"session token, EdDSA", "Bearer " + rawToken(t, map[string]any{"alg": "EdDSA"}, map[string]any{"sub": did}), did, route.Routed},
		{"unknown alg, DPoP", "DPoP " + rawToken(t, map[string]any{"alg": "XYZ-1"}, map[string]any{"sub": did}), did, route.Routed},
		{"padded segments", "Bearer " + padded(rawToken(t, map[string]any{"alg": "ES256K"}, map[string]any{"sub": did})), did, route.Routed},
		{"four segments", "Bearer " + session + ".x", "", route.Malformed},
		{"header not JSON", "Bearer bm90IGpzb24." + strings.SplitN(session, ".", 2)[1], "", route.Malformed},
		{"payload not base64url", "Bearer eyJhbGciOiJFUzI1NksifQ.@@@.x", "", route.Malformed},
		{"payload null", "Bearer eyJhbGciOiJFUzI1NksifQ.bnVsbA.x", "", route.Malformed},
		{"payload an array", "Bearer eyJhbGciOiJFUzI1NksifQ.W10.x", "", route.Malformed},
		{"iss without lxm is not the account", "Bearer " + hs(jwt.MapClaims{"iss": did}), "", route.Malformed},
		{"no header", "", "", route.NoToken},
		{"basic", "Basic YWRtaW46c2VjcmV0", "", route.OtherScheme},
		{"scheme only", "Bearer", "", route.Malformed},
		{"opaque", "Bearer abc.def", "", route.Malformed},
		{"empty token", "Bearer  ", "", route.Malformed},
		{"sub not a DID", "Bearer " + hs(jwt.MapClaims{"sub": "alice"}), "", route.Malformed},
		{"sub with a newline", "Bearer " + hs(jwt.MapClaims{"sub": "did:plc:abc\r\nX-Evil: 1"}), "", route.Malformed},
		{"sub not a string", "Bearer " + hs(jwt.MapClaims{"sub": 7}), "", route.Malformed},
		{"huge", "Bearer " + strings.Repeat("a", 9000), "", route.Malformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, o := route.Account(tc.authz)
			require.Equal(t, tc.did, got)
			require.Equal(t, tc.o, o)
		})
	}
}

// padded adds base64 padding to each segment of tok.
func padded(tok string) string {
	parts := strings.Split(tok, ".")
	for i, p := range parts {
		parts[i] = p + strings.Repeat("=", (4-len(p)%4)%4)
	}
	return strings.Join(parts, ".")
}

// The handler always answers 200, sets the header only for a DID, and
// counts each outcome.
func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := route.NewMetrics(reg)
	h := route.New(m)
	const did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	ask := func(authz string) *http.Response {
		r := httptest.NewRequest(http.MethodGet, route.Path, nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
	resp := ask("DPoP " + token(t, jwt.MapClaims{"sub": did}))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, did, resp.Header.Get(route.Header))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	for _, a := range []string{"", "Basic eA==", "Bearer nope"} {
		resp := ask(a)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		_, set := resp.Header[route.Header]
		require.False(t, set, "%q", a)
	}
	require.NoError(t, promtest.GatherAndCompare(reg, strings.NewReader(`
# HELP pdsmux_route_decisions_total Caddy forward_auth routing sub-requests by outcome (routed, no_token, other_scheme, malformed). Only routed requests are pinned to one replica per account; a rising malformed rate means clients send tokens pdsmux cannot read.
# TYPE pdsmux_route_decisions_total counter
pdsmux_route_decisions_total{outcome="malformed"} 1
pdsmux_route_decisions_total{outcome="no_token"} 1
pdsmux_route_decisions_total{outcome="other_scheme"} 1
pdsmux_route_decisions_total{outcome="routed"} 1
`)))
	route.New(nil).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, route.Path, nil)) // nil metrics record nothing
}

func BenchmarkAccount(b *testing.B) {
	a := "Bearer " + token(b, jwt.MapClaims{"scope": "com.atproto.access", "sub": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "exp": 1, "iat": 1, "jti": "x"})
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := route.Account(a); d == "" {
			b.Fatal("no did")
		}
	}
}
