package crawl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// CheckHostname checks a hostname the way relays check the hostname of a
// com.atproto.sync.requestCrawl, and returns it lower-cased (as relays
// record it). The error says which rule failed and why a relay refuses it.
//
// The indigo relay (cmd/relay/handlers.go handleComAtprotoSyncRequestCrawl,
// cmd/relay/relay/host.go ParseHostname) answers 400 for: a port on any name
// but localhost; localhost itself (its port form is admin-only); anything
// that is not a DNS name by atproto handle syntax (syntax.ParseHandle: at
// least two labels of letters, digits and inner hyphens, each 1-63
// characters, a last label starting with a letter, at most 253 characters,
// no trailing dot), which rules out IPv4 and IPv6 addresses and single
// labels. It then fetches describeServer over HTTPS through a public-only
// dialer, so a name under a TLD that can never be public (atproto's
// disallowed TLDs: .local, .localhost, .internal, .arpa, .invalid,
// .example, .onion, .alt) never passes either.
//
// CheckHostname is stricter in two ways: it wants the bare hostname, with
// no scheme, path, query or fragment (the lexicon field is a hostname; the
// indigo relay happens to strip them, other relays need not), and it turns
// the TLD reachability failure into a start-up error. The reserved .test
// TLD passes, as in atproto's own syntax rules: it is for testing.
func CheckHostname(raw string) (string, error) {
	h := raw
	if h == "" {
		return "", errors.New("must not be empty (relays refuse an empty hostname)")
	}
	if strings.Contains(h, "://") {
		return "", errors.New(`give the bare hostname without a scheme (relays take "pds.example.com", not "https://pds.example.com")`)
	}
	if strings.ContainsAny(h, "/?#") {
		return "", errors.New("must not carry a path, query or fragment (relays want the bare hostname, e.g. pds.example.com)")
	}
	host, _, err := net.SplitHostPort(h)
	if err != nil {
		host = h
	}
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return "", errors.New("must be a DNS name, not an IP address (relays refuse IP addresses in requestCrawl)")
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return "", errors.New("must be a public DNS name, not localhost (relays refuse localhost in a public requestCrawl)")
	}
	if strings.Contains(h, ":") {
		return "", errors.New("must not carry a port (relays refuse requestCrawl for host:port; they always connect on 443)")
	}
	if len(h) > 253 {
		return "", fmt.Errorf("is %d characters long, at most 253 allowed (relays refuse longer names)", len(h))
	}
	if strings.HasSuffix(h, ".") {
		return "", errors.New("must not end with a dot (relays refuse the fully-qualified form; drop the trailing dot)")
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return "", errors.New("must have at least two labels, e.g. pds.example.com (relays refuse single-label names)")
	}
	for _, l := range labels {
		switch {
		case l == "":
			return "", errors.New("must not have an empty label, from a leading dot or two dots in a row (relays refuse it)")
		case len(l) > 63:
			return "", fmt.Errorf("label %q is longer than 63 characters (relays refuse it)", l)
		case strings.IndexFunc(l, func(r rune) bool { return !isLDH(r) }) >= 0:
			return "", fmt.Errorf("label %q may hold only ASCII letters, digits and hyphens (relays take DNS names only; write internationalized names as xn--)", l)
		case l[0] == '-' || l[len(l)-1] == '-':
			return "", fmt.Errorf("label %q must not start or end with a hyphen (relays refuse it)", l)
		}
	}
	tld := labels[len(labels)-1]
	if c := tld[0] | 0x20; c < 'a' || c > 'z' {
		return "", fmt.Errorf("the last label %q must start with a letter (relays refuse numeric top-level labels)", tld)
	}
	handle, err := syntax.ParseHandle(h)
	if err != nil { // the checks above should have caught it; say what the relay would
		return "", fmt.Errorf("not a public hostname (relays refuse it: %v)", err)
	}
	if !handle.AllowedTLD() {
		return "", fmt.Errorf(".%s is not a public top-level domain (relays only crawl hosts they reach on the public internet)", handle.TLD())
	}
	return handle.Normalize().String(), nil
}

func isLDH(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-'
}
