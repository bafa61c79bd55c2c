package consumer

import (
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/stretchr/testify/require"
)

func commit(did string, ops ...*comatproto.SyncSubscribeRepos_RepoOp) Event {
	return Event{Kind: "commit", DID: did, Commit: &comatproto.SyncSubscribeRepos_Commit{Repo: did, Ops: ops}}
}

func op(action, path string) *comatproto.SyncSubscribeRepos_RepoOp {
	return &comatproto.SyncSubscribeRepos_RepoOp{Action: action, Path: path}
}

func TestConsumer_RecordsAndKinds(t *testing.T) {
	c := &Consumer{notify: make(chan struct{}, 1), done: make(chan struct{})}
	require.Empty(t, c.Records())
	require.Empty(t, c.Kinds())

	c.add(Event{Seq: 1, Kind: "identity", DID: "did:plc:a"})
	c.add(Event{Seq: 2, Kind: "sync", DID: "did:plc:a"})
	c.add(commit("did:plc:a",
		op("create", "app.bsky.feed.post/p1"),
		op("create", "app.bsky.feed.like/p1"),
		op("update", "app.bsky.actor.profile/self")))
	c.add(commit("did:plc:b", op("create", "app.bsky.feed.post/p1"), op("delete", "app.bsky.feed.post/p0")))
	c.add(commit("did:plc:a", op("create", "app.bsky.feed.post/p1"))) // delivered twice
	c.add(Event{Kind: "commit", DID: "did:plc:c"})                    // no body: nothing to count
	c.add(Event{Kind: "info", Name: "OutdatedCursor"})

	require.Equal(t, map[Record]int{
		{DID: "did:plc:a", Collection: "app.bsky.feed.post", Rkey: "p1"}: 2,
		{DID: "did:plc:a", Collection: "app.bsky.feed.like", Rkey: "p1"}: 1,
		{DID: "did:plc:b", Collection: "app.bsky.feed.post", Rkey: "p1"}: 1,
	}, c.Records())
	require.Equal(t, map[string]int{"identity": 1, "sync": 1, "commit": 4, "info": 1}, c.Kinds())
}

func TestCountRecords_SplitsOnFirstSlash(t *testing.T) {
	got := CountRecords([]Event{commit("did:plc:a", op("create", "a.b.c/x/y"), op("create", "noslash"))})
	require.Equal(t, map[Record]int{
		{DID: "did:plc:a", Collection: "a.b.c", Rkey: "x/y"}: 1,
		{DID: "did:plc:a", Collection: "noslash", Rkey: ""}:  1,
	}, got)
}
