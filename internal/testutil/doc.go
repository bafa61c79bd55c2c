// Package testutil holds helpers shared by tests: free loopback ports,
// process logs that a failing test prints, and metrics read from a
// registry (Value) or a /metrics endpoint (Scrape). Subpackages start
// real peers (redis-server, fake replicas). Nothing here is linked into
// pdsmux.
package testutil
