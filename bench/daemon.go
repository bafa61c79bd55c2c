package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pdsmux/pdsmux/internal/testenv"
)

// daemon is the system under test: pdsmux (with its redis-server) or
// rainbow.
type daemon struct {
	name    string
	base    string          // http base URL subscribers use
	metrics string          // host:port of /metrics and /debug/pprof (pdsmux)
	procs   []*testenv.Proc // [0] is the daemon itself; the rest helpers (redis)
}

func startPdsmux(env *testenv.Env, name string, ups []*upstream) (*daemon, error) {
	redis, redisURL, err := env.Redis(name + "-redis")
	if err != nil {
		return nil, err
	}
	// repair is not measured here: no PLC (a closed loopback port), no
	// dating of new repos
	args := []string{"--redis-url", redisURL, "--log-level", "warn", "--verify-commit-signatures=false",
		"--plc-url", "http://127.0.0.1:1", "--new-repos", "none",
		"--scan-interval", "1h", "--subscriber-queue", "20000", "--max-subscribers", "5000"}
	for i, u := range ups {
		args = append(args, "--replica", fmt.Sprintf("replica%d=%s", i+1, u.URL()))
	}
	p, err := env.Pdsmux(name, args...)
	if err != nil {
		return nil, err
	}
	return &daemon{name: "pdsmux", base: "http://" + p.Addr, metrics: p.MetricsAddr, procs: []*testenv.Proc{p.Proc, redis}}, nil
}

func startRainbow(env *testenv.Env, name string, up *upstream) (*daemon, error) {
	addrs, err := testenv.FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(env.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p, err := env.Start(name, env.Deps.Rainbow, []string{"--log-level", "warn",
		"--upstream-host", up.URL(), "--api-listen", addrs[0],
		"--metrics-listen", addrs[1],
		"--persist-db", filepath.Join(dir, "rainbow.db"), "--cursor-file", filepath.Join(dir, "cursor"),
		"--collectiondir-host", "http://127.0.0.1:1"})
	if err != nil {
		return nil, err
	}
	base := "http://" + addrs[0]
	if err := testenv.WaitHTTP(base+"/xrpc/_health", 30*time.Second, p); err != nil {
		return nil, err
	}
	return &daemon{name: "rainbow", base: base, procs: []*testenv.Proc{p}}, nil
}

func (d *daemon) stop() {
	for _, p := range d.procs {
		p.Stop(5 * time.Second)
	}
}

// usage sums CPU over the daemon's processes and reports the daemon's own
// memory.
func (d *daemon) usage() (rss, peak int64, cpu, helperCPU time.Duration) {
	for i, p := range d.procs {
		r, pk, c := testenv.ProcStat(p.Pid())
		if i == 0 {
			rss, peak, cpu = r, pk, c
		} else {
			helperCPU += c
		}
	}
	return
}
