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
	"strings"
	"time"

	"github.com/pdsmux/pdsmux/internal/testenv"
)

type scenario struct {
	id       string
	title    string
	replicas int     // pdsmux upstreams (rainbow always gets one carrying everything)
	subs     int     // subscribers
	events   int     // frames sent
	rate     float64 // total frames/s; 0 = as fast as the daemon reads
	idle     bool    // measure memory with idle subscribers only
}

// accounts in the generated stream.
const accounts = 60

type result struct {
	daemon           string
	events           int
	dur              time.Duration
	evps, mbps       float64
	p50, p99, pmax   time.Duration
	idleRSS, peakRSS int64
	cpu, helperCPU   time.Duration
	complete         bool
	dups             int64
	note             string
}

func main() {
	out := flag.String("out", filepath.Join("bench", "RESULTS.md"), "where to write the results")
	scale := flag.Float64("scale", 1, "multiply event counts (use <1 for a quick run)")
	only := flag.String("only", "", "run only these scenarios (e.g. AC)")
	profile := flag.String("profile", "", "save a CPU profile of pdsmux during each scenario into this directory")
	micro := flag.String("micro", "", "go test -bench output to include in the results")
	flag.Parse()
	if err := run(*out, *scale, *only, *profile, *micro); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(out string, scale float64, only, profile, micro string) error {
	dir, err := os.MkdirTemp("", "pdsmux-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	deps, err := testenv.LoadDeps(filepath.Join(dir, "bin"), os.Stderr, "rainbow")
	if err != nil {
		return err
	}
	n := func(x int) int { return max(10, int(float64(x)*scale)) }
	scenarios := []scenario{
		{id: "A", title: "Max throughput: 1 replica x 1 subscriber, as fast as it goes", replicas: 1, subs: 1, events: n(100_000)},
		{id: "B", title: "3 replicas merged x 10 subscribers at 20,000 events/s", replicas: 3, subs: 10, events: n(200_000), rate: 20_000},
		{id: "C", title: "Added latency: 1 replica x 100 subscribers at 1,000 events/s", replicas: 1, subs: 100, events: n(10_000), rate: 1_000},
		{id: "D", title: "Memory: 1,000 idle subscribers", replicas: 1, subs: 1000, events: 100, rate: 100, idle: true},
	}
	total := 0
	for _, sc := range scenarios {
		total = max(total, sc.events)
	}
	total -= accounts // the stream starts with one #sync per account
	cache := filepath.Join(os.Getenv("HOME"), ".cache", "pdsmux", "bench")
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		cache = filepath.Join(x, "pdsmux", "bench")
	}
	s, err := generate(cache, total, accounts, 500)
	if err != nil {
		return err
	}
	var report strings.Builder
	header(&report, deps, s)
	results := map[string][2]result{}
	for _, sc := range scenarios {
		if only != "" && !strings.Contains(only, sc.id) {
			continue
		}
		var res []result
		for _, which := range []string{"pdsmux", "rainbow"} {
			fmt.Fprintf(os.Stderr, "bench: scenario %s with %s\n", sc.id, which)
			env, err := testenv.New(filepath.Join(dir, sc.id+"-"+which), deps)
			if err != nil {
				return err
			}
			r, err := runScenario(env, s, sc, which, profile)
			env.Close()
			if err != nil {
				return fmt.Errorf("scenario %s (%s): %w", sc.id, which, err)
			}
			res = append(res, r)
		}
		table(&report, sc, res[0], res[1])
		results[sc.id] = [2]result{res[0], res[1]}
	}
	targets(&report, results)
	if micro != "" {
		b, err := os.ReadFile(micro)
		if err != nil {
			return err
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "pkg:") {
				lines = append(lines, l)
			}
		}
		fmt.Fprintf(&report, "## Hot paths (go test -bench)\n\nFrame parse and seq patch, the append script against redis-server (AOF everysec) per event and in batches, one entry fanned out to 10 subscribers, and the door's check of one #commit (signature on, MST inversion; cores@2000ev/s is the share of one core it takes at 2,000 events/s).\n\n```\n%s\n```\n", strings.Join(lines, "\n"))
	}
	if err := os.WriteFile(out, []byte(report.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(report.String())
	return nil
}

func runScenario(env *testenv.Env, s *stream, sc scenario, which, profile string) (result, error) {
	ctx := context.Background()
	reps := sc.replicas
	if which == "rainbow" {
		reps = 1 // rainbow follows one upstream; it cannot merge
	}
	idx := make([][]int, reps)
	for i := range sc.events {
		r := s.owner[i] % reps // an account's commits stay on one replica
		idx[r] = append(idx[r], i)
	}
	var ups []*upstream
	for r := range reps {
		u, err := newUpstream(s, idx[r], sc.rate/float64(reps))
		if err != nil {
			return result{}, err
		}
		ups = append(ups, u)
	}
	var d *daemon
	var err error
	if which == "pdsmux" {
		d, err = startPdsmux(env, which, ups)
	} else {
		d, err = startRainbow(env, which, ups[0])
	}
	if err != nil {
		return result{}, err
	}
	defer d.stop()
	for _, u := range ups {
		select {
		case <-u.connected:
		case <-time.After(30 * time.Second):
			return result{}, fmt.Errorf("%s did not connect to the load generator", which)
		}
	}
	time.Sleep(500 * time.Millisecond)
	idleRSS, _, _, _ := d.usage()

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
	withSubsRSS, _, cpu0, hcpu0 := d.usage()

	start := time.Now()
	for _, u := range ups {
		close(u.start)
	}
	if profile != "" && d.metrics != "" {
		go saveProfile(d.metrics, filepath.Join(profile, "cpu-"+sc.id+".pprof"))
	}
	timeout := 120 * time.Second
	if sc.rate > 0 {
		timeout = time.Duration(float64(sc.events)/sc.rate*float64(time.Second)) + 60*time.Second
	}
	end, complete := waitAll(subs, int64(sc.events), timeout)
	_, peak, cpu1, hcpu1 := d.usage()
	lat := collect(subs, ups)
	var got, bytes, dups int64
	for _, sb := range subs {
		got += sb.count.Load()
		bytes += sb.bytes.Load()
		dups += sb.dups.Load()
	}
	dur := end.Sub(start)
	r := result{
		daemon: which, events: sc.events, dur: dur,
		evps: float64(got) / float64(len(subs)) / dur.Seconds(),
		mbps: float64(bytes) / float64(len(subs)) / dur.Seconds() / 1e6,
		p50:  lat.pct(0.50), p99: lat.pct(0.99), pmax: lat.pct(1),
		idleRSS: idleRSS, peakRSS: peak, cpu: cpu1 - cpu0, helperCPU: hcpu1 - hcpu0,
		complete: complete, dups: dups,
	}
	if sc.idle {
		r.peakRSS = withSubsRSS
	}
	if !complete {
		r.note = fmt.Sprintf("only %d of %d events reached every subscriber within %s", got/int64(len(subs)), sc.events, timeout)
	}
	return r, nil
}

func header(b *strings.Builder, deps testenv.Deps, s *stream) {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	redisV, _ := exec.Command(deps.Redis, "--version").Output()
	indigo, _ := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/bluesky-social/indigo").Output()
	commit, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	fmt.Fprintf(b, "# pdsmux vs rainbow\n\nGenerated by `make bench` on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(b, "- machine: %s, %d cores, %s\n", cpu, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(b, "- pdsmux %s with %s(AOF everysec) and an embedded libsql archive\n", strings.TrimSpace(string(commit)), strings.Fields(string(redisV) + " redis ? ?")[2]+" ")
	fmt.Fprintf(b, "- indigo rainbow %s (pebble persistence, its defaults)\n", strings.TrimSpace(string(indigo)))
	fmt.Fprintf(b, "- input: real signed commits from 60 accounts, %.0f bytes per frame on average (most ~1 KB posts, 1 in 500 a 50-200 KB commit)\n", float64(s.bytes)/float64(len(s.frames)))
	fmt.Fprintf(b, "- added latency: load generator's send to a subscriber's receive, all subscribers, all events\n")
	fmt.Fprintf(b, "- everything (generator, daemon, Redis, subscribers) shares this machine's cores, so absolute numbers are pessimistic; compare ratios\n\n")
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func per100k(d time.Duration, events int) float64 {
	return d.Seconds() * 100_000 / float64(events)
}

func table(b *strings.Builder, sc scenario, p, r result) {
	fmt.Fprintf(b, "## %s. %s\n\n", sc.id, sc.title)
	if sc.replicas > 1 {
		fmt.Fprintf(b, "pdsmux merges %d replicas; rainbow follows one upstream carrying the same events.\n\n", sc.replicas)
	}
	fmt.Fprintf(b, "| | pdsmux | rainbow | pdsmux / rainbow |\n|---|---:|---:|---:|\n")
	if sc.idle {
		fmt.Fprintf(b, "| RSS idle | %s | %s | %s |\n", mib(p.idleRSS), mib(r.idleRSS), ratio(float64(p.idleRSS), float64(r.idleRSS)))
		fmt.Fprintf(b, "| RSS with %d idle subscribers | %s | %s | %s |\n", sc.subs, mib(p.peakRSS), mib(r.peakRSS), ratio(float64(p.peakRSS), float64(r.peakRSS)))
		fmt.Fprintf(b, "| every subscriber got the next events | %v | %v | |\n\n", p.complete, r.complete)
		return
	}
	fmt.Fprintf(b, "| events/s (per subscriber) | %.0f | %.0f | %s |\n", p.evps, r.evps, ratio(p.evps, r.evps))
	fmt.Fprintf(b, "| MB/s (per subscriber) | %.1f | %.1f | %s |\n", p.mbps, r.mbps, ratio(p.mbps, r.mbps))
	fmt.Fprintf(b, "| added latency p50 | %s | %s | %s |\n", p.p50.Round(10*time.Microsecond), r.p50.Round(10*time.Microsecond), ratio(float64(p.p50), float64(r.p50)))
	fmt.Fprintf(b, "| added latency p99 | %s | %s | %s |\n", p.p99.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), ratio(float64(p.p99), float64(r.p99)))
	fmt.Fprintf(b, "| added latency max | %s | %s | %s |\n", p.pmax.Round(10*time.Microsecond), r.pmax.Round(10*time.Microsecond), ratio(float64(p.pmax), float64(r.pmax)))
	fmt.Fprintf(b, "| peak RSS | %s | %s | %s |\n", mib(p.peakRSS), mib(r.peakRSS), ratio(float64(p.peakRSS), float64(r.peakRSS)))
	fmt.Fprintf(b, "| CPU s per 100k events | %.2f | %.2f | %s |\n", per100k(p.cpu, p.events), per100k(r.cpu, r.events), ratio(per100k(p.cpu, p.events), per100k(r.cpu, r.events)))
	fmt.Fprintf(b, "| CPU s per 100k events incl. redis-server | %.2f | %.2f | %s |\n", per100k(p.cpu+p.helperCPU, p.events), per100k(r.cpu, r.events), ratio(per100k(p.cpu+p.helperCPU, p.events), per100k(r.cpu, r.events)))
	fmt.Fprintf(b, "| all events delivered, none twice | %v | %v | |\n\n", p.complete && p.dups == 0, r.complete && r.dups == 0)
	for _, x := range []result{p, r} {
		if x.note != "" {
			fmt.Fprintf(b, "%s: %s\n\n", x.daemon, x.note)
		}
	}
}

// saveProfile stores a 5 s CPU profile of a running pdsmux.
func saveProfile(addr, path string) {
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=5")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: profile:", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, b, 0o644)
}

// targets checks the targets against this run and says which were
// met; a benchmark that cannot fail is no benchmark.
func targets(b *strings.Builder, rs map[string][2]result) {
	fmt.Fprintf(b, "## Targets\n\n| target | measured | met |\n|---|---|---|\n")
	row := func(name, measured string, ok bool) {
		fmt.Fprintf(b, "| %s | %s | %s |\n", name, measured, map[bool]string{true: "yes", false: "**no**"}[ok])
	}
	if r, ok := rs["A"]; ok {
		row("max throughput, 1 replica x 1 subscriber: >= 1.0x rainbow", fmt.Sprintf("%.0f vs %.0f events/s (%s)", r[0].evps, r[1].evps, ratio(r[0].evps, r[1].evps)), r[0].evps >= r[1].evps && r[0].complete)
	}
	if r, ok := rs["B"]; ok {
		row("3 replicas x 10 subscribers: >= 20,000 events/s with lag < 1 s", fmt.Sprintf("%.0f events/s, p99 lag %s", r[0].evps, r[0].p99.Round(time.Millisecond)), r[0].evps >= 20_000 && r[0].p99 < time.Second && r[0].complete)
	}
	if r, ok := rs["C"]; ok {
		row("1,000 events/s x 100 subscribers: p99 <= rainbow's and <= 5 ms", fmt.Sprintf("p99 %s vs rainbow %s", r[0].p99.Round(10*time.Microsecond), r[1].p99.Round(10*time.Microsecond)), r[0].p99 <= r[1].p99 && r[0].p99 <= 5*time.Millisecond)
	}
	if r, ok := rs["D"]; ok {
		row("RSS with 1,000 idle subscribers <= 150 MiB", mib(r[0].peakRSS), r[0].peakRSS <= 150<<20)
		row("idle pdsmux <= 30 MiB", mib(r[0].idleRSS), r[0].idleRSS <= 30<<20)
	}
	fmt.Fprintln(b)
}
