// Package testenv runs the real peers pdsmux is tested and demonstrated
// against, on loopback: redis-server, the did:plc mock and reference PDS
// replicas (@atproto/pds under Node 22), Caddy with the repository's
// Caddyfile, the indigo relay in strict mode, and pdsmux itself.
//
// Peers come from scripts/deps.sh, which installs them once into
// ${XDG_CACHE_HOME:-$HOME/.cache}/pdsmux/<name>-<version>. Every process
// gets free loopback ports and a log file in the environment's directory,
// and is stopped by Close (and killed if this process dies). The
// end-to-end tests (e2e/) and the demo (cmd/pdsmux-demo) share it.
//
// It is test and demo support; pdsmux itself never imports it.
package testenv
