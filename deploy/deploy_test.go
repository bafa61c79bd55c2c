// Package deploy_test checks the shipped docker compose file: it loads it
// with the compose loader Docker itself uses and asserts the wiring.
package deploy_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/testutil/proc"
)

// exampleEnv reads .env.example and fills the secrets it leaves empty.
func exampleEnv(t *testing.T) []string {
	f, err := os.Open(".env.example")
	require.NoError(t, err)
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "line %q", line)
		if v == "" {
			v = "test-secret-" + strings.ToLower(k)
		}
		env = append(env, k+"="+v)
	}
	return env
}

func load(t *testing.T, env []string, profiles ...string) *types.Project {
	t.Helper()
	dir, err := filepath.Abs(".")
	require.NoError(t, err)
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"},
		cli.WithEnv(env), cli.WithWorkingDirectory(dir), cli.WithProfiles(profiles), cli.WithName("pds"))
	require.NoError(t, err)
	p, err := opts.LoadProject(context.Background())
	require.NoError(t, err)
	return p
}

// flagEnvs lists the PDSMUX_* variables the binary understands.
func flagEnvs(t *testing.T) map[string]bool {
	bin := proc.Pdsmux(t)
	out := map[string]bool{}
	for _, cmd := range []string{"serve", "status", "health"} {
		b, err := exec.Command(bin, cmd, "--help").CombinedOutput()
		require.NoError(t, err, "%s --help: %s", cmd, b)
		for _, m := range regexp.MustCompile(`\$(PDSMUX_[A-Z_]+)`).FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
	}
	return out
}

func TestCompose_Wiring(t *testing.T) {
	p := load(t, exampleEnv(t), "monitoring")
	svcs := p.Services
	names := make([]string, 0, len(svcs))
	for n := range svcs {
		names = append(names, n)
	}
	sort.Strings(names)
	require.Equal(t, []string{"alertmanager", "caddy", "cocoon1", "cocoon2", "create-invite", "grafana", "init-keys", "pdsmux", "prometheus", "redis", "redis-exporter"}, names)

	var cocoons []string
	for _, n := range names {
		s := svcs[n]
		require.True(t, s.Image != "" || s.Build != nil, "%s has an image or a build", n)
		if strings.HasPrefix(n, "cocoon") {
			cocoons = append(cocoons, n)
		}
	}
	require.Len(t, cocoons, 2)

	// Every replica: the same image, database volume, keys and settings,
	// and no relays of its own.
	for _, n := range cocoons {
		s := svcs[n]
		require.Equal(t, svcs[cocoons[0]].Image, s.Image)
		require.Contains(t, s.Image, "ghcr.io/haileyok/cocoon:")
		require.NotContains(t, s.Image, ":latest", "pinned")
		_, set := s.Environment["COCOON_RELAYS"]
		require.False(t, set, "%s must not ask relays to crawl it: COCOON_RELAYS left out (empty is one empty relay)", n)
		for _, k := range []string{"COCOON_DID", "COCOON_HOSTNAME", "COCOON_CONTACT_EMAIL", "COCOON_ADMIN_PASSWORD", "COCOON_SESSION_SECRET", "COCOON_ROTATION_KEY_PATH", "COCOON_JWK_PATH", "COCOON_DB_NAME"} {
			require.NotNil(t, s.Environment[k], "%s sets %s", n, k)
			require.Equal(t, *svcs[cocoons[0]].Environment[k], *s.Environment[k], "%s shares %s", n, k)
		}
		require.True(t, slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Source == "cocoon-data" && v.Target == "/data/cocoon"
		}), "%s uses the shared database volume", n)
	}

	// Every replica signs OAuth DPoP nonces with the one secret init-keys
	// made: Cocoon reads "nonce.secret" from its working directory, so every
	// replica runs in the shared keys directory.
	nonceSource(t, p, cocoons)

	// pdsmux tails every replica, uses the Redis service, builds for the
	// host, and sets only variables it knows.
	mux := svcs["pdsmux"]
	require.NotNil(t, mux.Build)
	// Docker's default driver refuses a multi-platform build ("not
	// supported for the docker driver"): build for the host; docs/deploy.md
	// shows buildx for both.
	require.Empty(t, mux.Build.Platforms, "build for the host by default")
	require.FileExists(t, filepath.Join(mux.Build.Context, mux.Build.Dockerfile))
	reps := strings.Split(*mux.Environment["PDSMUX_REPLICA"], ",")
	require.Len(t, reps, len(cocoons))
	for i, n := range cocoons {
		require.Equal(t, n+"=http://"+n+":8080", reps[i])
	}
	require.Equal(t, "redis://redis:6379/0", *mux.Environment["PDSMUX_REDIS_URL"])
	require.Contains(t, mux.DependsOn, "redis")
	known := flagEnvs(t)
	for k := range mux.Environment {
		if strings.HasPrefix(k, "PDSMUX_") {
			require.True(t, known[k], "pdsmux understands %s", k)
		}
	}

	// Redis persists: AOF with fsync every second on a named volume, and
	// never evicts pdsmux's keys.
	r := svcs["redis"]
	cmd := strings.Join(r.Command, " ")
	require.Contains(t, cmd, "--appendonly yes")
	require.Contains(t, cmd, "--appendfsync everysec")
	require.Contains(t, cmd, "--maxmemory-policy noeviction")
	require.True(t, slices.ContainsFunc(r.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Source == "redis-data" && v.Target == "/data" }))

	// Caddy runs the repository's Caddyfile, sends com.atproto.sync.* to
	// pdsmux and everything else to every replica.
	c := svcs["caddy"]
	caddyfile, err := filepath.Abs(filepath.Join("..", "Caddyfile"))
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(c.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Source == caddyfile && v.Target == "/etc/caddy/Caddyfile"
	}), "caddy mounts the repository's Caddyfile")
	require.Equal(t, "pdsmux:2480", *c.Environment["PDSMUX_UPSTREAM"])
	up := strings.Fields(*c.Environment["REPLICA_UPSTREAMS"])
	for i, n := range cocoons {
		require.Equal(t, n+":8080", up[i])
	}
	require.Equal(t, "pds.example.com", *c.Environment["PDS_SITE"])
	body, err := os.ReadFile(caddyfile)
	require.NoError(t, err)
	require.Regexp(t, `@sync path /xrpc/com.atproto.sync.\*\s+handle @sync \{\s+reverse_proxy \{\$PDSMUX_UPSTREAM\}`, string(body))

	// The first invite: a one-shot on the replicas' image, after cocoon1 is
	// healthy, with the replicas' admin password, writing into keys/.
	inv := svcs["create-invite"]
	require.Equal(t, svcs["cocoon1"].Image, inv.Image)
	require.Equal(t, "no", inv.Restart)
	require.Equal(t, []string{"/bin/sh", "/create-invite.sh"}, []string(inv.Entrypoint))
	require.Equal(t, types.ServiceConditionHealthy, inv.DependsOn["cocoon1"].Condition)
	require.NotEmpty(t, svcs["cocoon1"].HealthCheck.Test, "cocoon1 has a health check to wait for")
	require.Equal(t, "http://cocoon1:8080", *inv.Environment["INVITE_URL"])
	require.Equal(t, *svcs["cocoon1"].Environment["COCOON_ADMIN_PASSWORD"], *inv.Environment["COCOON_ADMIN_PASSWORD"])
	script, err := filepath.Abs("create-invite.sh")
	require.NoError(t, err)
	require.FileExists(t, script)
	require.True(t, slices.ContainsFunc(inv.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Source == script && v.Target == "/create-invite.sh" && v.ReadOnly
	}), "create-invite mounts deploy/create-invite.sh")
	keys, err := filepath.Abs("keys")
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(inv.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Source == keys && v.Target == "/keys" && !v.ReadOnly
	}), "create-invite writes the code into deploy/keys")

	// Monitoring: every scrape target is a service on a port it listens
	// on; alerts go to the Alertmanager service.
	targets := scrapeTargets(t)
	require.ElementsMatch(t, []string{"pdsmux:2481", "cocoon1:6009", "cocoon2:6009", "caddy:2019", "redis-exporter:9121"}, targets["scrape"])
	require.Equal(t, []string{"alertmanager:9093"}, targets["alerting"])
	for _, n := range cocoons {
		require.Equal(t, ":6009", *svcs[n].Environment["METRICS_LISTEN_ADDRESS"])
	}
	require.Equal(t, ":2019", *c.Environment["CADDY_METRICS_ADDR"])
	require.Regexp(t, `(?m)^http://\{\$CADDY_METRICS_ADDR::0\} \{\s+metrics\s+\}`, string(body))
	require.Equal(t, "redis://redis:6379", *svcs["redis-exporter"].Environment["REDIS_ADDR"])
	for _, n := range []string{"prometheus", "alertmanager", "grafana", "redis-exporter"} {
		require.Equal(t, []string{"monitoring"}, svcs[n].Profiles, n)
		for _, port := range svcs[n].Ports {
			require.Equal(t, "127.0.0.1", port.HostIP, "%s publishes on loopback only", n)
		}
	}
	require.True(t, slices.ContainsFunc(svcs["alertmanager"].Volumes, func(v types.ServiceVolumeConfig) bool {
		return strings.HasSuffix(v.Source, "/alertmanager") && v.Target == "/etc/alertmanager"
	}))
	require.Equal(t, "test-secret-grafana_admin_password", *svcs["grafana"].Environment["GF_SECURITY_ADMIN_PASSWORD"])
}

// Grafana never falls back to admin/admin: the file refuses to load without
// a password, unset or empty, with the monitoring profile or without (compose
// interpolates every service, whatever profiles are active).
func TestCompose_GrafanaNeedsAPassword(t *testing.T) {
	for _, c := range []struct {
		unset    bool
		profiles []string
	}{{true, []string{"monitoring"}}, {false, []string{"monitoring"}}, {true, nil}} {
		var env []string
		for _, kv := range exampleEnv(t) {
			if strings.HasPrefix(kv, "GRAFANA_ADMIN_PASSWORD=") {
				if c.unset {
					continue
				}
				kv = "GRAFANA_ADMIN_PASSWORD="
			}
			env = append(env, kv)
		}
		opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"}, cli.WithEnv(env), cli.WithWorkingDirectory("."),
			cli.WithName("pds"), cli.WithProfiles(c.profiles))
		require.NoError(t, err)
		_, err = opts.LoadProject(context.Background())
		require.ErrorContains(t, err, "set GRAFANA_ADMIN_PASSWORD in .env", "%+v", c)
	}
}

func TestCompose_MissingSecretIsAClearError(t *testing.T) {
	var env []string
	for _, kv := range exampleEnv(t) {
		if !strings.HasPrefix(kv, "COCOON_SESSION_SECRET=") {
			env = append(env, kv)
		}
	}
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"}, cli.WithEnv(env), cli.WithWorkingDirectory("."), cli.WithName("pds"))
	require.NoError(t, err)
	_, err = opts.LoadProject(context.Background())
	require.ErrorContains(t, err, "set COCOON_SESSION_SECRET in .env")
}

// nonceSource checks that every replica reads one nonce.secret, made by
// init-keys before any replica starts and kept across container
// recreation (a bind mount of deploy/keys, not the container's own disk).
// Cocoon (server/server.go at the pinned commit) reads and writes
// "nonce.secret" relative to its working directory; no setting names it.
func nonceSource(t *testing.T, p *types.Project, cocoons []string) {
	t.Helper()
	keys, err := filepath.Abs("keys")
	require.NoError(t, err)
	init := p.Services["init-keys"]
	script, err := filepath.Abs("init-keys.sh")
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(init.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Source == script && v.ReadOnly && []string(init.Entrypoint)[len(init.Entrypoint)-1] == v.Target
	}), "init-keys runs deploy/init-keys.sh: %v", init.Entrypoint)
	require.True(t, slices.ContainsFunc(init.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Source == keys && v.Target == "/keys" && !v.ReadOnly
	}), "init-keys writes into deploy/keys")
	secret := map[string]string{}
	for _, n := range cocoons {
		s := p.Services[n]
		require.Equal(t, types.ServiceConditionCompletedSuccessfully, s.DependsOn["init-keys"].Condition, "%s starts after init-keys", n)
		require.Equal(t, "/keys", s.WorkingDir, "%s reads nonce.secret from the shared keys directory", n)
		i := slices.IndexFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == s.WorkingDir })
		require.GreaterOrEqual(t, i, 0, "%s mounts its working directory", n)
		require.Equal(t, types.VolumeTypeBind, s.Volumes[i].Type, "%s: the secret outlives the container", n)
		secret[n] = filepath.Join(s.Volumes[i].Source, "nonce.secret")
	}
	for _, n := range cocoons {
		require.Equal(t, filepath.Join(keys, "nonce.secret"), secret[n], "%s uses the one secret init-keys makes", n)
	}
}

// init-keys.sh makes the nonce secret once: 32 random bytes, readable by
// the owner only, kept on the next run, remade when empty.
func TestInitKeys_NonceSecretMadeOnce(t *testing.T) {
	dir := t.TempDir()
	run := func() string {
		cmd := exec.Command("sh", "init-keys.sh")
		cmd.Env = append(os.Environ(), "KEYS_DIR="+dir, "COCOON_INIT_KEYS=")
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", b)
		return string(b)
	}
	path := filepath.Join(dir, "nonce.secret")
	require.Contains(t, run(), "nonce secret generated")
	first, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, first, 32)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	require.Contains(t, run(), "already exists")
	again, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, first, again, "a second run keeps the secret")

	require.NoError(t, os.WriteFile(path, nil, 0o600))
	require.Contains(t, run(), "nonce secret generated")
	remade, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, remade, 32, "an empty secret is replaced")
	require.NotEqual(t, first, remade)
}

// create-invite.sh refuses INVITE_USES=0 itself, saying Cocoon needs at
// least one use (Cocoon answers a bare 400 that would read like a wrong
// password), before it asks anything.
func TestCreateInvite_RefusesZeroUses(t *testing.T) {
	for _, uses := range []string{"0", "00", "abc", "-1"} {
		cmd := exec.Command("sh", "create-invite.sh")
		cmd.Env = append(os.Environ(), "INVITE_USES="+uses, "INVITE_URL=http://127.0.0.1:1",
			"COCOON_ADMIN_PASSWORD=pw", "INVITE_FILE="+filepath.Join(t.TempDir(), "code.txt"))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%s", out)
		require.Equal(t, 2, ee.ExitCode(), "%s", out)
		require.Contains(t, string(out), "INVITE_USES must be")
		require.NotContains(t, string(out), "PASSWORD")
		require.NotContains(t, string(out), "cannot reach", "nothing is asked")
		if strings.Trim(uses, "0") == "" {
			require.Contains(t, string(out), "at least 1")
		}
	}
}
