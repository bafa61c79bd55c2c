// Package faultproxy is a TCP proxy for fault-injection tests: it can cut
// every connection (and refuse new ones) for a while, and add latency in
// both directions, between pdsmux and Redis or a replica.
package faultproxy
