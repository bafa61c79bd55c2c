package store

import "errors"

var (
	// ErrNewerSchema means the database was written by a newer pdsmux.
	ErrNewerSchema = errors.New("store: database schema is newer than this pdsmux")
	// ErrBadURL means the database URL is not one the store can open.
	ErrBadURL = errors.New("store: unsupported database URL")
)
