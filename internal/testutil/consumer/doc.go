// Package consumer is a subscribeRepos client for tests, built on indigo's
// own stream reader (events.HandleRepoStream), that records what it
// receives so tests can count events by seq and by (did, rev).
package consumer
