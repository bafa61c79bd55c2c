package fakepds_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/frame"
	"github.com/pdsmux/pdsmux/internal/testutil"
)

// startPinned starts replicas with the store clock pinned, so in
// ModeCocoon every counter gets the same seed (unix seconds of t0), as
// replicas started on an empty table within one second do.
func startPinned(t *testing.T, st *fakepds.Store, t0 time.Time, rs ...*fakepds.Replica) {
	t.Helper()
	restore := st.SetNow(func() time.Time { return t0 })
	defer restore()
	for _, r := range rs {
		require.NoError(t, r.Start(testutil.Listen(t)))
		t.Cleanup(r.Stop)
	}
}

// kindsByDID lists the kinds of the stored events of each DID, in seq order.
func kindsByDID(t *testing.T, st *fakepds.Store) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, b := range st.Events() {
		in, err := frame.Parse(b, 0)
		require.NoError(t, err)
		out[in.DID] = append(out[in.DID], in.Kind.String())
	}
	return out
}

// Cocoon's createAccount emits #identity then #sync, each through the
// sequencer: through a replica whose counter collides, both are lost and
// the first event anyone sees for that repo is a later #commit.
func TestFakePDS_CocoonLosesAccountCreation(t *testing.T) {
	st := fakepds.NewStore(fakepds.ModeCocoon, 1)
	r1, r2 := st.NewReplica("r1"), st.NewReplica("r2")
	startPinned(t, st, time.Now(), r1, r2)

	alice, err := r1.CreateAccount("alice.test")
	require.NoError(t, err)
	require.Equal(t, 0, st.Lost)
	require.Equal(t, 2, st.Emitted)

	bob, err := r2.CreateAccount("bob.test")
	require.NoError(t, err)
	require.Equal(t, 2, st.Lost, "both of bob's creation events collide with alice's seqs")
	require.Equal(t, 2, st.Emitted)
	require.NotNil(t, st.Account(bob.DID), "the account exists although nothing announced it")

	_, emitted, err := r2.Write(bob.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: "p1", Record: fakepds.Post("x", st.Now())})
	require.NoError(t, err)
	require.True(t, emitted, "r2's counter is past r1's now")

	kinds := kindsByDID(t, st)
	require.Equal(t, []string{"identity", "sync"}, kinds[alice.DID], "Cocoon's order, and no #account")
	require.Equal(t, []string{"commit"}, kinds[bob.DID])

	// A single replica never collides: every account gets both events.
	solo := fakepds.NewStore(fakepds.ModeCocoon, 1)
	r := solo.NewReplica("solo")
	startPinned(t, solo, time.Now(), r)
	for i := range 3 {
		_, err := r.CreateAccount(fmt.Sprintf("u%d.test", i))
		require.NoError(t, err)
	}
	require.Equal(t, 0, solo.Lost)
	require.Equal(t, 6, solo.Emitted)
}

type auditEntry struct {
	DID       string         `json:"did"`
	Operation map[string]any `json:"operation"`
	CID       string         `json:"cid"`
	Nullified bool           `json:"nullified"`
	CreatedAt string         `json:"createdAt"`
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

func TestFakePDS_PLCAuditLog(t *testing.T) {
	st := fakepds.NewStore(fakepds.ModeOwn, 1)
	r := st.NewReplica("r1")
	require.NoError(t, r.Start(testutil.Listen(t)))
	t.Cleanup(r.Stop)
	created := time.Date(2026, 11, 30, 6, 40, 0, 120_456_789, time.FixedZone("x", 3600))
	restore := st.SetNow(func() time.Time { return created })
	a, err := r.CreateAccount("alice.test")
	restore()
	require.NoError(t, err)
	require.True(t, a.Created.Equal(created))

	const endpoint = "https://pds.example"
	srv := httptest.NewServer(st.PLCHandler(endpoint))
	t.Cleanup(srv.Close)

	code, body := get(t, srv.URL+"/"+a.DID+"/log/audit")
	require.Equal(t, http.StatusOK, code, "%s", body)
	var log []auditEntry
	require.NoError(t, json.Unmarshal(body, &log))
	require.Len(t, log, 1)
	e := log[0]
	require.Equal(t, a.DID, e.DID)
	require.False(t, e.Nullified)
	require.Equal(t, "2026-11-30T05:40:00.120Z", e.CreatedAt, "UTC, milliseconds")
	ts, err := syntax.ParseDatetime(e.CreatedAt)
	require.NoError(t, err)
	require.True(t, ts.Time().Equal(created.Truncate(time.Millisecond)))

	op := e.Operation
	pub, err := a.Key.PublicKey()
	require.NoError(t, err)
	require.Equal(t, "plc_operation", op["type"])
	require.Equal(t, []any{pub.DIDKey()}, op["rotationKeys"])
	require.Equal(t, map[string]any{"atproto": pub.DIDKey()}, op["verificationMethods"])
	require.Equal(t, []any{"at://alice.test"}, op["alsoKnownAs"])
	require.Equal(t, map[string]any{"atproto_pds": map[string]any{"type": "AtprotoPersonalDataServer", "endpoint": endpoint}}, op["services"])
	prev, ok := op["prev"]
	require.True(t, ok, "prev is present")
	require.Nil(t, prev, "a genesis operation")

	// sig signs the unsigned operation's DAG-CBOR with the rotation key;
	// cid hashes the signed one.
	sigStr, _ := op["sig"].(string)
	sig, err := base64.RawURLEncoding.DecodeString(sigStr)
	require.NoError(t, err)
	unsigned := map[string]any{}
	for k, v := range op {
		if k != "sig" {
			unsigned[k] = v
		}
	}
	ub, err := atdata.MarshalCBOR(unsigned)
	require.NoError(t, err)
	rot, err := atcrypto.ParsePublicDIDKey(op["rotationKeys"].([]any)[0].(string))
	require.NoError(t, err)
	require.NoError(t, rot.HashAndVerify(ub, sig))
	sb, err := atdata.MarshalCBOR(op)
	require.NoError(t, err)
	want, err := blocks.CBORCID(sb)
	require.NoError(t, err)
	require.Equal(t, want.String(), e.CID)

	_, again := get(t, srv.URL+"/"+a.DID+"/log/audit")
	require.Equal(t, body, again, "the log does not change between reads")

	code, body = get(t, srv.URL+"/"+a.DID)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Contains(t, string(body), endpoint)

	for _, p := range []string{"/did:plc:nobody/log/audit", "/did:plc:nobody", "/" + a.DID + "/log"} {
		code, body = get(t, srv.URL+p)
		require.Equal(t, http.StatusNotFound, code, "%s: %s", p, body)
		require.Contains(t, string(body), `"NotFound"`)
	}
}

// History made with the store clock an hour back: Created, event times
// and revs are of an hour ago, revs stay valid TIDs that increase per repo
// (even when the clock stands still or goes back), commits chain and
// verify, and writes after the clock is restored carry revs of now.
func TestFakePDS_HistoryInThePast(t *testing.T) {
	ctx := context.Background()
	st := fakepds.NewStore(fakepds.ModeOwn, 1)
	r := st.NewReplica("r1")
	require.NoError(t, r.Start(testutil.Listen(t)))
	t.Cleanup(r.Stop)

	past := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	restore := st.SetNow(func() time.Time { return past }) // frozen
	var accts []*fakepds.Account
	for i := range 2 {
		a, err := r.CreateAccount(fmt.Sprintf("old%d.test", i))
		require.NoError(t, err)
		require.True(t, a.Created.Equal(past))
		accts = append(accts, a)
	}
	write := func(a *fakepds.Account, rkey string) string {
		rev, emitted, err := r.Write(a.DID, fakepds.Op{Action: "create", Collection: "app.bsky.feed.post", Rkey: rkey, Record: fakepds.Post(rkey, st.Now())})
		require.NoError(t, err)
		require.True(t, emitted)
		return rev
	}
	for i := range 5 {
		for _, a := range accts {
			write(a, fmt.Sprintf("old%d", i))
		}
	}
	restore()
	before := time.Now()
	for i := range 3 {
		for _, a := range accts {
			write(a, fmt.Sprintf("new%d", i))
		}
	}
	after := time.Now()
	// The clock set back again, before all of it: revs still increase.
	restore = st.SetNow(func() time.Time { return past.Add(-time.Hour) })
	backRev := write(accts[0], "back")
	restore()

	type state struct{ rev string }
	dir := st.Directory()
	last := map[string]*state{}
	n := map[string]int{}
	for _, b := range st.Events() {
		in, bb := body(t, b)
		switch in.Kind {
		case frame.KindIdentity:
			require.Equal(t, past.UTC().Format(syntax.AtprotoDatetimeLayout), in.Time)
		case frame.KindSync:
			var ev comatproto.SyncSubscribeRepos_Sync
			require.NoError(t, ev.UnmarshalCBOR(bytes.NewReader(bb)))
			c, err := repo.VerifySyncMessage(ctx, dir, &ev)
			require.NoError(t, err)
			tid, err := syntax.ParseTID(c.Rev)
			require.NoError(t, err)
			require.True(t, tid.Time().Equal(past), "genesis rev %s is of the creation time", c.Rev)
			require.Equal(t, past.UTC().Format(syntax.AtprotoDatetimeLayout), ev.Time)
			last[ev.Did] = &state{rev: c.Rev}
		case frame.KindCommit:
			var ev comatproto.SyncSubscribeRepos_Commit
			require.NoError(t, ev.UnmarshalCBOR(bytes.NewReader(bb)))
			require.NoError(t, repo.VerifyCommitSignature(ctx, dir, &ev))
			_, err := repo.VerifyCommitMessage(ctx, &ev)
			require.NoError(t, err)
			tid, err := syntax.ParseTID(ev.Rev)
			require.NoError(t, err)
			s := last[ev.Repo]
			require.NotNil(t, s)
			require.NotNil(t, ev.Since)
			require.Equal(t, s.rev, *ev.Since, "chain")
			require.Greater(t, ev.Rev, s.rev, "revs increase")
			k := n[ev.Repo]
			switch {
			case k < 5: // frozen an hour back: 1 µs apart
				require.WithinDuration(t, past, tid.Time(), time.Millisecond)
				require.Equal(t, past.UTC().Format(syntax.AtprotoDatetimeLayout), ev.Time)
			case k < 8:
				require.False(t, tid.Time().Before(before.Truncate(time.Microsecond)), "rev %s after restore", ev.Rev)
				require.False(t, tid.Time().After(after), "rev %s after restore", ev.Rev)
			default: // the clock went back: 1 µs past the last rev
				require.Equal(t, backRev, ev.Rev)
				prevTID, err := syntax.ParseTID(s.rev)
				require.NoError(t, err)
				require.Equal(t, prevTID.Time().Add(time.Microsecond), tid.Time())
			}
			n[ev.Repo]++
			s.rev = ev.Rev
		}
	}
	require.Equal(t, 9, n[accts[0].DID])
	require.Equal(t, 8, n[accts[1].DID])
	for _, a := range accts {
		require.Equal(t, a.Rev(), last[a.DID].rev)
	}
}
