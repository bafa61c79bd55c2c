package pdsmuxd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
)

// Every bad setting stops start-up with an error naming the flag.
func TestConfig_BadSettingsNameTheFlag(t *testing.T) {
	good := func() pdsmuxd.Config {
		return pdsmuxd.Config{Replicas: []string{"r1=http://127.0.0.1:1"}, DBURL: "file:" + t.TempDir() + "/x.db"}
	}
	cases := map[string]func(*pdsmuxd.Config){
		"replica":              func(c *pdsmuxd.Config) { c.Replicas = nil },
		"replica ":             func(c *pdsmuxd.Config) { c.Replicas = []string{"ftp://x"} },
		"replica  ":            func(c *pdsmuxd.Config) { c.Replicas = []string{"a=http://h:1", "a=http://h:2"} },
		"replica   ":           func(c *pdsmuxd.Config) { c.Replicas = []string{"http://h:1/path"} },
		"replica    ":          func(c *pdsmuxd.Config) { c.Replicas = []string{"bad name=http://h:1"} },
		"redis-url":            func(c *pdsmuxd.Config) { c.RedisURL = "http://redis:6379" },
		"redis-prefix":         func(c *pdsmuxd.Config) { c.RedisPrefix = "a{b}" },
		"listen":               func(c *pdsmuxd.Config) { c.Listen = "nope" },
		"metrics-listen":       func(c *pdsmuxd.Config) { c.Listen, c.MetricsListen = "127.0.0.1:9", "127.0.0.1:9" },
		"hold-timeout":         func(c *pdsmuxd.Config) { c.HoldTimeout = -time.Second },
		"hold-timeout ":        func(c *pdsmuxd.Config) { c.HoldTimeout = 2 * time.Hour },
		"redis-wait-replicas":  func(c *pdsmuxd.Config) { c.RedisWaitReplicas = -1 },
		"redis-wait-timeout":   func(c *pdsmuxd.Config) { c.RedisWaitReplicas, c.RedisWaitTimeout = 1, time.Minute },
		"redis-wait-timeout ":  func(c *pdsmuxd.Config) { c.RedisWaitTimeout = time.Millisecond },
		"retention":            func(c *pdsmuxd.Config) { c.Retention = time.Second },
		"replica-read-timeout": func(c *pdsmuxd.Config) { c.ReplicaReadTimeout = time.Millisecond },
		"max-entries":          func(c *pdsmuxd.Config) { c.MaxEntries = -1 },
		"max-frame-bytes":      func(c *pdsmuxd.Config) { c.MaxFrameBytes = 10 },
		"subscriber-queue":     func(c *pdsmuxd.Config) { c.SubscriberQueue = -1 },
		"scan-interval":        func(c *pdsmuxd.Config) { c.ScanInterval = time.Millisecond },
		"plc-url":              func(c *pdsmuxd.Config) { c.PLCURL = "plc.directory" },
		"db-url":               func(c *pdsmuxd.Config) { c.DBURL = "postgres://db/x" },
		"archive-retention":    func(c *pdsmuxd.Config) { c.ArchiveRetention = time.Minute },
		"relay":                func(c *pdsmuxd.Config) { c.Relays, c.Hostname = []string{"bsky.network"}, "pds.example.com" },
		"hostname":             func(c *pdsmuxd.Config) { c.Relays = []string{"https://bsky.network"} },
		"hostname ": func(c *pdsmuxd.Config) {
			c.Relays, c.Hostname = []string{"https://bsky.network"}, "https://pds.example.com"
		},
		"crawl-idle": func(c *pdsmuxd.Config) { c.CrawlIdle = -time.Minute },
		"log-level":  func(c *pdsmuxd.Config) { c.LogLevel = "loud" },
		"log-format": func(c *pdsmuxd.Config) { c.LogFormat = "xml" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := good()
			mutate(&cfg)
			_, err := pdsmuxd.Build(context.Background(), cfg, pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t)})
			require.Error(t, err)
			var ce *pdsmuxd.ConfigError
			require.True(t, errors.As(err, &ce), "a ConfigError: %v", err)
			require.Contains(t, err.Error(), "--"+ce.Setting)
			require.Equal(t, trimSpaces(name), ce.Setting)
		})
	}
}

func trimSpaces(s string) string {
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}

// --hostname is checked at start-up by the rules relays apply to
// requestCrawl: the error names the setting, the value and the rule.
func TestConfig_HostnameFollowsRelayRules(t *testing.T) {
	cases := []struct {
		hostname string
		relays   bool
		rule     string // "" means accepted
	}{
		{"pds.example.com", true, ""},
		{"PDS.Example.COM", true, ""},
		{"pds.example.test", true, ""},
		{"pds.example.com", false, ""},
		{"", false, ""}, // no relay, no hostname: no crawl requests
		{"", true, "required with --relay"},
		{"pds.example.test:8443", true, "must not carry a port (relays refuse requestCrawl for host:port"},
		{"203.0.113.7", true, "not an IP address"},
		{"[2001:db8::1]", true, "not an IP address"},
		{"2001:db8::1", true, "not an IP address"},
		{"pds", true, "at least two labels"},
		{"localhost", true, "not localhost"},
		{"localhost:2583", true, "not localhost"},
		{"https://pds.example.com", true, "without a scheme"},
		{"pds.example.com/xrpc", true, "must not carry a path"},
		{"pds.example.com.", true, "must not end with a dot"},
		{"pds.home.local", true, ".local is not a public top-level domain"},
		{"pds..example.com", true, "empty label"},
		{"pds_1.example.com", true, "only ASCII letters, digits and hyphens"},
		{"pds", false, "at least two labels"}, // checked even without --relay
	}
	for _, c := range cases {
		name := c.hostname
		if !c.relays {
			name += " without relay"
		}
		t.Run(name, func(t *testing.T) {
			cfg := pdsmuxd.Config{Replicas: []string{"r1=http://127.0.0.1:1"}, DBURL: "file:" + t.TempDir() + "/x.db", Hostname: c.hostname}
			if c.relays {
				cfg.Relays = []string{"https://bsky.network"}
			}
			rt, err := pdsmuxd.Build(context.Background(), cfg, pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t)})
			if c.rule == "" {
				require.NoError(t, err)
				require.NoError(t, rt.Close(context.Background()))
				return
			}
			require.Error(t, err)
			var ce *pdsmuxd.ConfigError
			require.True(t, errors.As(err, &ce), "a ConfigError: %v", err)
			require.Equal(t, "hostname", ce.Setting)
			require.Contains(t, err.Error(), `invalid --hostname "`+c.hostname+`": `)
			require.Contains(t, err.Error(), c.rule)
		})
	}
}
