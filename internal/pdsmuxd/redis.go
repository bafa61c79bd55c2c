package pdsmuxd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/redact"
)

// ErrRedisAuth means Redis refused the credentials of --redis-url.
var ErrRedisAuth = errors.New("redis refused the credentials")

// isRedisAuth reports whether err is Redis refusing a connection's
// credentials: NOAUTH (a password is required), WRONGPASS, or a password
// sent to a Redis that has none.
func isRedisAuth(err error) bool {
	if err == nil {
		return false
	}
	return redis.IsAuthError(err) || strings.Contains(err.Error(), "without any password configured") ||
		strings.Contains(err.Error(), "ERR invalid password")
}

// explainRedis turns a failed first contact with Redis into a message
// that names the setting: refused credentials wrap ErrRedisAuth (and are a
// ConfigError, redis-url), anything else says Redis does not answer at the
// redacted address.
func explainRedis(err error, redactedURL string) error {
	if isRedisAuth(err) {
		form := "redis://user:password@host:port/db"
		if strings.Contains(redactedURL, "master_name=") {
			// go-redis reads a Sentinel URL's password from the query
			form = "a Sentinel URL carries it as ?password=, for the Redis servers and the sentinels alike"
		}
		return &ConfigError{Setting: "redis-url", Value: redactedURL,
			Reason: fmt.Sprintf("%v: check the password (%s): %v", ErrRedisAuth, form, err)}
	}
	return fmt.Errorf("redis at %s does not answer (--redis-url): %w", redactedURL, err)
}

// checkSentinelMaster asks the sentinels of a Sentinel URL (raw) whether
// they monitor its master_name: a sentinel that answers but knows no such
// master is a mistake in the URL (go-redis only says every sentinel is
// "unreachable"), and a ConfigError naming redis-url. Sentinels that do
// not answer, or a URL without master_name, give nil: the caller retries.
func checkSentinelMaster(ctx context.Context, raw, redactedURL string) error {
	opts, err := redis.ParseFailoverURL(raw)
	if err != nil || opts.MasterName == "" {
		return nil
	}
	for _, addr := range opts.SentinelAddrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, Username: opts.SentinelUsername,
			Password: opts.SentinelPassword, DialTimeout: time.Second, MaxRetries: -1})
		_, err := sc.GetMasterAddrByName(ctx, opts.MasterName).Result()
		sc.Close()
		if err == nil {
			return nil
		}
		if errors.Is(err, redis.Nil) {
			return &ConfigError{Setting: "redis-url", Value: redactedURL,
				Reason: fmt.Sprintf("the sentinel at %s monitors no master named %q (master_name=; SENTINEL MASTERS lists the names it has)", addr, opts.MasterName)}
		}
	}
	return nil
}

// checkRedis pings Redis once at start-up. Refused credentials stop
// start-up (retrying cannot fix them); a Redis that does not answer yet is
// logged and left to the components' retries, so pdsmux may start before
// its Redis; down says so.
func checkRedis(ctx context.Context, rdb redis.UniversalClient, raw, redactedURL string, log *slog.Logger) (down bool, _ error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := rdb.Ping(ctx).Err()
	if err == nil {
		return false, nil
	}
	if cerr := checkSentinelMaster(ctx, raw, redactedURL); cerr != nil {
		return true, cerr
	}
	err = explainRedis(err, redactedURL)
	if errors.Is(err, ErrConfig) {
		return true, err
	}
	log.Warn("redis does not answer at start-up; retrying", "err", err)
	return true, nil
}

// RedisLogger carries go-redis's own log lines (a pool that cannot dial,
// a Sentinel switching masters) into slog as warnings with
// component=redis, instead of plain text on stderr beside the JSON log.
// While Redis is down go-redis writes a line per failed dial: at most one
// line per interval passes, and the next one that does carries
// "suppressed", the number dropped in between. Secrets given to
// NewRedisLogger are masked in every line.
//
// go-redis has a single, process-wide logger (redis.SetLogger), so this is
// installed once at start-up by cmd/pdsmux, not per client.
type RedisLogger struct {
	log     *slog.Logger
	every   time.Duration
	now     func() time.Time
	secrets []string

	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// NewRedisLogger returns a go-redis logger writing to log at most one line
// per every (10s if zero); now is the clock (time.Now if nil).
func NewRedisLogger(log *slog.Logger, every time.Duration, now func() time.Time, secrets ...string) *RedisLogger {
	if every <= 0 {
		every = 10 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &RedisLogger{log: log.With("component", "redis"), every: every, now: now, secrets: secrets}
}

// Printf implements go-redis's internal Logging interface.
func (l *RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.mu.Lock()
	t := l.now()
	if t.Before(l.next) {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.next = t.Add(l.every)
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	msg := redact.Strip(strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "), l.secrets...)
	if suppressed > 0 {
		l.log.WarnContext(ctx, msg, "suppressed", suppressed)
		return
	}
	l.log.WarnContext(ctx, msg)
}

// Secrets returns the secret values in c (the Redis password, the
// database token, secret query values of the URLs), for masking in text
// pdsmux does not write itself.
func (c Config) Secrets() []string {
	var out []string
	for _, raw := range []string{c.RedisURL, c.DBURL} {
		out = append(out, redact.Secrets(raw)...)
	}
	if c.DBAuthToken != "" {
		out = append(out, c.DBAuthToken)
	}
	return out
}
