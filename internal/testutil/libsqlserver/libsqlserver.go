package libsqlserver

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pdsmux/pdsmux/internal/loopback"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
)

// Server is one running tursodb --sync-server.
type Server struct {
	URL  string // http://127.0.0.1:port
	Path string // the database file it serves
	proc *proc.Proc
}

// Start launches a server on a new database file and waits until it
// answers a query.
func Start(t testing.TB) *Server {
	t.Helper()
	peers, err := loopback.Peers(os.Stderr, "turso")
	if err != nil {
		t.Fatalf("install tursodb: %v", err)
	}
	bin := peers["TURSODB"]
	addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	s := &Server{URL: "http://" + addr, Path: filepath.Join(t.TempDir(), "remote.db")}
	s.proc = proc.Start(t, "tursodb", bin, []string{s.Path, "--sync-server", addr})
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("tursodb on %s did not answer: %v\n%s", addr, err, s.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	body := `{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/v2/pipeline", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// Kill stops the server with SIGKILL.
func (s *Server) Kill() { s.proc.Kill() }
