package redisserver

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/testutil"
)

// Options for a server.
type Options struct {
	// AppendFsync enables the AOF with this policy ("everysec", "always",
	// "no"); "" leaves persistence off.
	AppendFsync string
	// Password is set as requirepass; URL and Client carry it.
	Password string
	// Cluster starts the server with cluster mode on (its bus on another
	// free loopback port); StartCluster joins such servers into a cluster.
	Cluster bool
	// ReplicaOf starts the server as a replica of this host:port.
	ReplicaOf string
}

// Server is one redis-server process.
type Server struct {
	t       testing.TB
	opts    Options
	dir     string
	port    int
	busPort int // cluster bus, when Options.Cluster

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start launches redis-server and waits until it answers PING. The server
// is killed at test cleanup; its log is printed if the test failed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found in PATH (apt-get install redis-server): %v", err)
	}
	s := &Server{t: t, opts: opts, dir: t.TempDir(), port: testutil.FreePort(t)}
	testutil.DumpOnFailure(t, "redis-server", s.logPath())
	t.Cleanup(func() { s.Kill() })
	s.start(bin)
	return s
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "redis.log") }

func (s *Server) start(bin string) {
	s.t.Helper()
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--logfile", s.logPath(),
		"--protected-mode", "yes",
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password)
	}
	if s.opts.Cluster {
		if s.busPort == 0 {
			s.busPort = testutil.FreePort(s.t)
		}
		args = append(args, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(s.busPort))
	}
	if s.opts.AppendFsync != "" {
		args = append(args, "--appendonly", "yes", "--appendfsync", s.opts.AppendFsync)
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.opts.ReplicaOf != "" {
		host, port, err := net.SplitHostPort(s.opts.ReplicaOf)
		if err != nil {
			s.t.Fatalf("redisserver: ReplicaOf %q: %v", s.opts.ReplicaOf, err)
		}
		args = append(args, "--replicaof", host, port)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	go func() { _ = cmd.Wait(); close(done) }()

	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.opts.Password, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s did not answer: %v", s.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL is a redis:// URL for the server, with its password if it has one.
func (s *Server) URL() string {
	if s.opts.Password != "" {
		return "redis://" + url.UserPassword("", s.opts.Password).String() + "@" + s.Addr() + "/0"
	}
	return "redis://" + s.Addr() + "/0"
}

// Dir is the server's data directory (holds the AOF).
func (s *Server) Dir() string { return s.dir }

// Client returns a go-redis client closed at cleanup.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.opts.Password})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Blocked is how many of the server's clients are blocked in cmd (lower
// case, e.g. "xread") now, by CLIENT LIST.
func (s *Server) Blocked(cmd string) int {
	s.t.Helper()
	// a client of its own, closed here: tests poll this, and Client would
	// add a cleanup for each call
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.opts.Password})
	list, err := c.ClientList(context.Background()).Result()
	_ = c.Close()
	if err != nil {
		s.t.Fatalf("CLIENT LIST on %s: %v", s.Addr(), err)
	}
	n := 0
	for _, l := range strings.Split(list, "\n") {
		if strings.Contains(l, " cmd="+cmd+" ") && strings.Contains(l, " flags=b ") {
			n++
		}
	}
	return n
}

// Kill stops the server with SIGKILL (a crash: no final AOF flush).
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("redis-server pid %d did not exit after SIGKILL", cmd.Process.Pid)
	}
}

// Restart starts the server again on the same port and directory, so it
// reloads its AOF if it had one.
func (s *Server) Restart() {
	s.t.Helper()
	bin, _ := exec.LookPath("redis-server")
	s.start(bin)
}

// RestartReplicaOf starts the (stopped) server again as a replica of
// addr, as an operator brings a failed primary back after a failover.
func (s *Server) RestartReplicaOf(addr string) {
	s.t.Helper()
	s.opts.ReplicaOf = addr
	s.Restart()
}

// IsReplicaOf reports whether the server is, right now, a replica of addr
// with its link up (INFO replication: role, master_port,
// master_link_status).
func (s *Server) IsReplicaOf(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, _ := c.Info(ctx, "replication").Result()
	return strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+port+"\r\n") &&
		strings.Contains(info, "master_link_status:up")
}

// WaitReplicaOf waits until the server is a replica of addr with its link
// up (INFO replication: role, master_port, master_link_status).
func (s *Server) WaitReplicaOf(addr string, within time.Duration) {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(within)
	var info string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, _ = c.Info(ctx, "replication").Result()
		cancel()
		if strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+port+"\r\n") &&
			strings.Contains(info, "master_link_status:up") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("redis-server %s is not a synced replica of %s after %s:\n%s", s.Addr(), addr, within, info)
}

// RemoveAOF deletes the AOF files (the server should be stopped).
func (s *Server) RemoveAOF() {
	_ = os.RemoveAll(filepath.Join(s.dir, "appendonlydir"))
	_ = os.Remove(filepath.Join(s.dir, "appendonly.aof"))
}
