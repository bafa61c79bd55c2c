// Package loopback runs the real peers pdsmux works with, on loopback:
// redis-server, the did:plc mock and reference PDS replicas (@atproto/pds
// under Node 22), Caddy with the repository's Caddyfile, the indigo relay
// in strict mode, and pdsmux itself; and a small XRPC client that creates
// accounts and records on a PDS.
//
// Peers come from scripts/deps.sh, which installs them once into
// ${XDG_CACHE_HOME:-$HOME/.cache}/pdsmux/<name>-<version>. Every process
// gets free loopback ports and a log file in the environment's directory,
// and is stopped by Close (and killed if this process dies).
//
// It depends on no test package: the demo (cmd/pdsmux-demo) and the
// benchmarks (bench/) are programs built on it, and the end-to-end tests
// (e2e/) and the test helpers in internal/testutil use it too. pdsmux
// itself never imports it.
package loopback
