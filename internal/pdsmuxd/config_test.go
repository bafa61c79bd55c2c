package pdsmuxd_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
)

// Every bad setting stops start-up with an error naming the flag.
func TestConfig_BadSettingsNameTheFlag(t *testing.T) {
	t.Parallel()
	good := func() pdsmuxd.Config {
		c := pdsmuxd.DefaultConfig()
		c.Replicas, c.DBURL = []string{"r1=http://127.0.0.1:1"}, "file:"+t.TempDir()+"/x.db"
		return c
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
		"ping-interval":        func(c *pdsmuxd.Config) { c.PingInterval = 10 * time.Millisecond },
		"plc-url":              func(c *pdsmuxd.Config) { c.PLCURL = "plc.directory" },
		"db-url":               func(c *pdsmuxd.Config) { c.DBURL = "postgres://db/x" },
		"archive-retention":    func(c *pdsmuxd.Config) { c.ArchiveRetention = time.Minute },
		"relay":                func(c *pdsmuxd.Config) { c.Relays, c.Hostname = []string{"bsky.network"}, "pds.example.com" },
		"hostname":             func(c *pdsmuxd.Config) { c.Relays = []string{"https://bsky.network"} },
		"hostname ": func(c *pdsmuxd.Config) {
			c.Relays, c.Hostname = []string{"https://bsky.network"}, "https://pds.example.com"
		},
		"crawl-idle":             func(c *pdsmuxd.Config) { c.CrawlIdle = -time.Minute },
		"memory-budget":          func(c *pdsmuxd.Config) { c.MemoryBudget = "lots" },
		"memory-budget ":         func(c *pdsmuxd.Config) { c.MemoryBudget = "16MiB" },
		"log-max-bytes":          func(c *pdsmuxd.Config) { c.LogMaxBytes = "12" },
		"replica-queue-bytes":    func(c *pdsmuxd.Config) { c.ReplicaQueueBytes = "-5MiB" },
		"subscriber-queue-bytes": func(c *pdsmuxd.Config) { c.SubscriberQueueBytes = "2 apples" },
		"log-level":              func(c *pdsmuxd.Config) { c.LogLevel = "loud" },
		"log-format":             func(c *pdsmuxd.Config) { c.LogFormat = "xml" },
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

// Zero never silently becomes the default: every number and duration
// setting refuses 0 (and a negative value) with an error naming the flag,
// which the command line turns into exit status 2.
func TestConfig_ZeroIsRefused(t *testing.T) {
	zero := map[string]func(*pdsmuxd.Config, int){
		"hold-timeout":         func(c *pdsmuxd.Config, n int) { c.HoldTimeout = time.Duration(n) },
		"dedup-ttl":            func(c *pdsmuxd.Config, n int) { c.DedupTTL = time.Duration(n) },
		"retention":            func(c *pdsmuxd.Config, n int) { c.Retention = time.Duration(n) },
		"max-entries":          func(c *pdsmuxd.Config, n int) { c.MaxEntries = int64(n) },
		"max-frame-bytes":      func(c *pdsmuxd.Config, n int) { c.MaxFrameBytes = n },
		"replica-read-timeout": func(c *pdsmuxd.Config, n int) { c.ReplicaReadTimeout = time.Duration(n) },
		"health-interval":      func(c *pdsmuxd.Config, n int) { c.HealthInterval = time.Duration(n) },
		"subscriber-queue":     func(c *pdsmuxd.Config, n int) { c.SubscriberQueue = n },
		"max-subscribers":      func(c *pdsmuxd.Config, n int) { c.MaxSubscribers = n },
		"ping-interval":        func(c *pdsmuxd.Config, n int) { c.PingInterval = time.Duration(n) },
		"scan-interval":        func(c *pdsmuxd.Config, n int) { c.ScanInterval = time.Duration(n) },
		"repair-grace":         func(c *pdsmuxd.Config, n int) { c.RepairGrace = time.Duration(n) },
		"archive-retention":    func(c *pdsmuxd.Config, n int) { c.ArchiveRetention = time.Duration(n) },
		"crawl-interval":       func(c *pdsmuxd.Config, n int) { c.CrawlInterval = time.Duration(n) },
		"crawl-idle":           func(c *pdsmuxd.Config, n int) { c.CrawlIdle = time.Duration(n) },
		"shutdown-timeout":     func(c *pdsmuxd.Config, n int) { c.ShutdownTimeout = time.Duration(n) },
		"redis-wait-timeout":   func(c *pdsmuxd.Config, n int) { c.RedisWaitTimeout = time.Duration(n) },
	}
	// every number or duration field of Config is in the table
	fields := 0
	for f := range reflect.TypeFor[pdsmuxd.Config]().Fields() {
		if f.Name == "RedisWaitReplicas" {
			continue // the one setting whose 0 means off (no WAIT); its range is tested apart
		}
		if k := f.Type.Kind(); k == reflect.Int || k == reflect.Int64 {
			fields++
		}
	}
	require.Len(t, zero, fields, "a number setting is missing from this table")
	for name, set := range zero {
		for _, n := range []int{0, -1} {
			t.Run(fmt.Sprintf("%s=%d", name, n), func(t *testing.T) {
				cfg := pdsmuxd.DefaultConfig()
				cfg.Replicas, cfg.DBURL = []string{"r1=http://127.0.0.1:1"}, "file:"+t.TempDir()+"/x.db"
				set(&cfg, n)
				_, err := pdsmuxd.Build(context.Background(), cfg, pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t)})
				var ce *pdsmuxd.ConfigError
				require.True(t, errors.As(err, &ce), "a ConfigError: %v", err)
				require.Equal(t, name, ce.Setting)
				require.NotContains(t, err.Error(), "\n")
				if n == 0 {
					require.Contains(t, err.Error(), "must be above 0 (leave it out for the default")
				}
			})
		}
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
	t.Parallel()
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
			cfg := pdsmuxd.DefaultConfig()
			cfg.Replicas, cfg.DBURL, cfg.Hostname = []string{"r1=http://127.0.0.1:1"}, "file:"+t.TempDir()+"/x.db", c.hostname
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

// --memory-budget sets the Go heap limit to half; sizes take binary and
// decimal units.
func TestConfig_MemoryBudgetSetsTheGoLimit(t *testing.T) {
	for budget, limit := range map[string]int64{"": 256 << 20, "1GiB": 512 << 20, "2GB": 1_000_000_000} {
		cfg := pdsmuxd.DefaultConfig()
		cfg.Replicas, cfg.DBURL = []string{"r1=http://127.0.0.1:1"}, "file:"+t.TempDir()+"/x.db"
		cfg.MemoryBudget, cfg.ReplicaQueueBytes = budget, "3MiB"
		rt, err := pdsmuxd.Build(context.Background(), cfg, pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t)})
		require.NoError(t, err)
		require.Equal(t, limit, rt.MemoryLimit(), "budget %q", budget)
		require.NoError(t, rt.Close(context.Background()))
	}
	cfg := pdsmuxd.DefaultConfig()
	cfg.Replicas, cfg.MemoryBudget = []string{"r1=http://127.0.0.1:1"}, "16MiB"
	_, err := pdsmuxd.Build(context.Background(), cfg,
		pdsmuxd.Options{Listener: testutil.Listen(t), MetricsListener: testutil.Listen(t)})
	require.ErrorContains(t, err, `invalid --memory-budget "16MiB": must be at least 64 MiB`)
}

// A bad value given to health or status exits 2 with one line naming the
// flag, like serve's; nothing is asked.
func TestCLI_BadHealthAndStatusValuesExit2(t *testing.T) {
	bin := proc.Pdsmux(t)
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"health", "--url", "ftp://x"}, "--url"},
		{[]string{"health", "--url", "not a url"}, "--url"},
		{[]string{"health", "--url", "http://"}, "--url"},
		{[]string{"health", "--url", "127.0.0.1:2480"}, "--url"},
		{[]string{"health", "--url", "http://127.0.0.1:1?x=1"}, "--url"},
		{[]string{"health", "--timeout", "0"}, "--timeout"},
		{[]string{"status", "--metrics-url", "ftp://x"}, "--metrics-url"},
		{[]string{"status", "--metrics-url", "not a url"}, "--metrics-url"},
	} {
		out, err := exec.Command(bin, c.args...).CombinedOutput()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "%v: %v %s", c.args, err, out)
		require.Equal(t, 2, ee.ExitCode(), "%v: %s", c.args, out)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		require.Len(t, lines, 1, "%v: %s", c.args, out)
		require.Contains(t, lines[0], "invalid "+c.flag+" ", "%v", c.args)
	}
}
