package main

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pdsmux/pdsmux/internal/loopback"
)

// variant is one system under test.
type variant struct {
	id      string // column key
	label   string // column heading
	rainbow bool
	persist string // rainbow: "disk", "tmpfs" or "memory"
	// wait: pdsmux with a second redis-server replicating the first and
	// --redis-wait-replicas 1 (docs/ha.md), to price the replication wait
	wait bool
	// args: further pdsmux flags (a variant off its defaults, to price a
	// default)
	args []string
}

var (
	vPdsmux = variant{id: "pdsmux", label: "pdsmux"}
	vWait   = variant{id: "pdsmux-wait", label: "pdsmux, Redis replica + wait", wait: true}
	// vNoSig prices the door's signature check, the largest share of
	// pdsmux's CPU at saturation (docs/configuration.md)
	vNoSig    = variant{id: "pdsmux-nosig", label: "pdsmux, signatures unchecked", args: []string{"--verify-commit-signatures=false"}}
	vDisk     = variant{id: "rb-disk", label: "rainbow disk", rainbow: true, persist: "disk"}
	vTmpfs    = variant{id: "rb-tmpfs", label: "rainbow tmpfs", rainbow: true, persist: "tmpfs"}
	vMemory   = variant{id: "rb-memory", label: "rainbow memory", rainbow: true, persist: "memory"}
	allSystem = []variant{vPdsmux, vDisk, vTmpfs, vMemory}
	// everySystem lists each variant once (-systems)
	everySystem = []variant{vPdsmux, vNoSig, vWait, vDisk, vTmpfs, vMemory}
)

// durability says what each system keeps when it stops, as run here.
var durability = map[string]string{
	"pdsmux":      "Redis AOF, fsync every second (a power loss can drop the last second of the log; each replica's cursor re-fetches it) + the libsql archive on disk",
	"pdsmux-wait": "as pdsmux, plus a second redis-server replicating the first, and `--redis-wait-replicas 1`: an event reaches subscribers and the archive only once the replica has it (docs/ha.md)",
	"rb-disk":     "pebble on disk, fsync per event (indigo's pebblepersist hard-codes pebble.Sync): every event durable before it is sent",
	"rb-tmpfs":    "pebble on /dev/shm (tmpfs), fsync per event: survives a process restart, not a reboot or power loss",
	"rb-memory":   "no persistence (`--persist-db \"\"`): a ring of the last 20,000 events in process memory, lost on any restart",
}

// daemon is the system under test: pdsmux (with its redis-server) or
// rainbow.
type daemon struct {
	name     string
	base     string           // http base URL subscribers use
	metrics  string           // host:port of /metrics and /debug/pprof (pdsmux)
	redisURL string           // pdsmux's Redis
	procs    []*loopback.Proc // [0] is the daemon itself; the rest helpers (redis)
	cleanup  func()
}

// pinPrefix runs bin on one core when pin is set (taskset, util-linux):
// the Go runtime then sizes GOMAXPROCS to that core, as on a small board.
func pinPrefix(pin bool, bin string, args []string) (string, []string) {
	if !pin {
		return bin, args
	}
	return "taskset", append([]string{"-c", pinCore, bin}, args...)
}

// pinCore is the core the daemons get in the users' scenario; the load
// generator and subscribers run on the others.
const pinCore = "0"

// startPdsmux runs pdsmux on its defaults: only where it listens, its
// Redis, its database file, its replicas and where DIDs resolve (the
// bench's PLC) are set.
// extra are further arguments (more replicas).
func startPdsmux(env *loopback.Env, name string, ups []*upstream, plcURL string, pin, wait bool, extra ...string) (*daemon, error) {
	redis, redisURL, err := env.Redis(name + "-redis")
	if err != nil {
		return nil, err
	}
	helpers := []*loopback.Proc{redis}
	if wait {
		u, err := url.Parse(redisURL)
		if err != nil {
			return nil, err
		}
		replica, replicaURL, err := env.Redis(name+"-replica", "--replicaof", u.Hostname(), u.Port())
		if err != nil {
			return nil, err
		}
		helpers = append(helpers, replica)
		// the first sync waits out repl-diskless-sync-delay (5 s): measure
		// the wait on a replica that is online, not its first sync
		if err := waitReplicaOnline(replicaURL, 30*time.Second); err != nil {
			return nil, err
		}
		extra = append(extra, "--redis-wait-replicas", "1")
	}
	if pin {
		if out, err := exec.Command("taskset", "-a", "-p", "-c", pinCore, strconv.Itoa(redis.Pid())).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("pin redis-server: %v: %s", err, out)
		}
	}
	addrs, err := loopback.FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--listen", addrs[0], "--metrics-listen", addrs[1],
		"--db-url", "file:" + filepath.Join(env.Dir, name+".db"),
		"--redis-url", redisURL, "--plc-url", plcURL}
	for i, u := range ups {
		args = append(args, "--replica", fmt.Sprintf("replica%d=%s", i+1, u.URL()))
	}
	args = append(args, extra...)
	bin, args := pinPrefix(pin, env.Deps.Pdsmux, args)
	p, err := env.Start(name, bin, args)
	if err != nil {
		return nil, err
	}
	if err := loopback.WaitHTTP("http://"+addrs[0]+"/xrpc/_health", 30*time.Second, p); err != nil {
		return nil, err
	}
	return &daemon{name: "pdsmux", base: "http://" + addrs[0], metrics: addrs[1], redisURL: redisURL,
		procs: append([]*loopback.Proc{p}, helpers...)}, nil
}

// startRainbow runs indigo's rainbow on its defaults but for where it
// keeps events (v.persist).
func startRainbow(env *loopback.Env, name string, v variant, up *upstream, pin bool) (*daemon, error) {
	addrs, err := loopback.FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(env.Dir, name)
	cleanup := func() {}
	switch v.persist {
	case "tmpfs":
		dir, err = os.MkdirTemp("/dev/shm", "pdsmux-bench-")
		if err != nil {
			return nil, fmt.Errorf("rainbow on tmpfs needs /dev/shm: %w", err)
		}
		d := dir
		cleanup = func() { os.RemoveAll(d) }
	default:
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	db := filepath.Join(dir, "rainbow.db")
	if v.persist == "memory" {
		db = "" // rainbow's in-memory splitter: an event ring, no pebble
	}
	bin, args := pinPrefix(pin, env.Deps.Rainbow, []string{"--log-level", "warn",
		"--upstream-host", up.URL(), "--api-listen", addrs[0],
		"--metrics-listen", addrs[1],
		"--persist-db", db, "--cursor-file", filepath.Join(dir, "cursor"),
		"--collectiondir-host", "http://127.0.0.1:1"})
	p, err := env.Start(name, bin, args)
	if err != nil {
		cleanup()
		return nil, err
	}
	base := "http://" + addrs[0]
	if err := loopback.WaitHTTP(base+"/xrpc/_health", 30*time.Second, p); err != nil {
		p.Stop(5 * time.Second)
		cleanup()
		return nil, err
	}
	return &daemon{name: v.label, base: base, procs: []*loopback.Proc{p}, cleanup: cleanup}, nil
}

func (d *daemon) stop() {
	for _, p := range d.procs {
		p.Stop(5 * time.Second)
	}
	if d.cleanup != nil {
		d.cleanup()
	}
}

// usage is one reading of the daemon's and its helper's (redis-server's)
// memory and CPU time.
type usage struct {
	rss, peak             int64 // the daemon
	helperRSS, helperPeak int64 // redis-server (pdsmux only)
	cpu, helperCPU        time.Duration
}

func (d *daemon) usage() usage {
	var u usage
	for i, p := range d.procs {
		r, pk, c := loopback.ProcStat(p.Pid())
		if i == 0 {
			u.rss, u.peak, u.cpu = r, pk, c
		} else {
			u.helperRSS += r
			u.helperPeak += pk
			u.helperCPU += c
		}
	}
	return u
}

// waitReplicaOnline waits until the redis-server at redisURL is a replica
// with its link to the primary up (INFO replication).
func waitReplicaOnline(redisURL string, within time.Duration) error {
	u, err := url.Parse(redisURL)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	for {
		out, err := exec.Command("redis-cli", "-h", u.Hostname(), "-p", u.Port(), "info", "replication").Output()
		if err == nil && strings.Contains(string(out), "master_link_status:up") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the Redis replica at %s did not come online within %s", u.Host, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
