package pdsmuxd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/store"
)

// watchInterval is how often Redis is checked for having lost its state.
const watchInterval = 500 * time.Millisecond

// reconciler keeps Redis in step with the durable checkpoint: at start-up
// (before any replica is tailed), whenever Redis turns out to have lost
// its state (its incarnation marker is gone: FLUSHALL, a new empty
// server), and whenever it lost recent writes (a replica cursor
// regressed, or the seq counter is below seqs already seen: an AOF that
// missed its last second, a failover to a lagging replica, a node back
// from an older RDB).
type reconciler struct {
	log      *cursor.Log
	st       *store.Store
	arch     *store.Archiver
	m        *store.Metrics
	lg       *slog.Logger
	dedupTTL time.Duration
	// claim claims the log for this process's archive (Runtime.claimLog):
	// in every reconcile, before it restores anything, and on every watch
	// tick. Its ConfigError (an older claim by a pdsmux archiving
	// elsewhere) stops pdsmux.
	claim func(context.Context) error
	// archive is this process's archive ID: the incarnation marker its
	// reconciles leave. Another one in Redis means another archive's
	// process restored it, and this one restores its own checkpoint.
	archive string
	settle  time.Duration // claimSettle, or the test's
	// resync runs after Redis was restored while running (lost state or
	// lost writes): every tailer re-reads its cursor, which the
	// checkpoint may have put below where its session is (tail.Resync).
	resync func()

	mu    sync.Mutex
	ready chan struct{}
	once  sync.Once
}

// Ready is closed after the start-up reconcile.
func (r *reconciler) Ready() <-chan struct{} { return r.ready }

// reconcile writes out what the archiver has read (every entry a
// subscriber was sent, unless the archive was more than its buffer behind:
// I7), reads the checkpoint and merges it into Redis. It restores nothing
// until that write succeeded: a checkpoint missing what subscribers saw
// would make the replicas' events come back under new seqs.
//
// It claims the log just before it restores: at start-up and when Redis
// lost its data, another pdsmux archiving elsewhere may have claimed it
// (also while the flush ran), and this one must not restore, append or
// trim then (the error is a ConfigError).
func (r *reconciler) reconcile(ctx context.Context, trigger string, lost bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if lost {
		// nothing read from the Redis that lost entries is archived or
		// sent after this: the checkpoint below is all of it
		r.arch.Fence()
	}
	if err := r.arch.Flush(ctx); err != nil {
		return fmt.Errorf("writing what the archive has read before reconciling: %w", err)
	}
	st, err := r.st.State(ctx, r.dedupTTL)
	if err != nil {
		return err
	}
	st.Archive = r.archive
	if err := r.claim(ctx); err != nil {
		return err
	}
	n, err := r.log.Reconcile(ctx, st, lost)
	if err != nil {
		return err
	}
	r.m.Reconciled(trigger, n > 0)
	if n > 0 || lost {
		r.lg.Warn("restored Redis from the durable checkpoint", "trigger", trigger, "values", n,
			"high_water", st.HighWater, "repos", len(st.Repos), "cursors", len(st.Cursors))
		if trigger != "startup" && r.resync != nil {
			r.resync()
		}
	}
	return nil
}

// run does the start-up reconcile (retrying until Redis and the database
// answer), then watches Redis until ctx ends.
func (r *reconciler) run(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	settled := false
	for {
		inc, err := r.log.Incarnation(ctx)
		if err == nil && r.foreign(inc) && !settled {
			// A Redis without pdsmux's state, or with another archive's:
			// if it just lost it under a running pdsmux, or another
			// archive's pdsmux put its own there, let the pdsmux that
			// had the log claim it first (claim.go).
			if err = r.claim(ctx); err == nil {
				settled = true
				if r.settle > 0 {
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(r.settle):
					}
					continue
				}
			}
		}
		if err == nil {
			hw, herr := r.st.HighWater(ctx)
			err = herr
			if err == nil {
				// No marker, or another archive's, but an archive here:
				// Redis lost everything while pdsmux was down, or another
				// archive's process restored it.
				err = r.reconcile(ctx, "startup", r.foreign(inc) && hw > 0)
			}
		}
		if err == nil {
			break
		}
		if errors.Is(err, ErrConfig) {
			return err
		}
		r.lg.Warn("start-up reconcile with the durable checkpoint failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	r.once.Do(func() { close(r.ready) })

	t := time.NewTicker(watchInterval)
	defer t.Stop()
	claimed, lapsed := time.Now(), false // every tick renews the claim
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		switch err := r.claim(ctx); {
		case err == nil:
			claimed, lapsed = time.Now(), false
		case errors.Is(err, ErrConfig):
			return err
		case !lapsed && time.Since(claimed) >= claimTTL:
			lapsed = true
			r.lg.Warn("this pdsmux's claim on the log lapsed: Redis did not answer; it is made again when Redis answers", "err", err)
		}
		inc, err := r.log.Incarnation(ctx)
		if err != nil {
			continue // unreachable Redis is the tailers' to report
		}
		if r.foreign(inc) {
			if inc == "" {
				r.lg.Error("Redis lost pdsmux's state (no incarnation marker); restoring from the durable checkpoint")
			} else {
				r.lg.Error("Redis holds another archive's state (its incarnation marker names archive "+inc+"); restoring from the durable checkpoint", "archive", r.archive)
			}
			if err := r.restore(ctx, "lost_state"); err != nil {
				return err
			}
			continue
		}
		if lost, err := r.log.LostWrites(ctx); err == nil && lost {
			r.lg.Error("Redis went back in time (its seq counter is below seqs already seen: a failover to a lagging replica, or a node back from an older RDB/AOF); restoring from the durable checkpoint")
			if err := r.restore(ctx, "lost_writes"); err != nil {
				return err
			}
		}
	}
}

// restore is the watch loop's reconcile after a loss: a failure is logged
// and retried at the next tick, but a refused claim (ConfigError) is
// returned, and stops pdsmux.
func (r *reconciler) restore(ctx context.Context, trigger string) error {
	err := r.reconcile(ctx, trigger, true)
	if errors.Is(err, ErrConfig) {
		return err
	}
	if err != nil {
		r.lg.Error("restoring Redis failed; will retry", "err", err)
	}
	return nil
}

// foreign reports whether the incarnation marker inc says Redis does not
// hold this archive's state: none ("", Redis lost it) or another
// archive's ID (32 hex digits). A marker of another form is an older
// pdsmux's (a random 16 hex digits) over this log's state: not foreign,
// and the next reconcile replaces it.
func (r *reconciler) foreign(inc string) bool {
	return inc == "" || (inc != r.archive && len(inc) == len(r.archive))
}

// regressed is the tailers' hook (tail.Config.Regressed): a session ended
// on cursor.ErrCursorRegressed, and Redis is restored before the tailer
// reads its cursor again.
func (r *reconciler) regressed(ctx context.Context) error {
	return r.reconcile(ctx, "lost_writes", true)
}
