// Package pool knows the replicas' HTTP side: their base URLs and which of
// them currently answer. It runs an active health check against each
// replica's /xrpc/_health and takes passive reports (a failed proxied
// request) from its users, and hands out replicas healthy-first in
// rotating order.
//
// It does not proxy (internal/proxy) or tail firehoses (internal/tail).
package pool
