package crawl_test

import (
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/crawl"
)

// hostnameCases: what relays refuse in requestCrawl, and the rule each
// error must name. An empty rule means the hostname is accepted as want.
var hostnameCases = []struct {
	in, want, rule string
}{
	{"pds.example.com", "pds.example.com", ""},
	{"PDS.Example.COM", "pds.example.com", ""},
	{"a.b.c.example.co.uk", "a.b.c.example.co.uk", ""},
	{"pds.example", "", ".example is not a public top-level domain"},
	{"xn--bcher-kva.example.com", "xn--bcher-kva.example.com", ""},
	{"my-pds.example.com", "my-pds.example.com", ""},
	{"pds.example.test", "pds.example.test", ""},
	{"pds.example.test:8443", "", "must not carry a port"},
	{"pds.example.com:443", "", "must not carry a port"},
	{"pds.example.com:", "", "must not carry a port"},
	{"127.0.0.1", "", "not an IP address"},
	{"203.0.113.7:443", "", "not an IP address"},
	{"::1", "", "not an IP address"},
	{"[2001:db8::1]", "", "not an IP address"},
	{"[2001:db8::1]:8443", "", "not an IP address"},
	{"fe80::1%eth0", "", "not an IP address"},
	{"pds", "", "at least two labels"},
	{"localhost", "", "not localhost"},
	{"LocalHost", "", "not localhost"},
	{"localhost:2583", "", "not localhost"},
	{"pds.localhost", "", ".localhost is not a public top-level domain"},
	{"pds.home.local", "", ".local is not a public top-level domain"},
	{"pds.corp.internal", "", ".internal is not a public top-level domain"},
	{"https://pds.example.com", "", "without a scheme"},
	{"wss://pds.example.com", "", "without a scheme"},
	{"pds.example.com/xrpc", "", "must not carry a path"},
	{"pds.example.com/", "", "must not carry a path"},
	{"pds.example.com?x=1", "", "must not carry a path, query"},
	{"pds.example.com.", "", "must not end with a dot"},
	{"pds.", "", "must not end with a dot"},
	{".pds.example.com", "", "empty label"},
	{"pds..example.com", "", "empty label"},
	{"pds .example.com", "", "only ASCII letters, digits and hyphens"},
	{"pds_1.example.com", "", "only ASCII letters, digits and hyphens"},
	{"bücher.example.com", "", "only ASCII letters, digits and hyphens"},
	{"user@pds.example.com", "", "only ASCII letters, digits and hyphens"},
	{"-pds.example.com", "", "must not start or end with a hyphen"},
	{"pds-.example.com", "", "must not start or end with a hyphen"},
	{"pds.example.123", "", "must start with a letter"},
	{"0x7f.1", "", "must start with a letter"},
	{strings.Repeat("a", 64) + ".example.com", "", "longer than 63 characters"},
	{strings.Repeat("abcdefgh.", 28) + "com", "", "at most 253 allowed"},
	{"", "", "must not be empty"},
}

func TestCheckHostname_RelayRules(t *testing.T) {
	for _, c := range hostnameCases {
		got, err := crawl.CheckHostname(c.in)
		if c.rule == "" {
			require.NoError(t, err, "%q", c.in)
			require.Equal(t, c.want, got, "%q", c.in)
			continue
		}
		require.Error(t, err, "%q is accepted but relays refuse it", c.in)
		require.Contains(t, err.Error(), c.rule, "%q", c.in)
		require.Contains(t, err.Error(), "relay", "%q: the error says why relays care", c.in)
		require.Empty(t, got)
	}
}

// Whatever CheckHostname accepts, atproto's handle syntax (which the
// indigo relay's ParseHostname applies) accepts too, with an allowed TLD,
// lower-cased and without a port. It never panics.
func FuzzCheckHostname(f *testing.F) {
	for _, c := range hostnameCases {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := crawl.CheckHostname(in)
		if err != nil {
			require.Empty(t, got)
			return
		}
		h, perr := syntax.ParseHandle(got)
		require.NoError(t, perr, "%q accepted as %q", in, got)
		require.True(t, h.AllowedTLD(), "%q", in)
		require.Equal(t, strings.ToLower(in), got)
		require.NotContains(t, got, ":")
	})
}
