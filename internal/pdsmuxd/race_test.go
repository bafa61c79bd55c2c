//go:build race

package pdsmuxd_test

// raceEnabled: the race detector slows pdsmux by an order of magnitude;
// the largest suites run scaled down under it and at full size in the
// plain pass of make test-unit.
const raceEnabled = true
