// Command bench measures pdsmux side by side with indigo's rainbow fan-out
// daemon on the same generated stream, in one run, and writes
// bench/RESULTS.md. `make bench` runs it; `-quick` is a smoke run of every
// scenario (into bench/out/quick.md), `-only` picks scenarios.
//
// pdsmux runs on its defaults (commit signatures checked against the
// bench's own PLC); rainbow on its defaults in three persistence modes:
// pebble on disk (fsync per event, hard-coded in indigo's pebblepersist),
// pebble on /dev/shm, and its in-memory ring (`--persist-db ""`).
//
// Scenarios: R, the Redis ceiling (pipelined XADD, AOF everysec, the same
// frames); A and B, saturation with 1 and 3 replicas x 1 subscriber; C,
// added latency at 1,000 events/s; U, the users' scenario (2,000 events/s
// over 2 replicas x 50 subscribers with the daemons pinned to one core by
// taskset); H, a replica sending 4.9 MB frames as fast as pdsmux reads
// them beside a normal one. The report checks issue 15's targets.
//
// The load generator serves pre-generated, real signed repo commits (mostly
// ~1 KB posts, some 50-200 KB commits) as one or more fake replicas, at a
// set rate or as fast as the daemon reads them. Subscribers in this
// process record when each (did, rev) arrives; added latency is the time
// from the generator's send to a subscriber's receive. RSS and CPU time
// come from /proc for the daemon and, for pdsmux, its redis-server.
package main
