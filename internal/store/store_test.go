package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/store"
)

// backends are the databases every store test runs against. The
// embedded file is the default deployment; no libsql server can be
// installed on this machine, so remote URLs are covered by Open's URL
// handling only.
var backends = map[string]func(t *testing.T) string{
	"file": func(t *testing.T) string { return "file:" + filepath.Join(t.TempDir(), "pdsmux.db") },
}

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
	for name, newURL := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t, newURL(t))
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
}

func TestStore_RefusesNewerSchemaNamingTheFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pdsmux.db")
	s := open(t, "file:"+path)
	require.NoError(t, s.Close())
	// a newer pdsmux wrote this file
	s2, err := store.Open(ctx, "file:"+path, "")
	require.NoError(t, err)
	require.NoError(t, store.SetSchemaVersionForTest(ctx, s2, store.SchemaVersion+1))
	require.NoError(t, s2.Close())
	_, err = store.Open(ctx, "file:"+path, "")
	require.ErrorIs(t, err, store.ErrNewerSchema)
	require.Contains(t, err.Error(), path)
}

func TestStore_CorruptFileIsAClearError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pdsmux.db")
	require.NoError(t, os.WriteFile(path, []byte("this is not a database, it is a grocery list: eggs, milk"), 0o644))
	_, err := store.Open(context.Background(), "file:"+path, "")
	require.Error(t, err)
	require.Contains(t, err.Error(), path)
}

func TestStore_BadURLs(t *testing.T) {
	for _, u := range []string{"postgres://x/y", "file://host/path", "::"} {
		_, err := store.Open(context.Background(), u, "")
		require.ErrorIs(t, err, store.ErrBadURL, u)
	}
	require.Equal(t, "libsql://db.example.com?authToken=xxxxx", store.Redact("libsql://db.example.com?authToken=secret"))
}

// Frames dropped before they could be archived still advance the
// checkpoint, and mark the archive as trimmed past them.
func TestStore_GapKeepsCheckpointAndMarksTrim(t *testing.T) {
	ctx := context.Background()
	s := open(t, backends["file"](t))
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
