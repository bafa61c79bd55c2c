// Package redisserver starts a real redis-server for tests, on a free
// loopback port in a temporary directory, and can kill and restart it;
// StartCluster joins several into a real Redis Cluster.
package redisserver
