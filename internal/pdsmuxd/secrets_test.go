package pdsmuxd_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/libsqlserver"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// Every secret-carrying setting (the Redis password, well-formed or not,
// the database token as a flag and as a URL parameter, credentials in a
// replica URL), given by flag and by PDSMUX_* variable, read back through
// every output pdsmux has: start-up errors for malformed values, the log
// at debug level through a run with Redis down then up (go-redis's own
// lines included), `pdsmux status` (text and JSON, metrics up and down),
// `pdsmux health`, /xrpc/_health, /metrics and every /debug/pprof
// endpoint. No output holds any secret, nor any 5-character piece of
// one. Secrets use letters outside hex so that pprof's addresses cannot
// match them by chance.
func TestSecrets_NeverInAnyOutput(t *testing.T) {
	const (
		redisPW  = "RpwQ7vX2kJ9" // requirepass of the real redis-server
		wrongPW  = "WrgT4nM8sY3" // refused by it
		dbToken  = "DbtK9wZ4mL1" // --db-auth-token to a real libsql server
		envToken = "EnvH2cY6bV3" // PDSMUX_DB_AUTH_TOKEN
		queryTok = "QtkM3rT8pN5" // ?authToken= in --db-url
		replPW   = "RepU5sW7qK2" // credentials in a --replica URL
		slashPW  = "Qz9Kw/Rx8Yp" // passwords net/url cannot parse
		escPW    = "Ts7Uv%zzWm6Xn"
		hashPW   = "Jp5Lq#Hr4Gs"
		queryPW  = "Nk3Mt?Vy2Zw"
		portPW   = "12345/Sv6Wq"
		typoPW   = "Pq1Rs2Tu9Zy" // in a URL with a scheme typo
		lonePW   = "Hw9Jy8Kz7Lx" // userinfo without a ":"
		noHostPW = "Nh4Bv6Cx8Dz" // a password with "@host" forgotten
	)
	secrets := []string{redisPW, wrongPW, dbToken, envToken, queryTok, replPW, slashPW, escPW, hashPW, queryPW, portPW, typoPW, lonePW, noHostPW}
	var pieces []string // every 5-character piece of every secret
	for _, s := range secrets {
		for i := 0; i+5 <= len(s); i++ {
			if p := s[i : i+5]; !strings.ContainsAny(p, "/%#?") && !regexp.MustCompile(`^\d+$`).MatchString(p) {
				pieces = append(pieces, p)
			}
		}
	}
	var seen []string // every output, labelled
	record := func(label, out string) {
		t.Helper()
		seen = append(seen, label+":\n"+out)
		for _, p := range pieces {
			if strings.Contains(out, p) {
				t.Errorf("%s shows %q, a piece of a secret:\n%s", label, p, out)
				return
			}
		}
	}

	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{Password: redisPW})
	db := libsqlserver.Start(t)
	bin := proc.Pdsmux(t)
	redisAt := e.redis.Addr()
	run := func(env []string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		record(fmt.Sprintf("pdsmux %s (env %v)", strings.Join(args, " "), env), string(out))
		return string(out), code
	}

	// 1. Start-up errors: each exits 2 with one line naming the setting.
	replica := "r1=" + e.replicas[0].URL()
	malformed := []string{
		"redis://:" + slashPW + "@" + redisAt + "/0",
		"redis://:" + escPW + "@" + redisAt + "/0",
		"redis://:" + hashPW + "@" + redisAt + "/0",
		"redis://:" + queryPW + "@" + redisAt + "/0",
		"redis://:" + portPW + "@" + redisAt + "/0",
		"rediss//:" + typoPW + "@" + redisAt + "/0",
		"redis:/:" + typoPW + "@" + redisAt + "/0",
		"http://:" + typoPW + "@" + redisAt + "/0",
		"redis://:" + noHostPW,
		"redis://user:" + noHostPW + "/0",
	}
	type bad struct {
		env     []string
		args    []string
		setting string
	}
	var cases []bad
	for _, u := range malformed {
		cases = append(cases,
			bad{nil, []string{"serve", "--replica", replica, "--redis-url", u}, "--redis-url"},
			bad{[]string{"PDSMUX_REDIS_URL=" + u}, []string{"serve", "--replica", replica}, "--redis-url"},
			bad{nil, []string{"status", "--redis-url", u}, "--redis-url"},
		)
	}
	cases = append(cases,
		// Redis refuses the password: said so, naming the setting
		bad{nil, []string{"serve", "--replica", replica, "--redis-url", "redis://:" + wrongPW + "@" + redisAt + "/0", "--db-url", "file:" + filepath.Join(t.TempDir(), "x.db")}, "--redis-url"},
		bad{nil, []string{"status", "--redis-url", "redis://:" + wrongPW + "@" + redisAt + "/0"}, "--redis-url"},
		bad{nil, []string{"status", "--redis-url", "redis://" + lonePW + "@" + redisAt + "/0"}, "--redis-url"},
		bad{[]string{"PDSMUX_REDIS_URL=redis://" + lonePW + "@" + redisAt + "/0"}, []string{"status"}, "--redis-url"},
		// the token in the database URL, the token with a bad URL
		bad{nil, []string{"serve", "--replica", replica, "--redis-url", e.redis.URL(), "--db-url", db.URL + "?authToken=" + queryTok}, "--db-url"},
		bad{nil, []string{"serve", "--replica", replica, "--redis-url", e.redis.URL(), "--db-url", "libsql://:" + slashPW + "@127.0.0.1:1"}, "--db-url"},
		bad{[]string{"PDSMUX_DB_AUTH_TOKEN=" + envToken}, []string{"serve", "--replica", replica, "--db-url", "postgres://x:" + queryTok + "@db/x"}, "--db-url"},
		// credentials in a replica URL are refused without being shown
		bad{nil, []string{"serve", "--replica", "r1=http://u:" + replPW + "@127.0.0.1:1"}, "--replica"},
		// a misspelt flag or variable carrying a secret
		bad{nil, []string{"serve", "--replica", replica, "--redis-ur=redis://:" + redisPW + "@" + redisAt}, "-redis-ur"},
		bad{[]string{"PDSMUX_DB_AUTH_TOKN=" + envToken}, []string{"serve", "--replica", replica}, "PDSMUX_DB_AUTH_TOKN"},
	)
	for _, c := range cases {
		out, code := run(c.env, c.args...)
		require.Equal(t, 2, code, "pdsmux %v exits 2 (bad configuration): %s", c.args, out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 1, "one line, not the help: %s", out)
		require.Contains(t, out, c.setting)
	}
	out, _ := run(nil, "status", "--redis-url", "redis://:"+wrongPW+"@"+redisAt+"/0")
	require.Contains(t, out, "refused the credentials")

	// 2. A run at debug level, Redis down at start and then up, every
	// secret on the command line (the worst case for pprof's cmdline).
	e.redis.Kill()
	listen, metrics := testutil.FreePort(t), testutil.FreePort(t)
	base, murl := fmt.Sprintf("http://127.0.0.1:%d", listen), fmt.Sprintf("http://127.0.0.1:%d", metrics)
	args := []string{"serve", "--log-level", "debug", "--log-format", "json",
		"--redis-url", e.redis.URL(), "--db-url", db.URL, "--db-auth-token", dbToken,
		"--listen", fmt.Sprintf("127.0.0.1:%d", listen), "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--replica", replica, "--replica", "never=http://127.0.0.1:1",
		"--verify-commit-signatures=false", "--plc-url", "http://127.0.0.1:1", "--scan-interval", "1h"}
	p := proc.Start(t, "pdsmux", bin, args)
	// /proc/PID/cmdline reads empty for a moment after Start returns: the
	// kernel sets the new program's arguments after closing the pipe
	// that tells Start the exec succeeded.
	var cmdline []byte
	require.Eventually(t, func() bool {
		cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Cmd.Process.Pid))
		return len(cmdline) > 0
	}, 10*time.Second, 10*time.Millisecond, "pdsmux's /proc/PID/cmdline stays empty")
	require.Contains(t, string(cmdline), redisPW, "the secrets really are on the command line")
	require.Contains(t, string(cmdline), dbToken)

	get := func(path string) (string, int) {
		t.Helper()
		resp, err := http.Get(path)
		if err != nil {
			record(path, err.Error())
			return err.Error(), 0
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil { // pprof's protobuf profiles
			if unz, err := io.ReadAll(zr); err == nil {
				body = unz
			}
		}
		record(path, string(body))
		return string(body), resp.StatusCode
	}
	everyEndpoint := func(when string) {
		t.Helper()
		_, code := get(murl + "/metrics")
		require.Equal(t, http.StatusOK, code, when)
		get(base + "/xrpc/_health")
		index, code := get(murl + "/debug/pprof/")
		require.Equal(t, http.StatusOK, code)
		profiles := regexp.MustCompile(`href='([a-z]+)\?debug=1'`).FindAllStringSubmatch(index, -1)
		require.NotEmpty(t, profiles, "the pprof index lists its profiles")
		for _, m := range profiles {
			if m[1] == "profile" || m[1] == "trace" { // fetched below for 1 s, not their default 30 s
				continue
			}
			for _, debug := range []string{"0", "1", "2"} {
				get(murl + "/debug/pprof/" + m[1] + "?debug=" + debug)
			}
		}
		cl, code := get(murl + "/debug/pprof/cmdline")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, cl, "--redis-url\x00redis://:xxxxx@", "cmdline is served, redacted")
		require.Contains(t, cl, "--db-auth-token\x00xxxxx")
		get(murl + "/debug/pprof/symbol")
		get(murl + "/debug/pprof/profile?seconds=1")
		get(murl + "/debug/pprof/trace?seconds=1")
	}

	// Redis down: go-redis complains (through slog), health and status say so
	require.Eventually(t, func() bool { return strings.Contains(p.Output(), `"component":"redis"`) }, 30*time.Second, 50*time.Millisecond,
		"go-redis's own lines arrive as JSON with component=redis")
	require.Eventually(t, func() bool {
		resp, err := http.Get(murl + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "pdsmux starts with Redis down")
	downSince := time.Now()
	everyEndpoint("redis down")
	out, code := run(nil, "health", "--url", base)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "redis does not answer")
	require.Regexp(t, `\(replicas: never disconnected, r1 (dis)?connected; redis: `, out, "replicas in words, not Go map syntax")
	out, code = run(nil, "status", "--redis-url", e.redis.URL(), "--metrics-url", murl)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "does not answer (--redis-url)")
	downFor := time.Since(downSince)
	redisLines := 0
	for _, line := range strings.Split(strings.TrimSpace(p.Output()), "\n") {
		if strings.Contains(line, `"component":"redis"`) {
			redisLines++
		}
	}
	require.LessOrEqual(t, redisLines, 2+int(downFor/(10*time.Second)), "go-redis lines are rate-limited (%s down)", downFor)

	// Redis up: pdsmux catches up and carries events
	e.redis.Restart()
	require.Eventually(t, func() bool { _, code := run(nil, "health", "--url", base); return code == 0 }, 30*time.Second, 100*time.Millisecond)
	e.createAccounts(2)
	e.writeCommits(10, 7)
	_, total := e.expected()
	waitLog(t, e.reader(), int64(total), 30*time.Second)
	everyEndpoint("redis up")

	out, code = run(nil, "status", "--json", "--redis-url", e.redis.URL(), "--metrics-url", murl)
	require.Equal(t, 0, code, out)
	var st struct {
		Replicas []struct {
			Name      string          `json:"name"`
			Connected *bool           `json:"connected"`
			HasCursor bool            `json:"has_cursor"`
			LastEvent json.RawMessage `json:"last_event"`
		} `json:"replicas"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st.Replicas, 2)
	require.Equal(t, "null", string(st.Replicas[0].LastEvent), "no event yet: null, not year 1")
	require.NotEqual(t, "null", string(st.Replicas[1].LastEvent))
	require.Len(t, st.Replicas, 2, "the replica with no cursor is listed: %s", out)
	require.Equal(t, "never", st.Replicas[0].Name)
	require.False(t, st.Replicas[0].HasCursor)
	require.NotNil(t, st.Replicas[0].Connected)
	require.False(t, *st.Replicas[0].Connected)
	// metrics down: unknown, not "no"; the replica with no cursor still listed
	out, code = run([]string{"PDSMUX_REDIS_URL=" + e.redis.URL()}, "status", "--metrics-url", "http://127.0.0.1:1")
	require.Equal(t, 0, code, out)
	require.Regexp(t, `(?m)^never\s+unknown\s+unknown\s+none yet\s+unknown\s+unknown`, out)
	require.Regexp(t, `(?m)^r1\s+unknown\s+unknown\s+\d+\s+unknown`, out)
	require.Contains(t, out, "does not answer")
	out, code = run(nil, "health", "--url", base)
	require.Equal(t, 0, code, out)
	// pdsmux health pointed at a replica says what answered
	out, code = run(nil, "health", "--url", e.replicas[0].URL())
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "is not pdsmux's health answer")

	p.Signal(syscall.SIGTERM)
	require.True(t, p.Wait(20*time.Second), "pdsmux stops on SIGTERM")
	log := p.Output()
	record("pdsmux serve log", log)
	debugLines := 0
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), "every log line is JSON (go-redis's included): %s", line)
		if m["level"] == "DEBUG" {
			debugLines++
		}
	}
	require.Positive(t, debugLines, "the run logged at debug level")
	t.Logf("%d outputs checked for %d secrets (%d pieces); %d log lines, %d at debug, %d from go-redis in %s of Redis down",
		len(seen), len(secrets), len(pieces), strings.Count(log, "\n"), debugLines, redisLines, downFor.Round(time.Second))
}
