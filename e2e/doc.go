// Package e2e runs pdsmux against real peers: reference PDS replicas
// (@atproto/pds), Caddy with the repository's Caddyfile, and the indigo
// relay in strict mode, all on loopback. Run with `make e2e` (build tag
// e2e); the peers are installed once by scripts/deps.sh.
package e2e
