//go:build race

package fanout_test

// raceEnabled: timing assertions are skipped under the race detector,
// which slows goroutines by an order of magnitude and unevenly.
const raceEnabled = true
