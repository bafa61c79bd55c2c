package pdsmuxd_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// A keep-alive connection left idle on the main listener is closed by
// pdsmux (IdleTimeout; 150 s by default, shortened here).
func TestServe_IdleKeepAliveClosed(t *testing.T) {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	rt, err := pdsmuxd.Build(context.Background(), e.config(), pdsmuxd.Options{
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		Listener:        testutil.Listen(t),
		MetricsListener: testutil.Listen(t),
		Directory:       e.store.Directory(),
		Age:             e.store,
		IdleTimeout:     300 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		c, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		_ = rt.Close(c)
	})

	c, err := net.Dial("tcp", rt.Addr())
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET /xrpc/_health HTTP/1.1\r\nHost: pdsmux\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.False(t, resp.Close, "kept alive after the answer")

	// pdsmux closes it: the read ends with EOF well before the deadline.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = br.ReadByte()
	require.True(t, errors.Is(err, io.EOF), "want EOF from pdsmux closing the idle connection, got %v", err)
	require.Equal(t, pdsmuxd.DefaultIdleTimeout, 150*time.Second)
}
