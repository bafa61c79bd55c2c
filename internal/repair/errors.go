package repair

import (
	"errors"
	"fmt"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

var (
	// ErrRepoNotFound means no healthy replica hosts the repo.
	ErrRepoNotFound = errors.New("repair: no replica has the repo")
	// ErrMissingBlocks means a replica could not produce a block the diff
	// needs (garbage-collected, or never stored).
	ErrMissingBlocks = errors.New("repair: replica lacks blocks")
	// ErrTooBig means the diff does not fit in one #commit.
	ErrTooBig = errors.New("repair: diff exceeds one commit's limits")
	// ErrBadCommit means the replica's head commit failed its checks.
	ErrBadCommit = errors.New("repair: replica's head commit is invalid")
	// ErrLog means the log (Redis) did not answer: unreachable, failing
	// over, or restoring. Nothing about the repo; the repair is tried
	// again after one hold time, without the per-repo back-off.
	ErrLog = errors.New("repair: the log (Redis) failed")
)

// logErr marks an error from the log as ErrLog, except a lost race with
// another writer (cursor.ErrRepairRace), which is about the repo.
func logErr(err error) error {
	if err == nil || errors.Is(err, cursor.ErrRepairRace) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrLog, err)
}
