package loopback

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the relay's sqlite database, to register its upstream host
)

// Relay is the indigo relay, in strict sync mode (no lenient flag).
type Relay struct {
	*Proc
	URL string
}

// Relay starts the indigo relay subscribed to host ("localhost:PORT",
// plain ws), resolving DIDs through plcURL.
//
// The relay refuses loopback hosts through requestCrawl ("not a public IP
// address"), so the host row is written into its database before it
// starts: it is then a host like any other, and everything else is the
// stock relay.
func (e *Env) Relay(name, host, plcURL string) (*Relay, error) {
	addrs, err := FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.Dir, name)
	if err := os.MkdirAll(filepath.Join(dir, "persist"), 0o755); err != nil {
		return nil, err
	}
	dbPath := filepath.Join(dir, "relay.sqlite")
	url := "http://" + addrs[0]
	args := []string{
		"--admin-password", randomHex(8), "--plc-host", plcURL, "--log-level", "info",
		"serve", "--db-url", "sqlite://" + dbPath, "--persist-dir", filepath.Join(dir, "persist"),
		"--bind", addrs[0], "--metrics-listen", addrs[1],
		"--allow-insecure-hosts", "--disable-request-crawl",
	}
	// First start creates the schema; then register the host and restart.
	p, err := e.Start(name, e.Deps.Relay, args)
	if err != nil {
		return nil, err
	}
	if err := WaitHTTP(url+"/xrpc/_health", 60*time.Second, p); err != nil {
		return nil, err
	}
	p.Stop(10 * time.Second)
	if err := addHost(dbPath, host); err != nil {
		return nil, err
	}
	if err := p.start(); err != nil {
		return nil, err
	}
	if err := WaitHTTP(url+"/xrpc/_health", 60*time.Second, p); err != nil {
		return nil, err
	}
	return &Relay{Proc: p, URL: url}, nil
}

func addHost(dbPath, host string) error {
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	now := time.Now().UTC()
	// last_seq 1: the relay asks for cursor=1, i.e. everything pdsmux has.
	_, err = db.Exec(`INSERT INTO host (created_at, updated_at, hostname, no_ssl, account_limit, trusted, status, last_seq, account_count)
		VALUES (?, ?, ?, 1, 100000, 1, 'active', 1, 0)`, now, now, host)
	if err != nil {
		return fmt.Errorf("register host %s in the relay database: %w", host, err)
	}
	return nil
}

// ChainWarnings counts the relay's log lines that report a broken repo
// chain (this relay version accepts such commits and only warns).
func (r *Relay) ChainWarnings() (prevData, since int, lines []string, err error) {
	b, err := os.ReadFile(r.Log)
	if err != nil {
		return 0, 0, nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(l, "miss-matching prevData"):
			prevData++
			lines = append(lines, l)
		case strings.Contains(l, "miss-matching since"):
			since++
			lines = append(lines, l)
		}
	}
	return prevData, since, lines, nil
}
