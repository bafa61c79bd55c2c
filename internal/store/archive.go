package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// eventRows bounds the rows of one multi-row INSERT (7 values each,
// well under SQLite's variable limit).
const eventRows = 200

// Write archives entries in one transaction and advances the checkpoint:
// each repo's rev (only forward), each account's status, each replica's
// cursor (only forward) and the seq high-water mark. Entries already
// archived are ignored, so overlapping writers (two pdsmux, a backfill
// beside the live feed) are safe. An error names the database and the
// seqs; nothing was written, unless a server's answer was lost (see
// Backend.Exec): writing the same entries again is always safe.
func (s *Store) Write(ctx context.Context, entries []cursor.Entry) error {
	return s.write(ctx, entries, false)
}

// WriteGap records entries the archive cannot hold (Redis trimmed them
// before the Archiver read them): their frames are not stored, the
// checkpoint still advances by whatever they carry (repo revs, statuses,
// cursors, high-water mark), and the trim mark moves past them, so a
// subscriber whose replay would cross the hole is told OutdatedCursor
// instead of silently missing events. An entry with only a Seq (and
// UpstreamSeq -1) marks every seq up to it.
func (s *Store) WriteGap(ctx context.Context, entries []cursor.Entry) error {
	return s.write(ctx, entries, true)
}

func (s *Store) write(ctx context.Context, entries []cursor.Entry, gap bool) error {
	if len(entries) == 0 {
		return nil
	}
	hw := int64(0)
	cursors := map[string]int64{}
	repos := map[string]cursor.Entry{}    // did -> newest rev in the batch
	accounts := map[string]cursor.Entry{} // did -> newest status in the batch
	for _, e := range entries {
		hw = max(hw, e.Seq)
		if c := e.CheckpointCursor(); c >= 0 {
			cursors[e.Source] = max(cursors[e.Source], c)
		}
		switch e.Kind {
		case "c", "s":
			if old, ok := repos[e.DID]; !ok || e.Rev > old.Rev {
				repos[e.DID] = e
			}
		case "a":
			if old, ok := accounts[e.DID]; !ok || e.Seq > old.Seq {
				accounts[e.DID] = e
			}
		}
	}

	var stmts []Stmt
	for start := 0; !gap && start < len(entries); start += eventRows {
		chunk := entries[start:min(start+eventRows, len(entries))]
		var q strings.Builder
		q.WriteString(`INSERT OR IGNORE INTO events (seq, time_ms, kind, did, rev, source, frame) VALUES `)
		args := make([]any, 0, 7*len(chunk))
		for i, e := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?, ?, ?, ?, ?, ?, ?)")
			args = append(args, e.Seq, e.Time.UnixMilli(), e.Kind, e.DID, e.Rev, e.Source, e.Frame)
		}
		stmts = append(stmts, Stmt{q.String(), args})
	}
	for did, e := range repos {
		stmts = append(stmts, Stmt{`INSERT INTO repos (did, rev, commit_cid, seq) VALUES (?, ?, ?, ?)
			ON CONFLICT (did) DO UPDATE SET rev = excluded.rev, commit_cid = excluded.commit_cid, seq = excluded.seq
			WHERE excluded.rev > repos.rev`, []any{did, e.Rev, e.Commit, e.Seq}})
	}
	for did, e := range accounts {
		stmts = append(stmts, Stmt{`INSERT INTO accounts (did, status, seq) VALUES (?, ?, ?)
			ON CONFLICT (did) DO UPDATE SET status = excluded.status, seq = excluded.seq
			WHERE excluded.seq > accounts.seq`, []any{did, e.Status, e.Seq}})
	}
	for r, c := range cursors {
		stmts = append(stmts, Stmt{`INSERT INTO cursors (replica, cursor) VALUES (?, ?)
			ON CONFLICT (replica) DO UPDATE SET cursor = max(cursor, excluded.cursor)`, []any{r, c}})
	}
	stmts = append(stmts, setMetaMax("high_water", hw))
	if gap {
		stmts = append(stmts, setMetaMax("trimmed", hw))
	}
	if err := s.b.Exec(ctx, stmts); err != nil {
		return fmt.Errorf("store %s: archive seqs %d-%d: %w", s.name, entries[0].Seq, entries[len(entries)-1].Seq, err)
	}
	return nil
}

// setMetaMax raises the integer kept under key to v (never lowers it).
func setMetaMax(key string, v int64) Stmt {
	return Stmt{`INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)`,
		[]any{key, strconv.FormatInt(v, 10)}}
}

func (s *Store) metaInt(ctx context.Context, key string) (int64, error) {
	var v string
	rows, err := s.b.Read(ctx, `SELECT value FROM meta WHERE key = ?`, key)
	err = scanOne(rows, err, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store %s: read %s: %w", s.name, key, err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("store %s: %s is %q, not a number (corrupt meta table)", s.name, key, v)
	}
	return n, nil
}

// HighWater is the highest archived seq (0 when empty). It reads beside
// a write in progress (Backend.Read); errors name the database.
func (s *Store) HighWater(ctx context.Context) (int64, error) { return s.metaInt(ctx, "high_water") }

// Trimmed is the highest seq dropped by retention or recorded as a hole
// (WriteGap), 0 when none. Errors as HighWater.
func (s *Store) Trimmed(ctx context.Context) (int64, error) { return s.metaInt(ctx, "trimmed") }

// Range returns up to count archived entries with seq > after, oldest
// first. It reads beside a write in progress (Backend.Read); errors name
// the database.
func (s *Store) Range(ctx context.Context, after, count int64) ([]cursor.Entry, error) {
	rows, err := s.b.Read(ctx, `SELECT seq, time_ms, kind, did, rev, source, frame FROM events
		WHERE seq > ? ORDER BY seq LIMIT ?`, after, count)
	if err != nil {
		return nil, fmt.Errorf("store %s: read archive after %d: %w", s.name, after, err)
	}
	defer rows.Close()
	var out []cursor.Entry
	for rows.Next() {
		var e cursor.Entry
		var ms int64
		if err := rows.Scan(&e.Seq, &ms, &e.Kind, &e.DID, &e.Rev, &e.Source, &e.Frame); err != nil {
			return nil, fmt.Errorf("store %s: read archive: %w", s.name, err)
		}
		e.Time = time.UnixMilli(ms)
		e.UpstreamSeq = -1
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store %s: read archive: %w", s.name, err)
	}
	return out, nil
}

// Trim drops archived events older than before and records the highest
// seq dropped.
func (s *Store) Trim(ctx context.Context, before time.Time) (int64, error) {
	// Seqs grow with time, so the newest old event bounds what goes; later
	// writes only add higher seqs, so reading it first is safe.
	var top sql.NullInt64
	rows, err := s.b.Query(ctx, `SELECT max(seq) FROM events WHERE time_ms < ?`, before.UnixMilli())
	if err := scanOne(rows, err, &top); err != nil {
		return 0, fmt.Errorf("store %s: trim: %w", s.name, err)
	}
	if !top.Valid {
		return 0, nil
	}
	var n int64
	rows, err = s.b.Query(ctx, `SELECT count(*) FROM events WHERE seq <= ?`, top.Int64)
	if err := scanOne(rows, err, &n); err != nil {
		return 0, fmt.Errorf("store %s: trim: %w", s.name, err)
	}
	if err := s.b.Exec(ctx, []Stmt{
		{`DELETE FROM events WHERE seq <= ?`, []any{top.Int64}},
		setMetaMax("trimmed", top.Int64),
	}); err != nil {
		return 0, fmt.Errorf("store %s: trim: %w", s.name, err)
	}
	return n, nil
}

// State reads the checkpoint for cursor.Log.Reconcile: repos, accounts,
// cursors, the high-water mark, and the content hashes of #sync, #identity,
// #account and unknown events newer than dedupWindow.
func (s *Store) State(ctx context.Context, dedupWindow time.Duration) (cursor.DurableState, error) {
	st := cursor.DurableState{Repos: map[string]cursor.RepoState{}, Accounts: map[string]string{}, Cursors: map[string]int64{}, Hashes: map[string]time.Time{}}
	var err error
	if st.HighWater, err = s.HighWater(ctx); err != nil {
		return st, err
	}
	q := func(query string, args []any, scan func(*sql.Rows) error) error {
		rows, err := s.b.Query(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("store %s: %w", s.name, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return fmt.Errorf("store %s: %w", s.name, err)
			}
		}
		return rows.Err()
	}
	if err := q(`SELECT did, rev, commit_cid FROM repos`, nil, func(r *sql.Rows) error {
		var did string
		var rs cursor.RepoState
		if err := r.Scan(&did, &rs.Rev, &rs.Commit); err != nil {
			return err
		}
		rs.OK = true
		st.Repos[did] = rs
		return nil
	}); err != nil {
		return st, err
	}
	if err := q(`SELECT did, status FROM accounts`, nil, func(r *sql.Rows) error {
		var did, status string
		if err := r.Scan(&did, &status); err != nil {
			return err
		}
		st.Accounts[did] = status
		return nil
	}); err != nil {
		return st, err
	}
	if err := q(`SELECT replica, cursor FROM cursors`, nil, func(r *sql.Rows) error {
		var rep string
		var c int64
		if err := r.Scan(&rep, &c); err != nil {
			return err
		}
		st.Cursors[rep] = c
		return nil
	}); err != nil {
		return st, err
	}
	since := time.Now().Add(-dedupWindow).UnixMilli()
	err = q(`SELECT frame, time_ms FROM events WHERE kind IN ('i', 'a', 'o', 's') AND time_ms > ?`, []any{since}, func(r *sql.Rows) error {
		var f []byte
		var ms int64
		if err := r.Scan(&f, &ms); err != nil {
			return err
		}
		if h, err := cursor.ContentHash(f); err == nil {
			st.Hashes[h] = time.UnixMilli(ms)
		}
		return nil
	})
	return st, err
}

// Born returns when this pdsmux deployment first started (unix ms in the
// meta table), recording now the first time it is asked. Repair tells new
// repos from old ones by it: a repo whose account was created after it is
// announced with its records (see docs/ARCHITECTURE.md).
func (s *Store) Born(ctx context.Context, now time.Time) (time.Time, error) {
	if err := s.b.Exec(ctx, []Stmt{{`INSERT INTO meta (key, value) VALUES ('born', ?) ON CONFLICT (key) DO NOTHING`,
		[]any{strconv.FormatInt(now.UnixMilli(), 10)}}}); err != nil {
		return time.Time{}, fmt.Errorf("store %s: record start time: %w", s.name, err)
	}
	ms, err := s.metaInt(ctx, "born")
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(ms), nil
}

// ID returns the archive's identity: 32 hex digits drawn at random the
// first time it is asked and kept in the meta table, so every pdsmux on
// one database gets the same ID and another database (or this one
// deleted and made again) a different one. The log uses it to tell that
// two pdsmux on one Redis archive to different databases
// (cursor.Log.ClaimArchive). Errors name the database.
func (s *Store) ID(ctx context.Context) (string, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	if err := s.b.Exec(ctx, []Stmt{{`INSERT INTO meta (key, value) VALUES ('archive_id', ?) ON CONFLICT (key) DO NOTHING`,
		[]any{hex.EncodeToString(b[:])}}}); err != nil {
		return "", fmt.Errorf("store %s: record the archive id: %w", s.name, err)
	}
	var id string
	rows, err := s.b.Read(ctx, `SELECT value FROM meta WHERE key = 'archive_id'`)
	if err := scanOne(rows, err, &id); err != nil {
		return "", fmt.Errorf("store %s: read the archive id: %w", s.name, err)
	}
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", fmt.Errorf("store %s: archive_id in the meta table is %q, not 32 hex digits (corrupt meta table)", s.name, id)
	}
	return id, nil
}
