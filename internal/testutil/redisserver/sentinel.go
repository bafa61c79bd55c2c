package redisserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pdsmux/pdsmux/internal/testutil"
)

// Failover timings of the test sentinels, scaled down from production's
// 30 s / 3 min so a failover takes a few seconds: a primary is down after
// 1 s without a reply, and a failover that stalls is retried after 4 s.
const (
	DownAfter       = time.Second
	FailoverTimeout = 4 * time.Second
)

// Sentinels are redis-sentinel processes monitoring one primary under
// the name Master, with quorum 2.
type Sentinels struct {
	t     testing.TB
	ports []int
}

// Master is the name the sentinels monitor the primary under.
const Master = "mymaster"

// SentinelOptions shape StartSentinels.
type SentinelOptions struct {
	// Replicas: StartSentinels returns once each sentinel knows this many
	// replicas (so a failover can happen at once).
	Replicas int
	// FailoverTimeout is sentinel's failover-timeout; 0 means
	// FailoverTimeout. Sentinel also waits this long before it repoints a
	// replica that replicates from another address than the primary's
	// (+fix-slave-config, sentinel.c sentinelRefreshInstanceInfo): a test
	// whose replica replicates through a proxy sets it above its run time.
	FailoverTimeout time.Duration
}

// StartSentinels starts n redis-sentinel processes on free loopback ports
// monitoring primary (host:port), and waits until each one knows the
// other sentinels and opts.Replicas replicas. They are killed at cleanup;
// their logs are printed if the test failed.
func StartSentinels(t testing.TB, n int, primary string, opts SentinelOptions) *Sentinels {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		t.Fatalf("redis-sentinel not found in PATH (apt-get install redis-sentinel): %v", err)
	}
	host, port, err := net.SplitHostPort(primary)
	if err != nil {
		t.Fatalf("redisserver: primary %q: %v", primary, err)
	}
	failoverTimeout := opts.FailoverTimeout
	if failoverTimeout == 0 {
		failoverTimeout = FailoverTimeout
	}
	ss := &Sentinels{t: t}
	for i := range n {
		dir := t.TempDir()
		p := testutil.FreePort(t)
		conf := filepath.Join(dir, "sentinel.conf") // sentinel rewrites it
		logf := filepath.Join(dir, "sentinel.log")
		text := strings.Join([]string{
			"port " + strconv.Itoa(p),
			"bind 127.0.0.1",
			"dir " + dir,
			"logfile " + logf,
			fmt.Sprintf("sentinel monitor %s %s %s 2", Master, host, port),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", Master, DownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", Master, failoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", Master),
		}, "\n") + "\n"
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		testutil.DumpOnFailure(t, fmt.Sprintf("redis-sentinel-%d", i+1), logf)
		cmd := exec.Command(bin, conf)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-sentinel: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		ss.ports = append(ss.ports, p)
	}
	ss.waitReady(n-1, opts.Replicas, 30*time.Second)
	return ss
}

// Addrs are the sentinels' host:port.
func (ss *Sentinels) Addrs() []string {
	var out []string
	for _, p := range ss.ports {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", p))
	}
	return out
}

// URL is a go-redis Sentinel URL for the monitored primary, the form
// pdsmux's --redis-url takes.
func (ss *Sentinels) URL() string {
	a := ss.Addrs()
	u := "redis://" + a[0] + "/0?master_name=" + Master
	for _, x := range a[1:] {
		u += "&addr=" + x
	}
	return u
}

func (ss *Sentinels) client(i int) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: ss.Addrs()[i], MaxRetries: -1})
}

func (ss *Sentinels) waitReady(others, replicas int, within time.Duration) {
	ss.t.Helper()
	deadline := time.Now().Add(within)
	for i := range ss.ports {
		c := ss.client(i)
		var m map[string]string
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m, _ = c.Master(ctx, Master).Result()
			cancel()
			o, _ := strconv.Atoi(m["num-other-sentinels"])
			r, _ := strconv.Atoi(m["num-slaves"])
			if o >= others && r >= replicas {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				ss.t.Fatalf("sentinel %d does not see %d sentinels and %d replicas after %s: %v", i+1, others, replicas, within, m)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
}

// MasterAddr is the primary's host:port as the sentinels report it: the
// answer of a majority (2 of 3), or "" when they disagree or fail.
func (ss *Sentinels) MasterAddr() string { return ss.masterAddr(len(ss.ports)/2 + 1) }

// AgreedMaster is the primary as every sentinel reports it, or "" while
// they disagree or one does not answer.
func (ss *Sentinels) AgreedMaster() string { return ss.masterAddr(len(ss.ports)) }

// masterAddr is the primary as at least need sentinels report it, or "".
func (ss *Sentinels) masterAddr(need int) string {
	votes := map[string]int{}
	for i := range ss.ports {
		c := ss.client(i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		a, err := c.GetMasterAddrByName(ctx, Master).Result()
		cancel()
		c.Close()
		if err == nil && len(a) == 2 {
			votes[net.JoinHostPort(a[0], a[1])]++
		}
	}
	for a, v := range votes {
		if v >= need {
			return a
		}
	}
	return ""
}

// WaitFailover waits until every sentinel reports a primary other than
// old, and returns it. A majority is not enough before old comes back: a
// sentinel that missed the switch would start a failover of its own and
// could promote old again.
func (ss *Sentinels) WaitFailover(old string, within time.Duration) string {
	ss.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if a := ss.masterAddr(len(ss.ports)); a != "" && a != old {
			return a
		}
		time.Sleep(50 * time.Millisecond)
	}
	ss.t.Fatalf("no failover away from %s within %s", old, within)
	return ""
}
