package cursor

import (
	"context"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"
)

// SetReplicas records the names of the configured replicas in
// {prefix}:replicas, replacing the previous list, so that `pdsmux status`
// lists a replica that has no cursor yet even when the metrics listener
// does not answer.
func (l *Log) SetReplicas(ctx context.Context, names []string) error {
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, l.k.reps)
		if len(names) > 0 {
			members := make([]any, len(names))
			for i, n := range names {
				members[i] = n
			}
			p.SAdd(ctx, l.k.reps, members...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cursor: record the replica names: %w", err)
	}
	return nil
}

// Replicas returns the names SetReplicas recorded, sorted; none before the
// first start.
func (l *Log) Replicas(ctx context.Context) ([]string, error) {
	names, err := l.rdb.SMembers(ctx, l.k.reps).Result()
	if err != nil {
		return nil, fmt.Errorf("cursor: read the replica names: %w", err)
	}
	sort.Strings(names)
	return names, nil
}
