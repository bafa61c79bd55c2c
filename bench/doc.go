// Command bench measures pdsmux side by side with indigo's rainbow fan-out
// daemon on the same generated stream, in one run, and writes
// bench/RESULTS.md. `make bench` runs it.
//
// The load generator serves pre-generated, real signed repo commits (mostly
// ~1 KB posts, some 50-200 KB commits) as one or more fake replicas, at a
// set rate or as fast as the daemon reads them. Subscribers in this
// process record when each (did, rev) arrives; added latency is the time
// from the generator's send to a subscriber's receive. RSS and CPU time
// come from /proc for the daemon (and, for pdsmux, its redis-server).
package main
