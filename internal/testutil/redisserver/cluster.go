package redisserver

import (
	"context"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of primaries without replicas, every node a
// redis-server on a free loopback port.
type Cluster struct {
	t     testing.TB
	Nodes []*Server
}

// StartCluster starts n (at least 3) cluster-enabled servers, joins them
// with `redis-cli --cluster create` (the slots split evenly) and waits
// until every node reports the cluster healthy. Needs Redis 7 (cluster-port).
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli not found in PATH (apt-get install redis-tools): %v", err)
	}
	c := &Cluster{t: t}
	args := []string{"--cluster", "create"}
	for range n {
		s := Start(t, Options{Cluster: true})
		c.Nodes = append(c.Nodes, s)
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range c.Nodes {
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr()})
		for {
			info, err := rdb.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_slots_ok:16384") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)+"\r") {
				break
			}
			if time.Now().After(deadline) {
				rdb.Close()
				t.Fatalf("cluster node %s not healthy: %q %v", s.Addr(), info, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		rdb.Close()
	}
	return c
}

// Addrs are the nodes' host:port.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		out[i] = s.Addr()
	}
	return out
}

// URL is a cluster URL naming every node: redis://first?addr=...&cluster=true.
func (c *Cluster) URL() string {
	q := url.Values{}
	for _, a := range c.Addrs()[1:] {
		q.Add("addr", a)
	}
	q.Set("cluster", "true")
	return "redis://" + c.Nodes[0].Addr() + "?" + q.Encode()
}

// Client returns a go-redis cluster client closed at cleanup.
func (c *Cluster) Client() *redis.ClusterClient {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { rdb.Close() })
	return rdb
}
