// Command pdsmux-demo runs two reference PDS replicas (each with its own
// data, so each firehose carries only its own writes, as Cocoon replicas'
// do), Redis, pdsmux and Caddy on loopback, creates two accounts, posts
// through both replicas, and prints the merged stream, one line per event,
// until Ctrl-C. `make demo` builds and runs it (not `go run`: that exits 1
// after Ctrl-C even when the program exits 0). Ctrl-C stops every peer,
// removes the temporary directory and exits 0; on an error the directory
// (with every peer's log) is kept and named.
package main
