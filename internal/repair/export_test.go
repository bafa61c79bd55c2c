package repair

import (
	"context"
	"net/http"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/ipfs/go-cid"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/pool"
)

// BuildCommitForTest runs the synthesis against one replica (test seam).
func BuildCommitForTest(ctx context.Context, rep *pool.Replica, did, since string, prevCommit, head cid.Cid) (*comatproto.SyncSubscribeRepos_Commit, int, error) {
	src := &source{api: newReplicaAPI(rep, http.DefaultClient, "test"), cache: newBlockCache(DefaultCacheBytes), did: did}
	store := blocks.NewSet()
	hc, hb, err := src.commit(ctx, store, head)
	if err != nil {
		return nil, 0, err
	}
	return src.buildCommit(ctx, since, prevCommit, head, hc, hb, time.Now())
}

// BackOffForTest records a failed repair of did (test seam).
func BackOffForTest(r *Repairer, did string, now time.Time) (time.Duration, bool) {
	r.now = func() time.Time { return now }
	at, loud := r.backOff(did)
	return at.Sub(now), loud
}
