package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v3"

	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
)

func serveFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "replica", Sources: env("replica"), Category: "replicas",
			Usage: "a replica as [name=]http(s)://host:port (repeat, or comma-separate in the variable)"},
		&cli.StringFlag{Name: "redis-url", Sources: env("redis-url"), Value: pdsmuxd.DefaultRedisURL, Category: "redis",
			Usage: "redis:// or rediss:// URL (user:password@ allowed); add ?master_name=NAME&addr=host:port for Sentinel"},
		&cli.StringFlag{Name: "redis-prefix", Sources: env("redis-prefix"), Value: pdsmuxd.DefaultPrefix, Category: "redis",
			Usage: "key prefix, so several deployments can share one Redis; keys are {prefix}:..."},
		&cli.IntFlag{Name: "redis-wait-replicas", Sources: env("redis-wait-replicas"), Value: 0, Category: "redis",
			Usage: "deliver an entry only once this many Redis replicas hold it (WAIT), so a failover takes back nothing delivered; 0 for one Redis, 1 for the two-device Sentinel setup"},
		&cli.DurationFlag{Name: "redis-wait-timeout", Sources: env("redis-wait-timeout"), Value: pdsmuxd.DefaultRedisWaitTimeout, Category: "redis",
			Usage: "bound of one WAIT; on timeout delivery keeps waiting and retries (counted and logged), never sending unreplicated entries"},
		&cli.StringFlag{Name: "listen", Sources: env("listen"), Value: pdsmuxd.DefaultListen, Category: "http",
			Usage: "address for subscribeRepos, the proxied sync endpoints and /xrpc/_health"},
		&cli.StringFlag{Name: "metrics-listen", Sources: env("metrics-listen"), Value: pdsmuxd.DefaultMetricsListen, Category: "http",
			Usage: "address for /metrics and /debug/pprof"},
		&cli.DurationFlag{Name: "hold-timeout", Sources: env("hold-timeout"), Value: pdsmuxd.DefaultHoldTimeout, Category: "log",
			Usage: "how long a #commit whose predecessor is missing waits before repair covers the gap"},
		&cli.DurationFlag{Name: "dedup-ttl", Sources: env("dedup-ttl"), Value: pdsmuxd.DefaultDedupTTL, Category: "log",
			Usage: "how long #identity/#account events are remembered for dedup"},
		&cli.DurationFlag{Name: "retention", Sources: env("retention"), Value: pdsmuxd.DefaultRetention, Category: "log",
			Usage: "how long the merged log keeps events in Redis"},
		&cli.Int64Flag{Name: "max-entries", Sources: env("max-entries"), Value: pdsmuxd.DefaultMaxEntries, Category: "log",
			Usage: "cap on events kept in Redis (oldest trimmed first)"},
		&cli.StringFlag{Name: "memory-budget", Sources: env("memory-budget"), Value: pdsmuxd.DefaultMemoryBudget, Category: "memory",
			Usage: "memory for pdsmux and its Redis log together, e.g. 512MiB, 1GiB: sets GOMEMLIMIT to half (unless GOMEMLIMIT is set) and each of --log-max-bytes, --replica-queue-bytes, --subscriber-queue-bytes not set"},
		&cli.StringFlag{Name: "log-max-bytes", Sources: env("log-max-bytes"), Category: "memory",
			Usage: "byte budget of the log in Redis, its stream and what is in flight: the stream is kept within half, the oldest entries going as appends reach it (default: a quarter of --memory-budget)"},
		&cli.StringFlag{Name: "replica-queue-bytes", Sources: env("replica-queue-bytes"), Category: "memory",
			Usage: "bytes read from one replica and not yet appended; when full that replica is not read until the log catches up (default: a 32nd of --memory-budget)"},
		&cli.IntFlag{Name: "max-frame-bytes", Sources: env("max-frame-bytes"), Value: pdsmuxd.DefaultMaxFrameBytes, Category: "replicas",
			Usage: "largest replica frame accepted; larger ones are skipped and counted"},
		&cli.DurationFlag{Name: "replica-read-timeout", Sources: env("replica-read-timeout"), Value: pdsmuxd.DefaultReadTimeout, Category: "replicas",
			Usage: "reconnect to a replica that sends nothing (not even a pong) for this long"},
		&cli.DurationFlag{Name: "health-interval", Sources: env("health-interval"), Value: pdsmuxd.DefaultHealthInterval, Category: "replicas",
			Usage: "how often each replica's /xrpc/_health is checked"},
		&cli.IntFlag{Name: "subscriber-queue", Sources: env("subscriber-queue"), Value: pdsmuxd.DefaultSubscriberQueue, Category: "subscribers",
			Usage: "frames a subscriber may fall behind before it gets ConsumerTooSlow"},
		&cli.StringFlag{Name: "subscriber-queue-bytes", Sources: env("subscriber-queue-bytes"), Category: "memory",
			Usage: "bytes a subscriber may fall behind before it gets ConsumerTooSlow (subscribers share the frames) (default: a 16th of --memory-budget)"},
		&cli.IntFlag{Name: "max-subscribers", Sources: env("max-subscribers"), Value: pdsmuxd.DefaultMaxSubscribers, Category: "subscribers",
			Usage: "further subscribeRepos connections get HTTP 503"},
		&cli.DurationFlag{Name: "ping-interval", Sources: env("ping-interval"), Value: pdsmuxd.DefaultPingInterval, Category: "subscribers",
			Usage: "websocket ping period to subscribers; one silent for two periods (plus the time to read what it was sent) is closed"},
		&cli.DurationFlag{Name: "scan-interval", Sources: env("scan-interval"), Value: pdsmuxd.DefaultScanInterval, Category: "repair",
			Usage: "how often every healthy replica's listRepos is compared with the log"},
		&cli.DurationFlag{Name: "repair-grace", Sources: env("repair-grace"), Value: pdsmuxd.DefaultRepairGrace, Category: "repair",
			Usage: "how long a repo may be ahead of the log before pdsmux repairs it"},
		&cli.StringFlag{Name: "plc-url", Sources: env("plc-url"), Value: pdsmuxd.DefaultPLCURL, Category: "repair",
			Usage: "did:plc directory: signing keys for the commit checks, and account creation times for --new-repos auto"},
		&cli.BoolFlag{Name: "verify-commit-signatures", Sources: env("verify-commit-signatures"), Value: true, Category: "repair",
			Usage: "check every upstream commit's and every repaired head's signature against the DID's current key (set false to trust the replicas)"},
		&cli.StringFlag{Name: "new-repos", Sources: env("new-repos"), Value: pdsmuxd.DefaultNewRepos, Category: "repair",
			Usage: "repos whose creation events the replicas lost are announced with their records as one #commit: auto (DIDs created since pdsmux first started, by the PLC audit log), all, or none (#sync only)"},
		&cli.StringFlag{Name: "db-url", Sources: env("db-url"), Value: pdsmuxd.DefaultDBURL, Category: "durability",
			Usage: "libsql database for the checkpoint and archive: file:/path/pdsmux.db (embedded), libsql://host or https://host (Turso, sqld)"},
		&cli.StringFlag{Name: "db-auth-token", Sources: env("db-auth-token"), Category: "durability",
			Usage: "auth token for a remote libsql database (never logged)"},
		&cli.DurationFlag{Name: "archive-retention", Sources: env("archive-retention"), Value: pdsmuxd.DefaultArchiveRetention, Category: "durability",
			Usage: "how long the archive keeps events for replay to subscribers with old cursors"},
		&cli.StringSliceFlag{Name: "relay", Sources: env("relay"), Category: "crawl",
			Usage: "relay base URL to send requestCrawl to, e.g. https://bsky.network (repeat; leave COCOON_RELAYS unset on the replicas)"},
		&cli.StringFlag{Name: "hostname", Sources: env("hostname"), Category: "crawl",
			Usage: "the PDS's public hostname, sent in requestCrawl (e.g. pds.example.com)"},
		&cli.DurationFlag{Name: "crawl-interval", Sources: env("crawl-interval"), Value: pdsmuxd.DefaultCrawlInterval, Category: "crawl",
			Usage: "least time between two requestCrawl calls to one relay"},
		&cli.DurationFlag{Name: "crawl-idle", Sources: env("crawl-idle"), Value: pdsmuxd.DefaultCrawlIdle, Category: "crawl",
			Usage: "ask relays again when no subscriber has been connected for this long"},
		&cli.DurationFlag{Name: "shutdown-timeout", Sources: env("shutdown-timeout"), Value: pdsmuxd.DefaultShutdownTimeout,
			Usage: "how long shutdown may take before connections are cut"},
		&cli.StringFlag{Name: "log-level", Sources: env("log-level"), Value: pdsmuxd.DefaultLogLevel, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Sources: env("log-format"), Value: pdsmuxd.DefaultLogFormat, Usage: "json or text"},
	}
}

func configFrom(cmd *cli.Command) pdsmuxd.Config {
	cfg := pdsmuxd.Config{
		Replicas:           cmd.StringSlice("replica"),
		RedisURL:           cmd.String("redis-url"),
		RedisPrefix:        cmd.String("redis-prefix"),
		RedisWaitReplicas:  cmd.Int("redis-wait-replicas"),
		RedisWaitTimeout:   cmd.Duration("redis-wait-timeout"),
		Listen:             cmd.String("listen"),
		MetricsListen:      cmd.String("metrics-listen"),
		HoldTimeout:        cmd.Duration("hold-timeout"),
		DedupTTL:           cmd.Duration("dedup-ttl"),
		Retention:          cmd.Duration("retention"),
		MaxEntries:         cmd.Int64("max-entries"),
		MaxFrameBytes:      cmd.Int("max-frame-bytes"),
		ReplicaReadTimeout: cmd.Duration("replica-read-timeout"),
		HealthInterval:     cmd.Duration("health-interval"),
		SubscriberQueue:    cmd.Int("subscriber-queue"),
		MaxSubscribers:     cmd.Int("max-subscribers"),
		PingInterval:       cmd.Duration("ping-interval"),
		ScanInterval:       cmd.Duration("scan-interval"),
		RepairGrace:        cmd.Duration("repair-grace"),
		PLCURL:             cmd.String("plc-url"),
		NoSignatureCheck:   !cmd.Bool("verify-commit-signatures"),
		NewRepos:           cmd.String("new-repos"),
		DBURL:              cmd.String("db-url"),
		DBAuthToken:        cmd.String("db-auth-token"),
		ArchiveRetention:   cmd.Duration("archive-retention"),
		Relays:             cmd.StringSlice("relay"),
		Hostname:           cmd.String("hostname"),
		CrawlInterval:      cmd.Duration("crawl-interval"),
		CrawlIdle:          cmd.Duration("crawl-idle"),
		ShutdownTimeout:    cmd.Duration("shutdown-timeout"),
		LogLevel:           cmd.String("log-level"),
		LogFormat:          cmd.String("log-format"),
	}
	cfg.MemoryBudget = cmd.String("memory-budget")
	cfg.LogMaxBytes = cmd.String("log-max-bytes")
	cfg.ReplicaQueueBytes = cmd.String("replica-queue-bytes")
	cfg.SubscriberQueueBytes = cmd.String("subscriber-queue-bytes")
	return cfg
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:         "serve",
		OnUsageError: onUsageError,
		Usage:        "tail every replica, merge into Redis, serve subscribeRepos",
		Flags:        serveFlags(),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			cfg := configFrom(cmd)
			// indigo's libraries log through slog's default logger, at
			// INFO for every legacy commit op they cannot invert (Cocoon's
			// updates): keep their warnings and errors only, in our format.
			format := cfg.LogFormat
			if format == "" {
				format = pdsmuxd.DefaultLogFormat
			}
			slog.SetDefault(pdsmuxd.NewLogger(os.Stderr, format, slog.LevelWarn))
			// go-redis has one process-wide logger, not one per client:
			// set it once here, before any client exists, so its lines
			// (a pool that cannot dial while Redis is down) are JSON
			// warnings with component=redis, one per 10 s at most.
			redis.SetLogger(pdsmuxd.NewRedisLogger(pdsmuxd.NewLogger(os.Stderr, format, slog.LevelWarn), 10*time.Second, nil, cfg.Secrets()...))
			// the standard log package (net/http's panics and accept
			// errors) then goes through it as warnings, not dropped infos
			slog.SetLogLoggerLevel(slog.LevelWarn)
			rt, err := pdsmuxd.Build(ctx, cfg, pdsmuxd.Options{})
			if err != nil {
				return err
			}
			// the Go heap's share of --memory-budget, unless the operator
			// set GOMEMLIMIT itself
			if os.Getenv("GOMEMLIMIT") == "" {
				debug.SetMemoryLimit(rt.MemoryLimit())
			}
			abortOnSecondSignal(pdsmuxd.NewLogger(os.Stderr, format, slog.LevelInfo))
			runErr := rt.Run(ctx)
			// a fresh context: ctx is already cancelled by the signal
			cctx, cancel := context.WithTimeout(context.Background(), rt.ShutdownTimeout())
			defer cancel()
			closeErr := rt.Close(cctx)
			if runErr != nil || closeErr != nil {
				return errors.Join(runErr, closeErr)
			}
			return nil
		},
	}
}

func healthCommand() *cli.Command {
	return &cli.Command{
		Name:         "health",
		OnUsageError: onUsageError,
		Usage:        "exit 0 if the pdsmux at --url answers /xrpc/_health with 200 (for container health checks)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Sources: env("health-url"), Value: "http://" + pdsmuxd.DefaultListen, Usage: "base URL of pdsmux"},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "give up after this long"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			h, err := pdsmuxd.FetchHealth(ctx, cmd.String("url"), cmd.Duration("timeout"))
			if err != nil {
				return err
			}
			if h.Status != "ok" {
				return fmt.Errorf("unhealthy: %s (replicas: %s; redis: %s)", h.Reason, h.ReplicaStates(), h.Redis)
			}
			if h.Replication != "" && h.Replication != "ok" {
				fmt.Println("ok, but delivery is " + h.Replication)
				return nil
			}
			fmt.Println("ok")
			return nil
		},
	}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:         "status",
		OnUsageError: onUsageError,
		Usage:        "print the replicas (connected, cursor, lag), the log head, retention and subscribers of a running pdsmux",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "redis-url", Sources: env("redis-url"), Value: pdsmuxd.DefaultRedisURL, Usage: "the Redis pdsmux uses"},
			&cli.StringFlag{Name: "redis-prefix", Sources: env("redis-prefix"), Value: pdsmuxd.DefaultPrefix, Usage: "pdsmux's key prefix"},
			&cli.StringFlag{Name: "metrics-url", Sources: env("metrics-url"), Value: "http://" + pdsmuxd.DefaultMetricsListen, Usage: "pdsmux's metrics listener"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			// go-redis's process-wide logger would print each failed
			// dial; status reports what went wrong with Redis itself
			redis.SetLogger(pdsmuxd.NewRedisLogger(slog.New(slog.DiscardHandler), 0, nil))
			st, err := pdsmuxd.ReadStatus(ctx, cmd.String("redis-url"), cmd.String("redis-prefix"), cmd.String("metrics-url"))
			if err != nil {
				return err
			}
			if cmd.Bool("json") {
				return st.WriteJSON(os.Stdout)
			}
			return st.WriteText(os.Stdout)
		},
	}
}

// abortOnSecondSignal exits at once, with status 1, on a second SIGINT or
// SIGTERM: the first starts the graceful stop (which may wait up to
// --shutdown-timeout for subscribers and 5 s for a slow archive write); a
// second one means the operator will not wait. What was not written stays
// in Redis for the next start, as after a kill.
func abortOnSecondSignal(logger *slog.Logger) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs // the first: the graceful stop, through the command's context
		s := <-sigs
		logger.Error("second signal: exiting now without finishing the stop", "signal", s.String())
		os.Exit(1)
	}()
}
