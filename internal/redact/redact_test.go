package redact_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/redact"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://:s3cret@127.0.0.1:6379/0", "redis://:xxxxx@127.0.0.1:6379/0"},
		{"redis://alice:s3cret@127.0.0.1:6379/0", "redis://alice:xxxxx@127.0.0.1:6379/0"},
		{"redis://s3cret@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		// passwords net/url cannot parse
		{"redis://:pa/ss@127.0.0.1:1/0", "redis://:xxxxx@127.0.0.1:1/0"},
		{"redis://:12/34@127.0.0.1:1/0", "redis://:xxxxx@127.0.0.1:1/0"},
		{"redis://:pa%zzss@127.0.0.1:1/0", "redis://:xxxxx@127.0.0.1:1/0"},
		{"redis://:pa#ss@127.0.0.1:1/0", "redis://:xxxxx@127.0.0.1:1/0"},
		{"redis://:pa?ss@127.0.0.1:1/0", "redis://:xxxxx@127.0.0.1:1/0"},
		{"redis://u:p@h/a/b@c:1", "redis://u:xxxxx@c:1"},
		// scheme typos
		{"rediss//:pw9q@127.0.0.1:1/0", "rediss//:xxxxx@127.0.0.1:1/0"},
		{"redis:/:pw9q@127.0.0.1:1/0", "redis:xxxxx@127.0.0.1:1/0"},
		{"redis:pw9q@127.0.0.1:1/0", "redis:xxxxx@127.0.0.1:1/0"},
		{"pw9q@127.0.0.1", "xxxxx@127.0.0.1"},
		// "@host" forgotten: no "@", a host part that is not host:port
		{"redis://:s3cret", "redis://:xxxxx"},
		{"redis://:s3cret/0", "redis://:xxxxx"},
		{"redis://:pa/ss", "redis://:xxxxx"},
		{"redis://alice:s3cret", "redis://alice:xxxxx"},
		{"redis://alice:pw9q/0?x=1", "redis://alice:xxxxx"},
		{"rediss//alice:s3cret", "rediss//alice:xxxxx"},
		// still a host and a port: parses, nothing to mask
		{"redis://127.0.0.1:6379", "redis://127.0.0.1:6379"},
		{"redis://:6379/0", "redis://:6379/0"},
		// query secrets
		{"libsql://db.example.com?authToken=s3cret", "libsql://db.example.com?authToken=xxxxx"},
		{"redis://h:1?master_name=m&password=s3cret&addr=h2:2", "redis://h:1?master_name=m&password=xxxxx&addr=h2:2"},
		{"libsql://db.example.com/%zz?authToken=s3cret&x=1", "libsql://db.example.com/%zz?authToken=xxxxx&x=1"},
		{"file:pdsmux.db", "file:pdsmux.db"},
		{"file:/var/lib/pdsmux/pdsmux.db?_pragma=x", "file:/var/lib/pdsmux/pdsmux.db?_pragma=x"},
		{"", ""},
	} {
		got := redact.URL(c.in)
		require.Equal(t, c.want, got, "redact.URL(%q)", c.in)
		for _, s := range []string{"s3cret", "pw9q", "pa/ss", "12/34", "pa%zz", "zzss", "pa#ss", "pa?ss"} {
			if strings.Contains(c.in, s) {
				require.NotContains(t, got, s, c.in)
			}
		}
	}
}

// Secrets finds what URL masks, for Strip, also without an "@".
func TestSecrets(t *testing.T) {
	for in, want := range map[string][]string{
		"redis://:s3cret@h:1/0":    {"s3cret"},
		"redis://:s3cret":          {"s3cret"},
		"redis://alice:pa/ss":      {"pa/ss"},
		"redis://127.0.0.1:6379/0": nil,
		"redis://:6379/0":          nil,
	} {
		require.Equal(t, want, redact.Secrets(in), in)
	}
}

func TestArgs(t *testing.T) {
	secret := map[string]func(string) string{"redis-url": redact.URL, "db-auth-token": redact.All}
	in := []string{"pdsmux", "serve", "--redis-url", "redis://:s3cret@h:1", "-db-auth-token=tok3n", "--replica", "http://r:1",
		"-redis-url=redis://:pa/ss@h:1", "--db-auth-token", "tok3n", "--log-level", "debug", "--db-auth-token"}
	got := redact.Args(in, secret)
	require.Equal(t, []string{"pdsmux", "serve", "--redis-url", "redis://:xxxxx@h:1", "-db-auth-token=xxxxx", "--replica", "http://r:1",
		"-redis-url=redis://:xxxxx@h:1", "--db-auth-token", "xxxxx", "--log-level", "debug", "--db-auth-token"}, got)
	require.Equal(t, "redis://:s3cret@h:1", in[3], "the input is not modified")
}

// A query value net/url cannot decode is masked as written, not dropped
// and shown.
func TestURL_UndecodableQueryValue(t *testing.T) {
	got := redact.URL("http://127.0.0.1:1?authToken=t0k%zzen&x=1")
	require.Equal(t, "http://127.0.0.1:1?authToken=xxxxx&x=1", got)
}
