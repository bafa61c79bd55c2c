package pdsmuxd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/crawl"
	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fanout"
	"github.com/pdsmux/pdsmux/internal/pool"
	"github.com/pdsmux/pdsmux/internal/repair"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/tail"
)

// Defaults owned here (the rest live in the packages they configure).
const (
	DefaultRedisURL        = "redis://127.0.0.1:6379/0"
	DefaultListen          = "127.0.0.1:2480"
	DefaultMetricsListen   = "127.0.0.1:2481"
	DefaultShutdownTimeout = 10 * time.Second
	DefaultTrimInterval    = 30 * time.Second
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "json"
	DefaultPLCURL          = "https://plc.directory"
	DefaultDBURL           = "file:pdsmux.db"
	// DefaultRedisWaitTimeout is one WAIT's bound; a timed-out wait is
	// retried, so this only sets how often a lagging replica is logged
	// and counted.
	DefaultRedisWaitTimeout = time.Second
	// maxRedisWaitTimeout keeps one WAIT well inside the client's read
	// timeout, which validate raises to the wait plus this margin.
	maxRedisWaitTimeout = 10 * time.Second
	redisWaitMargin     = 3 * time.Second
)

// Config is everything an operator sets. cmd/pdsmux fills it from flags and
// PDSMUX_* variables; Validate checks it once.
type Config struct {
	Replicas    []string // "name=url" or "url"; http(s):// or ws(s)://
	RedisURL    string
	RedisPrefix string
	// RedisWaitReplicas: entries reach subscribers and the archive only
	// once this many Redis replicas hold them (0: no wait, one Redis).
	RedisWaitReplicas int
	// RedisWaitTimeout bounds one WAIT; on timeout the read is retried
	// (never delivered unreplicated).
	RedisWaitTimeout time.Duration
	Listen           string
	MetricsListen    string

	HoldTimeout time.Duration
	DedupTTL    time.Duration
	Retention   time.Duration
	MaxEntries  int64

	MaxFrameBytes      int
	ReplicaReadTimeout time.Duration

	SubscriberQueue int
	MaxSubscribers  int
	HealthInterval  time.Duration

	ScanInterval time.Duration // repair: listRepos scan period
	RepairGrace  time.Duration // repair: how long a repo may lag before repair
	PLCURL       string        // did:plc directory for checking head commit signatures
	// NoSignatureCheck trusts the replicas' head commits without checking
	// their signatures against the DID documents.
	NoSignatureCheck bool
	// NewRepos: which repos unknown to the log are announced with their
	// records (repair.NewReposAuto, NewReposAll, NewReposNone).
	NewRepos string

	DBURL            string        // libsql database: file:..., libsql://..., https://...
	DBAuthToken      string        // token for a remote libsql server
	ArchiveRetention time.Duration // how long the archive keeps events

	Relays        []string // relays to send requestCrawl to
	Hostname      string   // the PDS's public hostname, sent in requestCrawl (crawl.CheckHostname)
	CrawlInterval time.Duration
	CrawlIdle     time.Duration

	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
	UserAgent       string
}

// ConfigError names the setting that is wrong.
type ConfigError struct {
	Setting string // flag name, e.g. "replica"
	Value   string
	Reason  string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid --%s %q: %s", e.Setting, e.Value, e.Reason)
}

// ErrConfig is wrapped by every ConfigError.
var ErrConfig = errors.New("invalid configuration")

func (e *ConfigError) Unwrap() error { return ErrConfig }

func bad(setting, value, reason string, args ...any) error {
	return &ConfigError{Setting: setting, Value: value, Reason: fmt.Sprintf(reason, args...)}
}

// replica is a validated replica endpoint.
type replica struct {
	Name string
	HTTP *url.URL // http(s)://host[:port]
	WS   string   // ws(s)://host[:port]
}

// settings is a validated Config.
type settings struct {
	Config
	replicas []replica
	relays   []*url.URL
	newRedis func() redis.UniversalClient
	redisLog string // URL with the password redacted
	logLevel slog.Level
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// validate checks every setting and fills defaults. It never dials.
func (c Config) validate() (*settings, error) {
	s := &settings{Config: c}
	if s.RedisURL == "" {
		s.RedisURL = DefaultRedisURL
	}
	if s.RedisPrefix == "" {
		s.RedisPrefix = cursor.DefaultPrefix
	}
	if s.Listen == "" {
		s.Listen = DefaultListen
	}
	if s.MetricsListen == "" {
		s.MetricsListen = DefaultMetricsListen
	}
	if s.ShutdownTimeout <= 0 {
		s.ShutdownTimeout = DefaultShutdownTimeout
	}
	if s.LogLevel == "" {
		s.LogLevel = DefaultLogLevel
	}
	if s.LogFormat == "" {
		s.LogFormat = DefaultLogFormat
	}
	if s.UserAgent == "" {
		s.UserAgent = "pdsmux/" + Version
	}

	if len(s.Replicas) == 0 {
		return nil, bad("replica", "", "at least one replica is required (e.g. --replica cocoon1=http://cocoon1:8080)")
	}
	seen := map[string]bool{}
	hosts := map[string]bool{}
	for _, spec := range s.Replicas {
		r, err := parseReplica(spec)
		if err != nil {
			return nil, err
		}
		if seen[r.Name] {
			return nil, bad("replica", spec, "replica name %q is used twice", r.Name)
		}
		if hosts[r.HTTP.Host] {
			return nil, bad("replica", spec, "replica address %s is listed twice", r.HTTP.Host)
		}
		seen[r.Name], hosts[r.HTTP.Host] = true, true
		s.replicas = append(s.replicas, r)
	}

	if s.RedisWaitReplicas < 0 || s.RedisWaitReplicas > 16 {
		return nil, bad("redis-wait-replicas", fmt.Sprint(s.RedisWaitReplicas), "want 0 (no wait, one Redis) to 16")
	}
	if s.RedisWaitTimeout == 0 {
		s.RedisWaitTimeout = DefaultRedisWaitTimeout
	}
	if s.RedisWaitTimeout < 10*time.Millisecond || s.RedisWaitTimeout > maxRedisWaitTimeout {
		return nil, bad("redis-wait-timeout", s.RedisWaitTimeout.String(), "want 10ms to %s", maxRedisWaitTimeout)
	}
	minRead := time.Duration(0)
	if s.RedisWaitReplicas > 0 {
		minRead = s.RedisWaitTimeout + redisWaitMargin
	}
	client, redacted, err := redisClient(s.RedisURL, minRead)
	if err != nil {
		return nil, err
	}
	s.newRedis, s.redisLog = client, redacted
	if strings.ContainsAny(s.RedisPrefix, "{}: \t") {
		return nil, bad("redis-prefix", s.RedisPrefix, "must not contain braces, colons or spaces")
	}
	for _, l := range []struct{ name, v string }{{"listen", s.Listen}, {"metrics-listen", s.MetricsListen}} {
		if _, _, err := net.SplitHostPort(l.v); err != nil {
			return nil, bad(l.name, l.v, "want host:port: %v", err)
		}
	}
	if s.Listen == s.MetricsListen {
		return nil, bad("metrics-listen", s.MetricsListen, "must differ from --listen")
	}
	// zero means "the default" everywhere; negative is always a mistake
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"hold-timeout", s.HoldTimeout},
		{"dedup-ttl", s.DedupTTL},
		{"retention", s.Retention},
		{"replica-read-timeout", s.ReplicaReadTimeout},
		{"health-interval", s.HealthInterval},
		{"shutdown-timeout", s.ShutdownTimeout},
		{"scan-interval", s.ScanInterval},
		{"repair-grace", s.RepairGrace},
		{"crawl-interval", s.CrawlInterval},
		{"crawl-idle", s.CrawlIdle},
		{"archive-retention", s.ArchiveRetention},
	}
	for _, d := range durations {
		if d.v < 0 {
			return nil, bad(d.name, d.v.String(), "must not be negative")
		}
	}
	if s.HoldTimeout > time.Hour {
		return nil, bad("hold-timeout", s.HoldTimeout.String(), "above an hour holds back every broken chain for too long")
	}
	if s.Retention > 0 && s.Retention < time.Minute {
		return nil, bad("retention", s.Retention.String(), "must be at least a minute")
	}
	if s.ReplicaReadTimeout > 0 && s.ReplicaReadTimeout < time.Second {
		return nil, bad("replica-read-timeout", s.ReplicaReadTimeout.String(), "must be at least 1s")
	}
	if s.MaxEntries < 0 {
		return nil, bad("max-entries", fmt.Sprint(s.MaxEntries), "must not be negative")
	}
	if s.MaxFrameBytes < 0 || (s.MaxFrameBytes > 0 && s.MaxFrameBytes < 1024) {
		return nil, bad("max-frame-bytes", fmt.Sprint(s.MaxFrameBytes), "must be at least 1024")
	}
	if s.SubscriberQueue < 0 {
		return nil, bad("subscriber-queue", fmt.Sprint(s.SubscriberQueue), "must not be negative")
	}
	if s.MaxSubscribers < 0 {
		return nil, bad("max-subscribers", fmt.Sprint(s.MaxSubscribers), "must not be negative")
	}
	if s.ScanInterval > 0 && s.ScanInterval < 100*time.Millisecond {
		return nil, bad("scan-interval", s.ScanInterval.String(), "must be at least 100ms")
	}
	switch s.NewRepos {
	case "":
		s.NewRepos = DefaultNewRepos
	case repair.NewReposAuto, repair.NewReposAll, repair.NewReposNone:
	default:
		return nil, bad("new-repos", s.NewRepos, "want auto, all or none")
	}
	if s.PLCURL == "" {
		s.PLCURL = DefaultPLCURL
	}
	if u, err := url.Parse(s.PLCURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, bad("plc-url", s.PLCURL, "want http(s)://host[:port]")
	}
	s.PLCURL = strings.TrimRight(s.PLCURL, "/")
	for _, raw := range s.Relays {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, bad("relay", raw, "want the relay's base URL, e.g. https://bsky.network")
		}
		s.relays = append(s.relays, &url.URL{Scheme: u.Scheme, Host: u.Host})
	}
	// Without --relay an empty --hostname means no crawl requests. A
	// hostname that is set is checked by the rules relays apply to
	// requestCrawl, so a bad one fails here rather than as HTTP 400 later.
	if len(s.relays) > 0 && s.Hostname == "" {
		return nil, bad("hostname", "", "required with --relay: the public hostname relays should crawl (e.g. pds.example.com)")
	}
	if s.Hostname != "" {
		h, err := crawl.CheckHostname(s.Hostname)
		if err != nil {
			return nil, bad("hostname", s.Hostname, "%s", err.Error())
		}
		s.Hostname = h
	}
	if s.DBURL == "" {
		s.DBURL = DefaultDBURL
	}
	if u, err := url.Parse(s.DBURL); err != nil || (u.Scheme != "file" && u.Scheme != "libsql" && u.Scheme != "https" && u.Scheme != "http") {
		return nil, bad("db-url", store.Redact(s.DBURL), "want file:/path/pdsmux.db, libsql://host or https://host")
	}
	if s.ArchiveRetention > 0 && s.ArchiveRetention < time.Hour {
		return nil, bad("archive-retention", s.ArchiveRetention.String(), "must be at least 1h")
	}
	if err := s.logLevel.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return nil, bad("log-level", s.LogLevel, "want debug, info, warn or error")
	}
	if s.LogFormat != "json" && s.LogFormat != "text" {
		return nil, bad("log-format", s.LogFormat, "want json or text")
	}
	return s, nil
}

func parseReplica(spec string) (replica, error) {
	name, raw, named := strings.Cut(spec, "=")
	if !named {
		raw, name = spec, ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return replica{}, bad("replica", spec, "want [name=]http(s)://host:port or ws(s)://host:port")
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return replica{}, bad("replica", spec, "give only scheme, host and port (no path, query or credentials)")
	}
	var httpScheme, wsScheme string
	switch u.Scheme {
	case "http", "ws":
		httpScheme, wsScheme = "http", "ws"
	case "https", "wss":
		httpScheme, wsScheme = "https", "wss"
	default:
		return replica{}, bad("replica", spec, "scheme must be http, https, ws or wss")
	}
	if name == "" {
		name = strings.NewReplacer(":", "_", "[", "", "]", "").Replace(u.Host)
	}
	if !nameRE.MatchString(name) {
		return replica{}, bad("replica", spec, "name %q must be letters, digits, dot, dash or underscore", name)
	}
	return replica{
		Name: name,
		HTTP: &url.URL{Scheme: httpScheme, Host: u.Host},
		WS:   wsScheme + "://" + u.Host,
	}, nil
}

// redisClient parses raw; the client's read timeout is raised to at least
// minRead (a WAIT is pipelined and must not look like a dead connection).
func redisClient(raw string, minRead time.Duration) (func() redis.UniversalClient, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", bad("redis-url", raw, "not a URL: %v", err)
	}
	redacted := u.Redacted()
	if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
		return nil, "", bad("redis-url", redacted, "scheme must be redis://, rediss:// or unix://")
	}
	if u.Query().Has("master_name") {
		opts, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return nil, "", bad("redis-url", redacted, "sentinel URL: %v", err)
		}
		if opts.ReadTimeout >= 0 && opts.ReadTimeout < minRead {
			opts.ReadTimeout = minRead
		}
		return func() redis.UniversalClient { return redis.NewFailoverClient(opts) }, redacted, nil
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, "", bad("redis-url", redacted, "%v", err)
	}
	if opts.ReadTimeout >= 0 && opts.ReadTimeout < minRead {
		opts.ReadTimeout = minRead
	}
	return func() redis.UniversalClient { return redis.NewClient(opts) }, redacted, nil
}

// Defaults used by cmd/pdsmux as flag values, gathered from the packages
// that own them.
var (
	DefaultHoldTimeout      = cursor.DefaultHoldTimeout
	DefaultDedupTTL         = cursor.DefaultDedupTTL
	DefaultRetention        = cursor.DefaultRetention
	DefaultMaxEntries       = int64(cursor.DefaultMaxEntries)
	DefaultPrefix           = cursor.DefaultPrefix
	DefaultMaxFrameBytes    = tail.DefaultMaxFrameBytes
	DefaultReadTimeout      = tail.DefaultReadTimeout
	DefaultSubscriberQueue  = fanout.DefaultQueueLen
	DefaultMaxSubscribers   = fanout.DefaultMaxSubscribers
	DefaultHealthInterval   = pool.DefaultInterval
	DefaultScanInterval     = repair.DefaultScanInterval
	DefaultRepairGrace      = repair.DefaultGrace
	DefaultNewRepos         = repair.NewReposAuto
	DefaultCrawlInterval    = crawl.DefaultInterval
	DefaultCrawlIdle        = crawl.DefaultIdle
	DefaultArchiveRetention = store.DefaultRetention
)
