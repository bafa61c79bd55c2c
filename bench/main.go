package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pdsmux/pdsmux/internal/loopback"
)

// scenario is one measured situation; every system in systems runs it in
// turn on the same frames.
type scenario struct {
	id       string
	title    string
	replicas int     // pdsmux upstreams (rainbow always gets one carrying everything)
	subs     int     // subscribers
	events   int     // frames sent
	rate     float64 // total frames/s; 0 = as fast as the daemon reads
	pin      bool    // the daemons on one core, the bench on the others
	systems  []variant
}

// accounts in the generated stream.
const accounts = 60

// options are the command's flags.
type options struct {
	out, only, systems, profile, micro, dump string
	quick, trace                             bool
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "", "where to write the results (default bench/RESULTS.md, or bench/out/quick.md with -quick)")
	flag.BoolVar(&o.quick, "quick", false, "a smoke run: every scenario end to end with a few thousand events (figures not comparable)")
	flag.StringVar(&o.only, "only", "", "run only these scenarios (letters of "+scenarioIDs+", e.g. AC)")
	flag.StringVar(&o.systems, "systems", "", "run only these systems, comma separated ("+systemIDs()+"); a scenario without any is skipped")
	flag.StringVar(&o.profile, "profile", "", "save 5 s CPU and allocation profiles of pdsmux in each scenario and its live heap at their end into this directory ({cpu,allocs,heap}-<scenario>-<variant>.pprof)")
	flag.BoolVar(&o.trace, "trace", false, "with -profile, also save a 5 s execution trace (trace-<scenario>-<variant>.pprof; `go tool trace`); it slows pdsmux while it runs")
	flag.StringVar(&o.dump, "dump", "", "write every delivered event's send time, latency and frame size into this directory (latency-<scenario>-<variant>.tsv), and pdsmux's metrics at the end (metrics-<scenario>-<variant>.txt)")
	flag.StringVar(&o.micro, "micro", "", "go test -bench output to include in the results")
	flag.Parse()
	if o.out == "" {
		o.out = filepath.Join("bench", "RESULTS.md")
		if o.quick {
			o.out = filepath.Join("bench", "out", "quick.md")
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// scenarioIDs in the order they run: the Redis ceiling first, as the
// yardstick of the saturation targets.
const scenarioIDs = "RABCUH"

// sizes of a full run and of a -quick smoke run.
type sizes struct {
	saturation, latency, users int           // events
	hostile                    time.Duration // how long the hostile replica sends
}

var (
	fullSizes  = sizes{saturation: 100_000, latency: 15_000, users: 60_000, hostile: 30 * time.Second}
	quickSizes = sizes{saturation: 2_000, latency: 1_500, users: 4_000, hostile: 4 * time.Second}
)

func run(o options) error {
	load0 := loadAvg()
	started := time.Now()
	dir, err := os.MkdirTemp("", "pdsmux-bench-") // on disk here: rainbow "disk" and Redis's AOF live in it
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	deps, err := loopback.LoadDeps(filepath.Join(dir, "bin"), os.Stderr, "rainbow")
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return fmt.Errorf("taskset (util-linux) is needed to pin the daemons to one core: %w", err)
	}
	z := fullSizes
	if o.quick {
		z = quickSizes
	}
	scenarios := []scenario{
		{id: "A", title: "Saturation: 1 replica x 1 subscriber, as fast as it goes", replicas: 1, subs: 1, events: z.saturation, systems: []variant{vPdsmux, vNoSig, vDisk, vTmpfs, vMemory}},
		{id: "B", title: "Saturation: 3 replicas merged x 1 subscriber, as fast as it goes", replicas: 3, subs: 1, events: z.saturation, systems: []variant{vPdsmux}},
		{id: "C", title: "Added latency below saturation: 1 replica x 1 subscriber at 1,000 events/s", replicas: 1, subs: 1, events: z.latency, rate: 1_000, systems: append([]variant{vPdsmux, vNoSig, vWait}, allSystem[1:]...)},
		{id: "U", title: "The users' scenario: 2,000 events/s over 2 replicas x 50 subscribers, the daemons on ONE core", replicas: 2, subs: 50, events: z.users, rate: 2_000, pin: true, systems: append([]variant{vPdsmux, vNoSig}, allSystem[1:]...)},
	}
	// one stream for every scenario (whatever -only picks), so the cache
	// is made once per size
	total := z.saturation
	for _, sc := range scenarios {
		total = max(total, sc.events)
	}
	cache := filepath.Join(os.Getenv("HOME"), ".cache", "pdsmux", "bench")
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		cache = filepath.Join(x, "pdsmux", "bench")
	}
	s, err := generate(cache, max(total-accounts, accounts), accounts, 500) // the stream starts with one #sync per account
	if err != nil {
		return err
	}
	p, err := newPLC(s.pubkeys)
	if err != nil {
		return err
	}
	rep := &report{quick: o.quick, opts: o, load0: load0, results: map[string]map[string]result{}}
	if want(o.only, "R") {
		fmt.Fprintln(os.Stderr, "bench: R, the Redis ceiling")
		env, err := loopback.New(filepath.Join(dir, "R"), deps)
		if err != nil {
			return err
		}
		rep.ceiling, err = redisCeiling(env, s, min(z.saturation, len(s.frames)))
		env.Close()
		if err != nil {
			return fmt.Errorf("the Redis ceiling: %w", err)
		}
	}
	if err := checkSystems(o.systems); err != nil {
		return err
	}
	for i := range scenarios {
		scenarios[i].systems = pickSystems(scenarios[i].systems, o.systems)
	}
	for _, sc := range scenarios {
		if !want(o.only, sc.id) || len(sc.systems) == 0 {
			continue
		}
		rep.scenarios = append(rep.scenarios, sc)
		rep.results[sc.id] = map[string]result{}
		for _, v := range sc.systems {
			fmt.Fprintf(os.Stderr, "bench: %s with %s\n", sc.id, v.label)
			env, err := loopback.New(filepath.Join(dir, sc.id+"-"+v.id), deps)
			if err != nil {
				return err
			}
			r, err := runScenario(env, s, sc, v, p, o)
			if err != nil {
				fmt.Fprintln(os.Stderr, env.Logs(20))
			}
			env.Close()
			if err != nil {
				return fmt.Errorf("scenario %s (%s): %w", sc.id, v.label, err)
			}
			rep.results[sc.id][v.id] = r
		}
	}
	if want(o.only, "H") {
		fmt.Fprintln(os.Stderr, "bench: H, a hostile replica beside a normal one")
		env, err := loopback.New(filepath.Join(dir, "H"), deps)
		if err != nil {
			return err
		}
		h, err := runHostile(env, s, p, z.hostile)
		if err != nil {
			fmt.Fprintln(os.Stderr, env.Logs(20))
		}
		env.Close()
		if err != nil {
			return fmt.Errorf("hostile replica: %w", err)
		}
		rep.hostile = &h
	}
	rep.load1 = loadAvg()
	rep.plcHits = p.hits.Load()
	rep.took = time.Since(started)
	var b strings.Builder
	rep.write(&b, deps, s)
	if o.micro != "" {
		if err := microSection(&b, o.micro); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	fmt.Fprintf(os.Stderr, "bench: wrote %s in %s\n", o.out, rep.took.Round(time.Second))
	return nil
}

func systemIDs() string {
	ids := make([]string, len(everySystem))
	for i, v := range everySystem {
		ids[i] = v.id
	}
	return strings.Join(ids, ", ")
}

// checkSystems refuses a -systems list naming a variant that does not
// exist, so a typo does not silently run nothing.
func checkSystems(list string) error {
	if list == "" {
		return nil
	}
	for _, id := range strings.Split(list, ",") {
		if !slices.ContainsFunc(everySystem, func(v variant) bool { return v.id == strings.TrimSpace(id) }) {
			return fmt.Errorf("-systems: no system %q (want some of %s)", id, systemIDs())
		}
	}
	return nil
}

// pickSystems keeps the variants of vs that list names (all for "").
func pickSystems(vs []variant, list string) []variant {
	if list == "" {
		return vs
	}
	var out []variant
	for _, v := range vs {
		for _, id := range strings.Split(list, ",") {
			if strings.TrimSpace(id) == v.id {
				out = append(out, v)
			}
		}
	}
	return out
}

func want(only, id string) bool { return only == "" || strings.Contains(only, id) }

// loadAvg is the 1, 5 and 15 minute load average (as uptime prints it).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

// pinSelf moves every thread of this process (load generator and
// subscribers) off the daemons' core; the returned function undoes it.
func pinSelf() (func(), error) {
	n := runtime.NumCPU()
	if n < 2 {
		return func() {}, nil
	}
	pid := strconv.Itoa(os.Getpid())
	all := fmt.Sprintf("0-%d", n-1)
	rest := fmt.Sprintf("1-%d", n-1)
	if out, err := exec.Command("taskset", "-a", "-p", "-c", rest, pid).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("taskset: %v: %s", err, out)
	}
	return func() { _ = exec.Command("taskset", "-a", "-p", "-c", all, pid).Run() }, nil
}

func runScenario(env *loopback.Env, s *stream, sc scenario, v variant, p *plc, o options) (result, error) {
	ctx := context.Background()
	reps := sc.replicas
	if v.rainbow {
		reps = 1 // rainbow follows one upstream; it cannot merge
	}
	idx := make([][]int, reps)
	for i := range sc.events {
		r := s.owner[i] % reps // an account's commits stay on one replica
		idx[r] = append(idx[r], i)
	}
	var ups []*upstream
	defer func() {
		for _, u := range ups {
			u.close()
		}
	}()
	for r := range reps {
		u, err := newUpstream(s, idx[r], sc.rate/float64(reps))
		if err != nil {
			return result{}, err
		}
		ups = append(ups, u)
	}
	var d *daemon
	var err error
	if v.rainbow {
		d, err = startRainbow(env, v.id, v, ups[0], sc.pin)
	} else {
		d, err = startPdsmux(env, v.id, ups, p.URL(), sc.pin, v.wait, v.args...)
	}
	if err != nil {
		return result{}, err
	}
	defer d.stop()
	for _, u := range ups {
		select {
		case <-u.connected:
		case <-time.After(30 * time.Second):
			return result{}, fmt.Errorf("%s did not connect to the load generator", v.label)
		}
	}
	if sc.pin {
		unpin, err := pinSelf()
		if err != nil {
			return result{}, err
		}
		defer unpin()
	}
	time.Sleep(500 * time.Millisecond)
	keyIndex := make(map[string]int, sc.events)
	for i := range sc.events {
		keyIndex[s.keys[i]] = i
	}
	subs, err := subscribe(ctx, d.base, sc.subs, keyIndex)
	if err != nil {
		return result{}, err
	}
	defer closeAll(subs)
	time.Sleep(time.Second) // every subscriber joined
	u0 := d.usage()

	start := time.Now()
	for _, u := range ups {
		close(u.start)
	}
	if o.profile != "" && d.metrics != "" {
		saveProfiles(d.metrics, o.profile, sc.id+"-"+v.id, o.trace)
	}
	timeout := 180 * time.Second
	if sc.rate > 0 {
		timeout = time.Duration(float64(sc.events)/sc.rate*float64(time.Second)) + 60*time.Second
	}
	end, complete := waitAll(subs, int64(sc.events), timeout)
	u1 := d.usage()
	lat := collect(subs, ups)
	if o.dump != "" {
		if err := dumpLatencies(filepath.Join(o.dump, "latency-"+sc.id+"-"+v.id+".tsv"), s, subs, ups, start); err != nil {
			return result{}, err
		}
		if d.metrics != "" {
			saveMetrics(d.metrics, filepath.Join(o.dump, "metrics-"+sc.id+"-"+v.id+".txt"))
		}
	}
	var got, bytes, dups int64
	for _, sb := range subs {
		got += sb.count.Load()
		bytes += sb.bytes.Load()
		dups += sb.dups.Load()
	}
	dur := end.Sub(start)
	r := result{
		sys: v, replicas: reps, events: sc.events, dur: dur,
		evps: float64(got) / float64(len(subs)) / dur.Seconds(),
		mbps: float64(bytes) / float64(len(subs)) / dur.Seconds() / 1e6,
		p50:  lat.pct(0.50), p99: lat.pct(0.99), pmax: lat.pct(1),
		u0: u0, u1: u1,
		complete: complete, dups: dups,
	}
	if !complete {
		r.note = fmt.Sprintf("only %d of %d events reached every subscriber within %s", got/int64(len(subs)), sc.events, timeout)
	}
	if !v.rainbow {
		r.archive = waitArchive(d.metrics, sc.events, 60*time.Second)
		if r.budget, err = budgets(d.metrics); err != nil {
			return result{}, err
		}
	}
	return r, nil
}

// archiveCheck is what pdsmux's archive held after a scenario.
type archiveCheck struct {
	written, dropped, lost int64
	wait                   time.Duration // after the last delivery
	complete               bool
}

// waitArchive waits (up to within) until pdsmux's archive has written
// every event, by its own metrics.
func waitArchive(metricsAddr string, events int, within time.Duration) archiveCheck {
	start := time.Now()
	var a archiveCheck
	for {
		m, err := scrape(metricsAddr)
		if err == nil {
			a.written = int64(m["pdsmux_archive_events_total"])
			a.dropped = int64(m["pdsmux_archive_dropped_total"])
			a.lost = int64(m["pdsmux_archive_lost_total"])
		}
		a.wait = time.Since(start)
		if a.written >= int64(events) {
			a.complete = a.dropped == 0 && a.lost == 0
			return a
		}
		if a.wait > within {
			return a
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// budget is what a pdsmux is configured to use, as its metrics say.
type budget struct {
	memory int64 // --memory-budget: pdsmux and its Redis log (pdsmux_memory_budget_bytes)
	log    int64 // --log-max-bytes: the log in Redis (pdsmux_log_max_bytes)
}

// budgets reads a running pdsmux's budgets from its metrics; an error if
// it does not report them.
func budgets(metricsAddr string) (budget, error) {
	m, err := scrape(metricsAddr)
	if err != nil {
		return budget{}, fmt.Errorf("pdsmux's budgets: %w", err)
	}
	b := budget{memory: int64(m["pdsmux_memory_budget_bytes"]), log: int64(m["pdsmux_log_max_bytes"])}
	if b.memory <= 0 || b.log <= 0 {
		return budget{}, fmt.Errorf("pdsmux's metrics give no pdsmux_memory_budget_bytes or pdsmux_log_max_bytes")
	}
	return b, nil
}

// scrape reads a Prometheus text page into name -> value (labelled series
// summed per name).
func scrape(addr string) (map[string]float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		name := l[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		m[strings.TrimSpace(name)] += v
	}
	return m, nil
}

// saveMetrics stores pdsmux's /metrics page (its stage histograms) as
// path.
func saveMetrics(addr, path string) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: metrics:", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, b, 0o644)
}

// saveProfiles stores, in the background, 5 s CPU and allocation (what was
// allocated during those 5 s) profiles, the live heap at their end, and
// with trace an execution trace, of a running pdsmux as
// dir/{cpu,allocs,heap,trace}-<name>.pprof.
func saveProfiles(addr, dir, name string, trace bool) {
	_ = os.MkdirAll(dir, 0o755)
	kinds := map[string]string{"cpu": "profile?seconds=5", "allocs": "allocs?seconds=5", "heap": "heap"}
	if trace {
		kinds["trace"] = "trace?seconds=5"
	}
	for kind, path := range kinds {
		go func() {
			if kind == "heap" {
				time.Sleep(5 * time.Second) // beside the others' end, in the busy part of the run
			}
			resp, err := http.Get("http://" + addr + "/debug/pprof/" + path)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench: profile:", err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			_ = os.WriteFile(filepath.Join(dir, kind+"-"+name+".pprof"), b, 0o644)
		}()
	}
}

func microSection(b *strings.Builder, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "pkg:") {
			lines = append(lines, l)
		}
	}
	fmt.Fprintf(b, "## Hot paths (go test -bench)\n\nFrame parse and seq patch, the append script against redis-server (AOF everysec) per event and in batches, one entry fanned out to 10 subscribers, and the door's check of one #commit (signature on, MST inversion; cores@2000ev/s is the share of one core it takes at 2,000 events/s).\n\n```\n%s\n```\n", strings.Join(lines, "\n"))
	return nil
}
