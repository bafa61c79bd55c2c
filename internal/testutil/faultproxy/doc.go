// Package faultproxy is a TCP proxy for fault-injection tests: it can cut
// every connection (and refuse new ones) for a while, add latency and
// limit the rate in both directions (a slow link), between pdsmux and Redis or a replica.
package faultproxy
