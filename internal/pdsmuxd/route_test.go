package pdsmuxd_test

import (
	"net/http"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/route"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// The main listener answers Caddy's forward_auth sub-request (the
// Caddyfile's uri /_pdsmux/route) with the token's account, and counts it.
func TestServe_RouteSubRequest(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	run := e.start(e.config(), "pdsmux")
	const did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": did}).SignedString([]byte("any key"))
	require.NoError(t, err)
	for _, authz := range []string{"Bearer " + tok, ""} {
		req, err := http.NewRequest(http.MethodGet, "http://"+run.rt.Addr()+"/_pdsmux/route", nil)
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-Method", "POST")
		req.Header.Set("X-Forwarded-Uri", "/xrpc/com.atproto.repo.createRecord")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		if authz != "" {
			require.Equal(t, did, resp.Header.Get(route.Header))
		} else {
			require.Empty(t, resp.Header.Values(route.Header))
		}
	}
	m := testutil.Scrape(t, run.rt.MetricsAddr())
	require.Equal(t, 1.0, m[`pdsmux_route_decisions_total{outcome=routed}`])
	require.Equal(t, 1.0, m[`pdsmux_route_decisions_total{outcome=no_token}`])
}
