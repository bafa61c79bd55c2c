//go:build !race

package pdsmuxd_test

const raceEnabled = false
