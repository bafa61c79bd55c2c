// Package testutil holds helpers shared by tests: free loopback ports and
// process logs that a failing test prints. Subpackages start real peers
// (redis-server, fake replicas). Nothing here is linked into pdsmux.
package testutil
