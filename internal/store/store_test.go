package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/store"
	"github.com/pdsmux/pdsmux/internal/testutil/libsqlserver"
)

func open(t *testing.T, url string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), url, "")
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func identityFrame(t *testing.T, did, handle string, seq int64) []byte {
	b, err := frame.Encode(frame.TypeIdentity, &comatproto.SyncSubscribeRepos_Identity{Did: did, Handle: &handle, Seq: seq, Time: "2026-11-25T00:00:00.000Z"})
	require.NoError(t, err)
	return b
}

func entry(seq int64, kind, did, rev, src string, useq int64, at time.Time, f []byte) cursor.Entry {
	return cursor.Entry{Seq: seq, Kind: kind, DID: did, Rev: rev, Commit: "bafy-" + rev, Source: src, UpstreamSeq: useq, Time: at, Frame: f}
}

func TestStore_Conformance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		now := time.Now()
		idf := identityFrame(t, "did:plc:a", "a.test", 100)
		require.NoError(t, s.Write(ctx, []cursor.Entry{
			entry(10, "c", "did:plc:a", "3aaa", "r1", 5, now, []byte{1}),
			entry(11, "c", "did:plc:a", "3aab", "r2", 9, now, []byte{2}),
			entry(12, "i", "did:plc:a", "", "r1", 6, now, idf),
			{Seq: 13, Kind: "a", DID: "did:plc:b", Status: "deactivated", Source: "r1", UpstreamSeq: 7, Time: now, Frame: []byte{4}},
		}))
		// an overlapping, older write (another pdsmux, or the backfill)
		require.NoError(t, s.Write(ctx, []cursor.Entry{
			entry(10, "c", "did:plc:a", "3aaa", "r1", 5, now, []byte{1}),
			entry(9, "c", "did:plc:a", "3aa9", "r1", 4, now, []byte{0}),
		}))
		hw, err := s.HighWater(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 13, hw)
		es, err := s.Range(ctx, 9, 10)
		require.NoError(t, err)
		require.Len(t, es, 4)
		require.Equal(t, []byte{1}, es[0].Frame)
		require.EqualValues(t, 10, es[0].Seq)

		st, err := s.State(ctx, time.Hour)
		require.NoError(t, err)
		require.EqualValues(t, 13, st.HighWater)
		require.Equal(t, cursor.RepoState{Rev: "3aab", Commit: "bafy-3aab", OK: true}, st.Repos["did:plc:a"], "revs only move forward")
		require.Equal(t, "deactivated", st.Accounts["did:plc:b"])
		require.Equal(t, map[string]int64{"r1": 7, "r2": 9}, st.Cursors, "cursors only move forward")
		h, err := cursor.ContentHash(idf)
		require.NoError(t, err)
		require.Contains(t, st.Hashes, h)

		old := now.Add(-48 * time.Hour)
		require.NoError(t, s.Write(ctx, []cursor.Entry{entry(1, "c", "did:plc:c", "3zzz", "r1", 1, old, []byte{9})}))
		n, err := s.Trim(ctx, now.Add(-24*time.Hour))
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		tr, err := s.Trimmed(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, tr)
	})
}

// A database a newer pdsmux wrote is refused, naming it, on every
// backend.
func TestStore_RefusesNewerSchemaNamingTheDatabase(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		require.NoError(t, store.SetSchemaVersionForTest(ctx, s, store.SchemaVersion+1))
		require.NoError(t, s.Close())
		// a newer pdsmux wrote this database
		_, err := store.Open(ctx, url, "")
		require.ErrorIs(t, err, store.ErrNewerSchema)
		require.Contains(t, err.Error(), strings.TrimPrefix(url, "file:"))
	})
}

func TestStore_CorruptFileIsAClearError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pdsmux.db")
	require.NoError(t, os.WriteFile(path, []byte("this is not a database, it is a grocery list: eggs, milk"), 0o644))
	_, err := store.Open(context.Background(), "file:"+path, "")
	require.Error(t, err)
	require.Contains(t, err.Error(), path)
}

// A database file that cannot be written says why: its directory is
// missing, not a directory or not writable (not "is it a SQLite database?").
func TestStore_UnusableDirectoryIsNamed(t *testing.T) {
	tmp := t.TempDir()
	notDir := filepath.Join(tmp, "plain")
	require.NoError(t, os.WriteFile(notDir, nil, 0o644))
	readOnly := filepath.Join(tmp, "ro")
	require.NoError(t, os.Mkdir(readOnly, 0o500))
	if os.Geteuid() == 0 {
		readOnly = "/proc" // root writes any mode 0500 directory; nobody writes /proc
	}
	for _, c := range []struct{ path, want string }{
		{filepath.Join(tmp, "missing", "pdsmux.db"), "directory " + filepath.Join(tmp, "missing") + " does not exist"},
		{filepath.Join(notDir, "pdsmux.db"), notDir + " is not a directory"},
		{filepath.Join(readOnly, "pdsmux.db"), "directory " + readOnly + " is not writable"},
	} {
		_, err := store.Open(context.Background(), "file:"+c.path, "")
		require.Error(t, err, c.path)
		require.Contains(t, err.Error(), c.want)
		require.NotContains(t, err.Error(), "SQLite")
	}
}

func TestStore_BadURLs(t *testing.T) {
	for _, u := range []string{"postgres://x/y", "file://host/path", "::", "libsql://:t0k/en@127.0.0.1:1", "http://127.0.0.1:1?authToken=t0k%zzen"} {
		_, err := store.Open(context.Background(), u, "")
		require.ErrorIs(t, err, store.ErrBadURL, u)
		require.NotContains(t, err.Error(), "t0k", "the error shows no part of a secret")
	}
}

// Frames dropped before they could be archived still advance the
// checkpoint, and mark the archive as trimmed past them.
func TestStore_GapKeepsCheckpointAndMarksTrim(t *testing.T) {
	forEachBackend(t, gapKeepsCheckpoint)
}

func gapKeepsCheckpoint(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	now := time.Now()
	require.NoError(t, s.Write(ctx, []cursor.Entry{entry(5, "c", "did:plc:a", "3aaa", "r1", 50, now, []byte{1})}))
	require.NoError(t, s.WriteGap(ctx, []cursor.Entry{
		{Seq: 6, Kind: "c", DID: "did:plc:a", Rev: "3aab", Commit: "bafy-3aab", Source: "r1", UpstreamSeq: 51, Time: now},
		{Seq: 7, Kind: "c", DID: "did:plc:b", Rev: "3bbb", Commit: "bafy-3bbb", Source: "r2", UpstreamSeq: 9, Time: now},
	}))
	st, err := s.State(ctx, time.Hour)
	require.NoError(t, err)
	require.EqualValues(t, 7, st.HighWater)
	require.Equal(t, "3aab", st.Repos["did:plc:a"].Rev)
	require.Equal(t, "3bbb", st.Repos["did:plc:b"].Rev)
	require.Equal(t, map[string]int64{"r1": 51, "r2": 9}, st.Cursors)
	tr, err := s.Trimmed(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 7, tr)
	es, err := s.Range(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, es, 1, "no frames for the gap")
}

// A write is all or nothing: when one of its statements fails, none of
// it lands, on either backend (a transaction for the file, one
// BEGIN...COMMIT pipeline request with ROLLBACK for a server).
func TestStore_FailedWriteLeavesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		now := time.Now()
		require.NoError(t, s.Write(ctx, []cursor.Entry{entry(1, "c", "did:plc:a", "3aaa", "r1", 1, now, []byte{1})}))
		// Break the accounts table behind the store's back.
		raw, err := sql.Open("libsql", url)
		require.NoError(t, err)
		defer raw.Close()
		_, err = raw.ExecContext(ctx, `DROP TABLE accounts`)
		require.NoError(t, err)
		err = s.Write(ctx, []cursor.Entry{
			entry(2, "c", "did:plc:a", "3aab", "r1", 2, now, []byte{2}),
			{Seq: 3, Kind: "a", DID: "did:plc:b", Status: "deactivated", Source: "r1", UpstreamSeq: 3, Time: now, Frame: []byte{3}},
		})
		require.Error(t, err)
		require.Contains(t, err.Error(), "archive seqs 2-3")
		es, err := s.Range(ctx, 0, 10)
		require.NoError(t, err)
		require.Len(t, es, 1, "the failed write's events are not archived")
		hw, err := s.HighWater(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, hw, "nor is its high-water mark")
	})
}

// The archiver's largest write (writeChunk entries, several multi-row
// INSERTs) round-trips every frame byte for byte, on a server too.
func TestStore_LargeWriteRoundTrips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		now := time.Now()
		var es []cursor.Entry
		for i := range 1000 {
			f := make([]byte, 100+i%700)
			for j := range f {
				f[j] = byte(i + j)
			}
			es = append(es, entry(int64(i+1), "c", fmt.Sprintf("did:plc:%03d", i%50), fmt.Sprintf("3r%06d", i), "r1", int64(i+1), now, f))
		}
		require.NoError(t, s.Write(ctx, es))
		got, err := s.Range(ctx, 0, 2000)
		require.NoError(t, err)
		require.Len(t, got, len(es))
		for i := range es {
			require.Equal(t, es[i].Seq, got[i].Seq)
			require.Equal(t, es[i].Frame, got[i].Frame, "seq %d", es[i].Seq)
		}
		st, err := s.State(ctx, time.Hour)
		require.NoError(t, err)
		require.Len(t, st.Repos, 50)
		require.Equal(t, "3r000999", st.Repos["did:plc:049"].Rev)
	})
}

// A server that went away is an error naming the database, not a hang or
// a panic; the archiver keeps the entries queued and retries.
func TestStore_ServerDownIsAClearError(t *testing.T) {
	ctx := context.Background()
	srv := libsqlserver.Start(t)
	s := open(t, srv.URL)
	srv.Kill()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := s.Write(ctx, []cursor.Entry{entry(1, "c", "did:plc:a", "3aaa", "r1", 1, time.Now(), []byte{1})})
	require.Error(t, err)
	require.Contains(t, err.Error(), srv.URL)
}

func TestStore_BornIsRecordedOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := open(t, url)
		first := time.UnixMilli(1_700_000_000_123)
		got, err := s.Born(ctx, first)
		require.NoError(t, err)
		require.True(t, got.Equal(first), "got %v", got)
		got, err = s.Born(ctx, first.Add(time.Hour))
		require.NoError(t, err)
		require.True(t, got.Equal(first), "a later start keeps the first start time, got %v", got)
	})
}

// Two pdsmux of an HA pair on one host open the embedded database at the
// same moment: both open it (the first switch to WAL mode and the schema
// wait on the other's lock instead of failing with SQLITE_BUSY, which a
// tester saw reported as a bad --db-url).
func TestStore_TwoOpenTheSameNewFileAtOnce(t *testing.T) {
	for i := range 10 {
		url := "file:" + filepath.Join(t.TempDir(), fmt.Sprintf("pair%d.db", i))
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				s, err := store.Open(context.Background(), url, "")
				if err == nil {
					err = s.Close()
				}
				errs <- err
			}()
		}
		require.NoError(t, <-errs)
		require.NoError(t, <-errs)
	}
}

// The archive's ID is drawn once and kept: the two pdsmux of a pair on one
// database (both asking at once) get the same one, another database a
// different one.
func TestStore_ID(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		a, b := open(t, url), open(t, url)
		ids := make(chan string, 2)
		for _, s := range []*store.Store{a, b} {
			go func() {
				id, err := s.ID(ctx)
				assert.NoError(t, err)
				ids <- id
			}()
		}
		first, second := <-ids, <-ids
		require.Regexp(t, `^[0-9a-f]{32}$`, first)
		require.Equal(t, first, second)
		again, err := a.ID(ctx)
		require.NoError(t, err)
		require.Equal(t, first, again)
		other, err := open(t, newFile(t)).ID(ctx)
		require.NoError(t, err)
		require.NotEqual(t, first, other)
	})
}

// An archive_id that is not one (a hand-edited meta table) is an error
// naming the database, not a claim that can never be made.
func TestStore_IDCorrupt(t *testing.T) {
	url := newFile(t)
	s := open(t, url)
	db, err := sql.Open("sqlite", url)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`INSERT INTO meta (key, value) VALUES ('archive_id', '') ON CONFLICT (key) DO UPDATE SET value = excluded.value`)
	require.NoError(t, err)
	_, err = s.ID(context.Background())
	require.ErrorContains(t, err, "not 32 hex digits")
	require.ErrorContains(t, err, url)
}
