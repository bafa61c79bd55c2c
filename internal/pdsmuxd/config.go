package pdsmuxd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/crawl"
	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/fanout"
	"github.com/pdsmux/pdsmux/internal/pool"
	"github.com/pdsmux/pdsmux/internal/redact"
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
// PDSMUX_* variables; Validate checks it once. A zero number or duration
// is taken as zero, never as "the default", and every one is refused (no
// setting has an "off" value): start from DefaultConfig. Empty strings
// still mean the default.
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
	PingInterval    time.Duration // websocket ping period to subscribers (fanout.Config.PingInterval)
	HealthInterval  time.Duration

	// MemoryBudget is what pdsmux and its Redis log may use together, as
	// a size ("512MiB"; "" = DefaultMemoryBudget): it sets GOMEMLIMIT
	// (Runtime.MemoryLimit) and the byte caps below that are left "".
	MemoryBudget         string
	LogMaxBytes          string // the Redis stream's byte budget
	ReplicaQueueBytes    string // frames read from one replica, not yet appended
	SubscriberQueueBytes string // what a subscriber may fall behind before ConsumerTooSlow

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

// DefaultConfig is a Config with every default filled in (the values the
// command line's flags default to); callers set the replicas and whatever
// else they change.
func DefaultConfig() Config {
	return Config{
		RedisURL:           DefaultRedisURL,
		RedisPrefix:        DefaultPrefix,
		RedisWaitTimeout:   DefaultRedisWaitTimeout,
		Listen:             DefaultListen,
		MetricsListen:      DefaultMetricsListen,
		HoldTimeout:        DefaultHoldTimeout,
		DedupTTL:           DefaultDedupTTL,
		Retention:          DefaultRetention,
		MaxEntries:         DefaultMaxEntries,
		MaxFrameBytes:      DefaultMaxFrameBytes,
		ReplicaReadTimeout: DefaultReadTimeout,
		SubscriberQueue:    DefaultSubscriberQueue,
		MaxSubscribers:     DefaultMaxSubscribers,
		PingInterval:       DefaultPingInterval,
		HealthInterval:     DefaultHealthInterval,
		ScanInterval:       DefaultScanInterval,
		RepairGrace:        DefaultRepairGrace,
		PLCURL:             DefaultPLCURL,
		NewRepos:           DefaultNewRepos,
		DBURL:              DefaultDBURL,
		ArchiveRetention:   DefaultArchiveRetention,
		CrawlInterval:      DefaultCrawlInterval,
		CrawlIdle:          DefaultCrawlIdle,
		ShutdownTimeout:    DefaultShutdownTimeout,
		LogLevel:           DefaultLogLevel,
		LogFormat:          DefaultLogFormat,
	}
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
	if r := secretSettings[setting]; r != nil {
		value = r(value)
	}
	return &ConfigError{Setting: setting, Value: value, Reason: fmt.Sprintf(reason, args...)}
}

// BadSetting is the ConfigError for a setting whose value is wrong, for
// checks made outside Config (the command line's own parsing). The value
// of a secret-carrying setting is redacted.
func BadSetting(setting, value, reason string, args ...any) error {
	return bad(setting, value, reason, args...)
}

// secretSettings redacts the value of every setting that may carry a
// credential, wherever it is shown: in a ConfigError (bad applies it, so
// no caller can forget) and in /debug/pprof/cmdline. URL-valued settings
// keep everything but their userinfo password and secret query values.
var secretSettings = map[string]func(string) string{
	"redis-url":     redact.URL,
	"db-url":        redact.URL,
	"db-auth-token": redact.All,
	"replica":       redact.URL,
	"relay":         redact.URL,
	"plc-url":       redact.URL,
	"metrics-url":   redact.URL, // pdsmux status
	"url":           redact.URL, // pdsmux health
}

// RedactArgs returns a command line (os.Args) with the value of every
// secret-carrying flag redacted.
func RedactArgs(args []string) []string { return redact.Args(args, secretSettings) }

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
	mem      memory
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
	if s.RedisWaitTimeout <= 0 {
		return nil, bad("redis-wait-timeout", s.RedisWaitTimeout.String(), "must be above 0 (leave it out for the default, %s)", DefaultRedisWaitTimeout)
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
	if s.Listen == s.MetricsListen && !strings.HasSuffix(s.Listen, ":0") {
		return nil, bad("metrics-listen", s.MetricsListen, "must differ from --listen")
	}
	// Zero is never "the default" (the packages would quietly take theirs)
	// and no setting but --redis-wait-replicas (0: no wait, checked above)
	// has an "off" value: every number must be positive.
	durations := []struct {
		name   string
		v, def time.Duration
	}{
		{"hold-timeout", s.HoldTimeout, DefaultHoldTimeout},
		{"dedup-ttl", s.DedupTTL, DefaultDedupTTL},
		{"retention", s.Retention, DefaultRetention},
		{"replica-read-timeout", s.ReplicaReadTimeout, DefaultReadTimeout},
		{"health-interval", s.HealthInterval, DefaultHealthInterval},
		{"shutdown-timeout", s.ShutdownTimeout, DefaultShutdownTimeout},
		{"scan-interval", s.ScanInterval, DefaultScanInterval},
		{"repair-grace", s.RepairGrace, DefaultRepairGrace},
		{"crawl-interval", s.CrawlInterval, DefaultCrawlInterval},
		{"crawl-idle", s.CrawlIdle, DefaultCrawlIdle},
		{"ping-interval", s.PingInterval, DefaultPingInterval},
		{"archive-retention", s.ArchiveRetention, DefaultArchiveRetention},
	}
	for _, d := range durations {
		if d.v <= 0 {
			return nil, bad(d.name, d.v.String(), "must be above 0 (leave it out for the default, %s)", d.def)
		}
	}
	counts := []struct {
		name   string
		v, def int64
	}{
		{"max-entries", s.MaxEntries, DefaultMaxEntries},
		{"max-frame-bytes", int64(s.MaxFrameBytes), DefaultMaxFrameBytes},
		{"subscriber-queue", int64(s.SubscriberQueue), DefaultSubscriberQueue},
		{"max-subscribers", int64(s.MaxSubscribers), DefaultMaxSubscribers},
	}
	for _, n := range counts {
		if n.v <= 0 {
			return nil, bad(n.name, fmt.Sprint(n.v), "must be above 0 (leave it out for the default, %d)", n.def)
		}
	}
	if s.HoldTimeout > time.Hour {
		return nil, bad("hold-timeout", s.HoldTimeout.String(), "above an hour holds back every broken chain for too long")
	}
	if s.Retention < time.Minute {
		return nil, bad("retention", s.Retention.String(), "must be at least a minute")
	}
	if s.ReplicaReadTimeout < time.Second {
		return nil, bad("replica-read-timeout", s.ReplicaReadTimeout.String(), "must be at least 1s")
	}
	if s.MaxFrameBytes < 1024 {
		return nil, bad("max-frame-bytes", fmt.Sprint(s.MaxFrameBytes), "must be at least 1024")
	}
	if s.mem, err = c.validateMemory(); err != nil {
		return nil, err
	}
	if s.PingInterval < 100*time.Millisecond {
		return nil, bad("ping-interval", s.PingInterval.String(), "must be at least 100ms")
	}
	if s.ScanInterval < 100*time.Millisecond {
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
		return nil, bad("db-url", s.DBURL, "want file:/path/pdsmux.db, libsql://host or https://host")
	}
	if s.ArchiveRetention < time.Hour {
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

// redisClient checks a Redis URL and returns a constructor for its client
// and the URL with its password redacted; the client's read timeout is
// raised to at least minRead (a WAIT is pipelined and must not look like a
// dead connection). Errors never show the password,
// not even a part of one that net/url took for a port or a path.
func redisClient(raw string, minRead time.Duration) (func() redis.UniversalClient, string, error) {
	redacted := redact.URL(raw)
	u, err := url.Parse(raw)
	if err != nil || redact.Misparsed(u) {
		return nil, "", bad("redis-url", raw, "not a URL: write redis://[user:password@]host:port/db, with / ? # @ %% : in the password percent-encoded (/ as %%2F)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
		return nil, "", bad("redis-url", raw, "scheme must be redis://, rediss:// or unix://")
	}
	password, _ := u.User.Password()
	// go-redis's messages quote parts of the URL: keep the password out
	scrub := func(err error) string {
		return redact.Strip(err.Error(), password, url.PathEscape(password), url.QueryEscape(password))
	}
	if q := u.Query(); q.Has("cluster") {
		on, err := strconv.ParseBool(q.Get("cluster"))
		if err != nil {
			return nil, "", bad("redis-url", redacted, "cluster=%q: want true or false", q.Get("cluster"))
		}
		q.Del("cluster")
		u.RawQuery = q.Encode()
		raw = u.String()
		if on {
			if u.Path != "" && u.Path != "/" && u.Path != "/0" {
				return nil, "", bad("redis-url", redacted, "a Redis Cluster has only database 0")
			}
			u.Path = ""
			opts, err := redis.ParseClusterURL(u.String())
			if err != nil {
				return nil, "", bad("redis-url", redacted, "cluster URL: %v", err)
			}
			if opts.ReadTimeout >= 0 && opts.ReadTimeout < minRead {
				opts.ReadTimeout = minRead
			}
			return func() redis.UniversalClient { return redis.NewClusterClient(opts) }, redacted, nil
		}
	}
	if u.Query().Has("master_name") {
		opts, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return nil, "", bad("redis-url", raw, "sentinel URL: %s", scrub(err))
		}
		if opts.ReadTimeout >= 0 && opts.ReadTimeout < minRead {
			opts.ReadTimeout = minRead
		}
		return func() redis.UniversalClient { return redis.NewFailoverClient(opts) }, redacted, nil
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, "", bad("redis-url", raw, "%s", scrub(err))
	}
	if opts.ReadTimeout >= 0 && opts.ReadTimeout < minRead {
		opts.ReadTimeout = minRead
	}
	return func() redis.UniversalClient { return redis.NewClient(opts) }, redacted, nil
}

// Defaults used by cmd/pdsmux as flag values, gathered from the packages
// that own them.
const (
	DefaultHoldTimeout      = cursor.DefaultHoldTimeout
	DefaultDedupTTL         = cursor.DefaultDedupTTL
	DefaultRetention        = cursor.DefaultRetention
	DefaultMaxEntries       = int64(cursor.DefaultMaxEntries)
	DefaultPrefix           = cursor.DefaultPrefix
	DefaultMaxFrameBytes    = tail.DefaultMaxFrameBytes
	DefaultReadTimeout      = tail.DefaultReadTimeout
	DefaultSubscriberQueue  = fanout.DefaultQueueLen
	DefaultMaxSubscribers   = fanout.DefaultMaxSubscribers
	DefaultPingInterval     = fanout.DefaultPingInterval
	DefaultHealthInterval   = pool.DefaultInterval
	DefaultScanInterval     = repair.DefaultScanInterval
	DefaultRepairGrace      = repair.DefaultGrace
	DefaultNewRepos         = repair.NewReposAuto
	DefaultCrawlInterval    = crawl.DefaultInterval
	DefaultCrawlIdle        = crawl.DefaultIdle
	DefaultArchiveRetention = store.DefaultRetention
)
