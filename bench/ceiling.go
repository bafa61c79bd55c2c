package main

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/loopback"
)

// ceiling is how fast redis-server alone takes the stream's frames.
type ceiling struct {
	events int
	evps   float64
	mbps   float64
	batch  int
}

// ceilingBatch is the XADDs sent per pipeline round trip.
const ceilingBatch = 256

// redisCeiling appends the first n frames of the stream to a fresh
// redis-server (AOF, fsync every second, as pdsmux runs it) from one Go
// client: XADD with an approximate MAXLEN of pdsmux's default
// --max-entries, pipelined ceilingBatch at a time. The merge cannot go
// faster than this on the same machine and frames.
func redisCeiling(env *loopback.Env, s *stream, n int) (ceiling, error) {
	_, url, err := env.Redis("ceiling-redis")
	if err != nil {
		return ceiling{}, err
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return ceiling{}, err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx := context.Background()
	var bytes int64
	start := time.Now()
	for i := 0; i < n; i += ceilingBatch {
		pipe := c.Pipeline()
		for j := i; j < min(n, i+ceilingBatch); j++ {
			bytes += int64(len(s.frames[j]))
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: "bench:log", MaxLen: 100_000, Approx: true, Values: []any{"f", s.frames[j]}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return ceiling{}, err
		}
	}
	d := time.Since(start).Seconds()
	return ceiling{events: n, evps: float64(n) / d, mbps: float64(bytes) / d / 1e6, batch: ceilingBatch}, nil
}
