package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces a secret.
const Mask = "xxxxx"

// secretKey matches query parameter names that carry credentials:
// libsql's authToken, go-redis's password (Sentinel URLs), api keys.
var secretKey = regexp.MustCompile(`(?i)pass|token|key|secret|auth|cred`)

// rawQueryParam matches one name=value pair of a query string that may not
// parse; group 1 is "name=".
var rawQueryParam = regexp.MustCompile(`([?&;][^=&;#]*=)([^&;#]*)`)

// URL returns raw with its credentials replaced by Mask: the password of
// the userinfo (scheme://user:password@host keeps user; a userinfo
// without ":" is masked whole, as it is often a password) and the value of every query parameter whose
// name contains pass, token, key, secret, auth or cred.
//
// When raw does not parse as a URL with a host, everything between the
// "//" (or the start) and the last "@" is masked instead (the user name
// before a ":" is kept), and query values are masked by name as above, so
// no part of a password survives whatever its characters.
func URL(raw string) string {
	u, ok := parse(raw)
	if !ok {
		return unparsed(raw)
	}
	masked := u.User != nil
	if u.RawQuery != "" {
		// masked as written: url.ParseQuery drops a pair it cannot decode
		// ("authToken=t0k%zzen"), which would leave its value unmasked
		q := maskQuery("?" + u.RawQuery)[1:]
		masked = masked || q != u.RawQuery
		u.RawQuery = q
	}
	if !masked {
		return raw // nothing secret: shown as written
	}
	if u.User != nil {
		if _, hasPass := u.User.Password(); !hasPass {
			// a lone userinfo is often a password written without the ":"
			u.User = url.User(Mask)
		}
	}
	return u.Redacted()
}

// parse parses raw as a URL; ok is false when net/url cannot take it
// apart as written: an error, an "@" outside the userinfo (":12/34@host"
// parses as port 12 and path "/34@host": the password did not parse as
// one), or a "//" that did not start a host (a scheme typo such as
// "rediss//user:pw@host").
func parse(raw string) (u *url.URL, ok bool) {
	u, err := url.Parse(raw)
	if err != nil || Misparsed(u) || (u.Host == "" && strings.Contains(u.Opaque+u.Path, "//")) {
		return nil, false
	}
	return u, true
}

// unparsed masks a string net/url cannot take apart: the userinfo ends at
// the last "@"; its user part (before the first ":") is kept. Without an
// "@", a host part that is not host[:port] ("//:secret", "//user:secret",
// the "@host" forgotten) is taken for user:password and everything after
// the ":" is masked.
func unparsed(raw string) string {
	prefix, rest := "", raw
	if i := strings.Index(raw, "//"); i >= 0 {
		prefix, rest = raw[:i+2], raw[i+2:]
	}
	if user, _, ok := lonePassword(rest); ok {
		return prefix + user + ":" + Mask
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, _, hasPass := strings.Cut(rest[:at], ":")
		if hasPass {
			rest = user + ":" + Mask + rest[at:]
		} else {
			rest = Mask + rest[at:]
		}
	}
	return prefix + maskQuery(rest)
}

// maskQuery replaces the value of every name=value pair in s whose name
// looks secret (secretKey), as written, whether or not it decodes.
func maskQuery(s string) string {
	return rawQueryParam.ReplaceAllStringFunc(s, func(p string) string {
		m := rawQueryParam.FindStringSubmatch(p)
		if secretKey.MatchString(m[1]) {
			return m[1] + Mask
		}
		return p
	})
}

// lonePassword reports whether rest (what follows "//" in a URL net/url
// cannot parse) has no "@" yet a host part that looks like user:password:
// a ":" followed by anything but a port number. pass is everything after
// that ":" (a password may hold "/", so where it ends cannot be told).
func lonePassword(rest string) (user, pass string, ok bool) {
	if strings.Contains(rest, "@") || strings.HasPrefix(rest, "[") {
		return "", "", false
	}
	host := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		host = rest[:i]
	}
	user, port, hasColon := strings.Cut(host, ":")
	if !hasColon || (user != "" && port != "" && strings.Trim(port, "0123456789") == "") {
		return "", "", false
	}
	_, pass, _ = strings.Cut(rest, ":")
	return user, pass, pass != ""
}

// Args returns a copy of a command line (os.Args) in which the value of
// every flag named in secret is replaced by secret[name](value). Flags may
// be written -name=value, --name=value, -name value or --name value, as
// Go's flag parsing (and urfave/cli) accept them.
func Args(args []string, secret map[string]func(string) string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if !strings.HasPrefix(a, "-") || a == "--" {
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := secret[name]
		if f == nil {
			continue
		}
		if hasValue {
			out[i] = a[:len(a)-len(value)] + f(value)
		} else if i+1 < len(out) {
			out[i+1] = f(out[i+1])
			i++
		}
	}
	return out
}

// All masks the whole value: for tokens and passwords given on their own.
func All(v string) string {
	if v == "" {
		return ""
	}
	return Mask
}

// Strip replaces every occurrence of each non-empty secret in text with
// Mask: for messages of libraries that may echo part of a credential.
func Strip(text string, secrets ...string) string {
	for _, s := range secrets {
		if s != "" {
			text = strings.ReplaceAll(text, s, Mask)
		}
	}
	return text
}

// Misparsed reports whether u, parsed from a URL, holds an "@" outside its
// userinfo: a password with an unescaped "/", "?" or "#" that net/url took
// for a port and path ("redis://:12/34@host" is host ":12", path
// "/34@host"), so that parts of it would show in messages about the path.
func Misparsed(u *url.URL) bool {
	return strings.Contains(u.Opaque+u.Path+u.RawQuery+u.Fragment, "@")
}

// Secrets returns the credentials URL would mask in raw (the userinfo
// password, or a lone userinfo, and secret query values), raw and
// decoded, for Strip.
func Secrets(raw string) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s)
		if d, err := url.PathUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
	}
	rest := raw
	if i := strings.Index(raw, "//"); i >= 0 {
		rest = raw[i+2:]
	}
	if _, parsed := parse(raw); !parsed {
		if _, pass, ok := lonePassword(rest); ok {
			add(pass)
			return out
		}
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, pass, hasPass := strings.Cut(rest[:at], ":")
		if hasPass {
			add(pass)
		} else {
			add(user)
		}
		rest = rest[at:]
	}
	for _, m := range rawQueryParam.FindAllStringSubmatch(rest, -1) {
		if secretKey.MatchString(m[1]) {
			add(m[2])
		}
	}
	return out
}
