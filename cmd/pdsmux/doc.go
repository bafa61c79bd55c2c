// Command pdsmux merges the firehoses of several replicas of one atproto
// PDS into one subscribeRepos stream. See README.md.
//
// Subcommands: serve (run the daemon, internal/pdsmuxd), status (what the
// log in Redis and a running daemon's metrics show) and health (exit 0
// when a running daemon answers its health check). Every flag has a
// PDSMUX_* environment variable; docs/configuration.md lists them. This
// package only turns flags into a pdsmuxd.Config; all checking is done
// there, once.
package main
