// Package libsqlserver starts a real libsql server for tests: Turso's CLI
// (tursodb, installed once by scripts/deps.sh) with --sync-server, which
// serves a database file over HTTP with the hrana v2 pipeline protocol
// that libsql-client-go speaks for http:// and https:// URLs. It listens
// on a free loopback port and is killed at test cleanup.
//
// It is not sqld: it keeps no stream between requests (no baton), so a
// client that needs interactive transactions fails against it, which is
// exactly what the store must not need.
package libsqlserver
