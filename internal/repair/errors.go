package repair

import "errors"

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
)
