package loopback

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
)

//go:embed js/*.cjs
var scripts embed.FS

// Deps are the installed peers.
type Deps struct {
	Node       string // node binary (v22)
	PDSModules string // node_modules with @atproto/pds and @did-plc/server
	Caddy      string
	Relay      string
	Rainbow    string
	Redis      string // redis-server
	Pdsmux     string // built from this checkout
}

// RepoRoot is the repository root.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Peers runs scripts/deps.sh for the named peers (it installs what is
// missing, once; progress of first-time installs goes to progress) and
// returns the KEY=path lines it printed.
func Peers(progress io.Writer, which ...string) (map[string]string, error) {
	root := RepoRoot()
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "deps.sh"))
	cmd.Args = append(cmd.Args, which...)
	cmd.Dir = root
	cmd.Stderr = progress
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("scripts/deps.sh %s: %w", strings.Join(which, " "), err)
	}
	paths := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			paths[k] = v
		}
	}
	return paths, nil
}

// LoadDeps installs the named peers (see Peers) and builds pdsmux into
// binDir.
func LoadDeps(binDir string, progress io.Writer, which ...string) (Deps, error) {
	root := RepoRoot()
	var d Deps
	p, err := Peers(progress, which...)
	if err != nil {
		return d, err
	}
	d.Node, d.PDSModules, d.Caddy, d.Relay, d.Rainbow = p["NODE"], p["PDS_MODULES"], p["CADDY"], p["RELAY"], p["RAINBOW"]
	if d.Redis, err = exec.LookPath("redis-server"); err != nil {
		return d, fmt.Errorf("redis-server not on PATH (apt-get install redis-server): %w", err)
	}
	d.Pdsmux = filepath.Join(binDir, "pdsmux")
	// built as the image builds it (static, stripped), so memory figures match
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", d.Pdsmux, "./cmd/pdsmux")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		return d, fmt.Errorf("build pdsmux: %v\n%s", err, b)
	}
	return d, nil
}

// Env is a set of running peers in one directory.
type Env struct {
	Dir  string
	Deps Deps

	mu    sync.Mutex
	procs []*Proc
}

// New makes an environment in dir (created if needed).
func New(dir string, deps Deps) (*Env, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{"plc.cjs", "pds.cjs"} {
		b, err := scripts.ReadFile("js/" + name)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, err
		}
	}
	return &Env{Dir: dir, Deps: deps}, nil
}

// baseEnv is a clean environment for children: no stray PDSMUX_* or
// PDS_* settings from the caller.
func baseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LANG=C.UTF-8"}
}

// Start runs bin as a named process.
func (e *Env) Start(name, bin string, args []string, env ...string) (*Proc, error) {
	p := &Proc{Name: name, Log: filepath.Join(e.Dir, name+".log"), bin: bin, args: args, env: append(baseEnv(), env...), dir: e.Dir}
	if err := p.start(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p, nil
}

// Close stops every process, newest first.
func (e *Env) Close() {
	e.mu.Lock()
	procs := e.procs
	e.procs = nil
	e.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(5 * time.Second)
	}
}

// Logs returns the tail of every process log, for a failing test.
func (e *Env) Logs(lines int) string {
	e.mu.Lock()
	procs := append([]*Proc(nil), e.procs...)
	e.mu.Unlock()
	var b strings.Builder
	for _, p := range procs {
		data, _ := os.ReadFile(p.Log)
		ls := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(ls) > lines {
			ls = ls[len(ls)-lines:]
		}
		fmt.Fprintf(&b, "---- %s (%s) ----\n%s\n", p.Name, p.Log, strings.Join(ls, "\n"))
	}
	return b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Redis starts redis-server with AOF (everysec).
func (e *Env) Redis(name string, extra ...string) (*Proc, string, error) {
	port, err := FreePort()
	if err != nil {
		return nil, "", err
	}
	dir := filepath.Join(e.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	p, err := e.Start(name, e.Deps.Redis, append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec"}, extra...))
	if err != nil {
		return nil, "", err
	}
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("redis-cli", "-p", fmt.Sprint(port), "ping").Output()
		if err == nil && strings.TrimSpace(string(out)) == "PONG" {
			return p, url, nil
		}
		if time.Now().After(deadline) {
			return nil, "", fmt.Errorf("redis-server did not start; see %s", p.Log)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// PLC starts the did:plc mock and returns its URL (http://localhost:PORT:
// the reference PDS warns about IP literals).
func (e *Env) PLC() (*Proc, string, error) {
	port, err := FreePort()
	if err != nil {
		return nil, "", err
	}
	p, err := e.Start("plc", e.Deps.Node, []string{filepath.Join(e.Dir, "plc.cjs")},
		"PORT="+fmt.Sprint(port), "PDS_MODULES="+e.Deps.PDSModules)
	if err != nil {
		return nil, "", err
	}
	url := fmt.Sprintf("http://localhost:%d", port)
	if err := WaitHTTP(url+"/_health", 30*time.Second, p); err != nil {
		return nil, "", err
	}
	return p, url, nil
}

// PDSSecrets are shared by replicas of one PDS.
type PDSSecrets struct {
	JWTSecret     string
	AdminPassword string
	RotationKey   string // hex secp256k1 private key
}

// NewPDSSecrets makes a fresh set.
func NewPDSSecrets() (PDSSecrets, error) {
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return PDSSecrets{}, err
	}
	return PDSSecrets{JWTSecret: randomHex(16), AdminPassword: randomHex(8), RotationKey: hex.EncodeToString(k.Bytes())}, nil
}

// PDS is one reference PDS process.
type PDS struct {
	*Proc
	URL  string // http://localhost:PORT
	Port int
}

// PDS starts a reference PDS replica on dataDir. publicURL is what its DID
// documents name (the Caddy front); replicas sharing dataDir share one
// database and must be started one after another.
func (e *Env) PDS(name, dataDir, plcURL, publicURL string, sec PDSSecrets) (*PDS, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "blobs"), 0o755); err != nil {
		return nil, err
	}
	p, err := e.Start(name, e.Deps.Node, []string{filepath.Join(e.Dir, "pds.cjs")},
		"PDS_MODULES="+e.Deps.PDSModules,
		"PDS_HOSTNAME=localhost",
		"PDS_PORT="+fmt.Sprint(port),
		"PDS_DEV_MODE=true",
		"PDS_JWT_SECRET="+sec.JWTSecret,
		"PDS_ADMIN_PASSWORD="+sec.AdminPassword,
		"PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX="+sec.RotationKey,
		"PDS_DATA_DIRECTORY="+dataDir,
		"PDS_BLOBSTORE_DISK_LOCATION="+filepath.Join(dataDir, "blobs"),
		"PDS_DID_PLC_URL="+plcURL,
		"PDS_INVITE_REQUIRED=false",
		"PDS_CRAWLERS=",
		"PUBLIC_URL="+publicURL,
		"LOG_ENABLED=true",
	)
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("http://localhost:%d", port)
	if err := WaitHTTP(url+"/xrpc/_health", 60*time.Second, p); err != nil {
		return nil, err
	}
	return &PDS{Proc: p, URL: url, Port: port}, nil
}

// Caddy runs the repository's Caddyfile on 127.0.0.1:port in front of
// pdsmux and the replicas. pdsmuxAddr is PDSMUX_UPSTREAM: one host:port,
// or several separated by spaces (an HA pair, docs/ha.md).
func (e *Env) Caddy(name string, port int, pdsmuxAddr string, replicaAddrs []string, extraEnv ...string) (*Proc, error) {
	p, err := e.Start(name, e.Deps.Caddy, []string{"run", "--adapter", "caddyfile", "--config", filepath.Join(RepoRoot(), "Caddyfile")},
		append([]string{fmt.Sprintf("PDS_SITE=:%d", port),
			"CADDY_BIND=127.0.0.1",
			"PDSMUX_UPSTREAM=" + pdsmuxAddr,
			"REPLICA_UPSTREAMS=" + strings.Join(replicaAddrs, " "),
			"HEALTH_INTERVAL=1s",
			"XDG_DATA_HOME=" + filepath.Join(e.Dir, name+"-data"),
			"XDG_CONFIG_HOME=" + filepath.Join(e.Dir, name+"-config"),
		}, extraEnv...)...,
	)
	if err != nil {
		return nil, err
	}
	if err := WaitHTTP(fmt.Sprintf("http://127.0.0.1:%d/xrpc/_health", port), 30*time.Second, p); err != nil {
		return nil, err
	}
	return p, nil
}

// Pdsmux runs pdsmux serve with args (listen addresses are added).
type Pdsmux struct {
	*Proc
	Addr        string
	MetricsAddr string
}

// Pdsmux starts pdsmux. Its database is file:DIR/name.db unless args
// give --db-url (an HA pair shares one).
func (e *Env) Pdsmux(name string, args ...string) (*Pdsmux, error) {
	addrs, err := FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	addr, maddr := addrs[0], addrs[1]
	all := []string{"serve", "--listen", addr, "--metrics-listen", maddr, "--log-format", "text"}
	if !slices.Contains(args, "--db-url") {
		all = append(all, "--db-url", "file:"+filepath.Join(e.Dir, name+".db"))
	}
	all = append(all, args...)
	p, err := e.Start(name, e.Deps.Pdsmux, all)
	if err != nil {
		return nil, err
	}
	if err := WaitHTTP("http://"+addr+"/xrpc/_health", 30*time.Second, p); err != nil {
		return nil, err
	}
	return &Pdsmux{Proc: p, Addr: addr, MetricsAddr: maddr}, nil
}
