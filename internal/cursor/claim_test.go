package cursor_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/cursor"
)

// Processes that archive to one database share the log; one with another
// archive is refused while an older claim naming the first lives, and
// gets the log once every such claim was released or lapsed. Claims are
// listed oldest first, with who made them.
func TestClaimArchive_OneArchivePerLog(t *testing.T) {
	l, srv := newLog(t, cursor.Config{})
	ctx := context.Background()
	claim := func(c *cursor.Claim, ttl time.Duration) *cursor.Claim {
		t.Helper()
		other, err := l.ClaimArchive(ctx, c, ttl)
		require.NoError(t, err)
		return other
	}
	p1 := &cursor.Claim{Archive: "A", Process: "p1", Info: "host a, listen 127.0.0.1:2470"}
	p2 := &cursor.Claim{Archive: "A", Process: "p2"}
	p3 := &cursor.Claim{Archive: "B", Process: "p3", Info: "host c"}
	require.Nil(t, claim(p1, time.Minute))
	require.Positive(t, p1.Since, "the first claim sets since")
	after(t, srv.Client(), p1.Since)
	require.Nil(t, claim(p2, time.Minute), "an HA pair on one archive")
	since := p1.Since
	require.Nil(t, claim(p1, time.Minute), "claiming again renews the claim")
	require.Equal(t, since, p1.Since, "and keeps its age")

	o := claim(p3, time.Minute)
	require.NotNil(t, o, "another archive is refused")
	require.Equal(t, "A", o.Archive)
	require.Equal(t, "p1", o.Process, "the oldest claim is named")
	require.Equal(t, "host a, listen 127.0.0.1:2470", o.Info)
	require.InDelta(t, time.Minute, o.Lapses, float64(5*time.Second))
	require.Zero(t, p3.Since, "the refused claim got no age")
	n, err := srv.Client().ZCard(ctx, "{pdsmux}:users").Result()
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "the refused claim wrote nothing")
	cs, err := l.Claims(ctx)
	require.NoError(t, err)
	require.Len(t, cs, 2)
	require.Equal(t, []string{"p1", "p2"}, []string{cs[0].Process, cs[1].Process})

	require.NoError(t, l.ReleaseArchive(ctx, *p1))
	o = claim(p3, time.Minute)
	require.NotNil(t, o, "p2 still archives to A")
	require.Equal(t, "p2", o.Process)
	require.NoError(t, l.ReleaseArchive(ctx, *p2))
	require.Nil(t, claim(p3, time.Minute), "nobody archives to A any more")

	// a killed process (no release) stops counting once its claim lapses
	require.NoError(t, l.ReleaseArchive(ctx, *p3))
	p4 := &cursor.Claim{Archive: "C", Process: "p4"}
	require.Nil(t, claim(p4, 300*time.Millisecond))
	p5 := &cursor.Claim{Archive: "D", Process: "p5"}
	require.NotNil(t, claim(p5, time.Minute))
	require.Eventually(t, func() bool { return claim(p5, time.Minute) == nil }, 10*time.Second, 20*time.Millisecond,
		"the killed process's claim lapses")

	_, err = l.ClaimArchive(ctx, &cursor.Claim{Archive: "D E", Process: "p6"}, time.Minute)
	require.ErrorContains(t, err, "free of spaces")
}

// Redis lost the claims while a pair served the log: a process with
// another archive that claims in the gap does not push the pair out. The
// pair's renewed claims keep their age, and the newcomer is refused at
// its next claim.
func TestClaimArchive_OlderClaimKeepsTheLog(t *testing.T) {
	l, srv := newLog(t, cursor.Config{})
	ctx := context.Background()
	a := &cursor.Claim{Archive: "A", Process: "a"}
	_, err := l.ClaimArchive(ctx, a, time.Minute)
	require.NoError(t, err)
	require.NoError(t, srv.Client().FlushAll(ctx).Err())
	after(t, srv.Client(), a.Since)

	b := &cursor.Claim{Archive: "B", Process: "b"}
	o, err := l.ClaimArchive(ctx, b, time.Minute)
	require.NoError(t, err)
	require.Nil(t, o, "the newcomer claims the empty log")
	o, err = l.ClaimArchive(ctx, a, time.Minute)
	require.NoError(t, err)
	require.Nil(t, o, "the older claim is made again beside the younger one")
	o, err = l.ClaimArchive(ctx, b, time.Minute)
	require.NoError(t, err)
	require.NotNil(t, o, "the newcomer's next claim finds the older one")
	require.Equal(t, "A", o.Archive)

	// equal age: the smaller archive ID keeps the log
	c := &cursor.Claim{Archive: "C", Process: "c", Since: 5}
	d := &cursor.Claim{Archive: "D", Process: "d", Since: 5}
	require.NoError(t, srv.Client().FlushAll(ctx).Err())
	o, err = l.ClaimArchive(ctx, d, time.Minute)
	require.NoError(t, err)
	require.Nil(t, o)
	o, err = l.ClaimArchive(ctx, c, time.Minute)
	require.NoError(t, err)
	require.Nil(t, o)
	o, err = l.ClaimArchive(ctx, d, time.Minute)
	require.NoError(t, err)
	require.NotNil(t, o)
	require.Equal(t, "C", o.Archive)
}

// after waits until Redis's clock (ms) is past since, so that the next
// claim is younger.
func after(t *testing.T, c *redis.Client, since int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		now, err := c.Time(context.Background()).Result()
		return err == nil && now.UnixMilli() > since
	}, 5*time.Second, time.Millisecond)
}
