// Package proc builds and runs programs as child processes for tests, with
// their output in a log file that a failing test prints, and kills them at
// cleanup (and when the test binary dies).
package proc
