package repair

import (
	"context"
	"errors"
	"fmt"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/verify"
)

// stateBatch bounds one HMGET of repo states.
const stateBatch = 500

// Scan compares every healthy replica's listRepos with the log, and
// repairs repos that have been ahead of it (or unknown to it) for longer
// than the grace period, and account statuses the log never announced.
func (r *Repairer) Scan(ctx context.Context) error {
	infos := map[string]RepoInfo{}
	var order []string
	scanned := 0
	var lastErr error
	for _, rep := range r.pool.Ordered() {
		if !rep.Healthy() {
			continue
		}
		list, err := newReplicaAPI(rep, r.hc, r.cfg.UserAgent).listRepos(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		scanned++
		for _, ri := range list {
			old, seen := infos[ri.DID]
			if !seen {
				order = append(order, ri.DID)
			}
			if !seen || cursor.RevLess(old.Rev, ri.Rev) {
				infos[ri.DID] = ri
			}
		}
	}
	if scanned == 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("no healthy replica to scan")
		}
		return lastErr
	}
	now := r.now()
	behind := 0
	seen := map[string]bool{}
	for start := 0; start < len(order); start += stateBatch {
		dids := order[start:min(start+stateBatch, len(order))]
		states, err := r.log.RepoStates(ctx, dids...)
		if err != nil {
			return err
		}
		statuses, err := r.log.AccountStatuses(ctx, dids...)
		if err != nil {
			return err
		}
		for i, did := range dids {
			seen[did] = true
			ri := infos[did]
			st := states[i]
			// Relays drop events of inactive accounts: no repair for them
			// (repairOnce also checks the log's status) until they are
			// active again.
			if ri.Active && (!st.OK || cursor.RevLess(st.Rev, ri.Rev)) {
				behind++
				first, ok := r.ahead[did]
				if !ok {
					r.ahead[did] = now
				} else if now.Sub(first) >= r.cfg.Grace {
					var future *verify.FutureRevError
					_, err := r.Repair(ctx, did, "scan")
					switch {
					case err == nil:
						delete(r.ahead, did)
					case errors.As(err, &future):
						// not before relays would take the rev
						r.m.failed("future_rev")
						r.ahead[did] = future.AcceptableAt().Add(-r.cfg.Grace)
						r.lg.Warn("the replica's head rev is ahead of the clock; repair waits until relays would take it",
							"did", did, "rev", future.Rev, "retry_at", future.AcceptableAt())
					default:
						r.lg.Warn("repair of a repo found behind by the scan failed; will retry", "did", did, "err", err)
					}
				}
			} else if ri.Active && st.OK && cursor.RevLess(ri.Rev, st.Rev) {
				// The replica's head is below the log's: a rollback whose
				// #sync was lost (or whose flag was), or the log holding
				// the losing side of a fork. Once past the grace period,
				// repair announces the replica's head with #sync if it is
				// still there.
				first, ok := r.ahead[did]
				if !ok {
					r.ahead[did] = now
				} else if now.Sub(first) >= r.cfg.Grace {
					behind++
					flag := &cursor.Flag{Reason: cursor.ReasonSyncRollback, Rev: ri.Rev}
					if _, err := r.repair(ctx, did, "scan", flag); err != nil {
						r.lg.Warn("announcing a replica head below the log's failed; will retry", "did", did, "err", err)
					} else {
						delete(r.ahead, did)
					}
				}
			} else {
				delete(r.ahead, did)
			}

			logged := statuses[i]
			if logged == "" {
				logged = "active" // no #account yet: hosted and active
			}
			if want := ri.statusString(); want != logged {
				first, ok := r.statusAhead[did]
				if !ok {
					r.statusAhead[did] = now
				} else if now.Sub(first) >= r.cfg.Grace {
					if err := r.announceStatus(ctx, ri, now); err != nil {
						r.lg.Warn("announcing an account status change failed; will retry", "did", did, "err", err)
					} else {
						delete(r.statusAhead, did)
					}
				}
			} else {
				delete(r.statusAhead, did)
			}
		}
	}
	for did := range r.ahead {
		if !seen[did] {
			delete(r.ahead, did)
		}
	}
	for did := range r.statusAhead {
		if !seen[did] {
			delete(r.statusAhead, did)
		}
	}
	r.m.setBehind(behind)
	r.m.scanned()
	return nil
}

// announceStatus appends the #account event a replica did not stream.
func (r *Repairer) announceStatus(ctx context.Context, ri RepoInfo, now time.Time) error {
	ev := &comatproto.SyncSubscribeRepos_Account{Did: ri.DID, Active: ri.Active, Time: now.UTC().Format(syntax.AtprotoDatetimeLayout)}
	if !ri.Active && ri.Status != "" {
		st := ri.Status
		ev.Status = &st
	}
	if err := r.appendSynthetic(ctx, frame.TypeAccount, ev); err != nil {
		return err
	}
	r.m.repaired("status", "account")
	r.lg.Info("announced an account status the replicas did not stream", "did", ri.DID, "active", ri.Active, "status", ri.Status)
	return nil
}
