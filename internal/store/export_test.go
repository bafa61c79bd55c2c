package store

import (
	"context"
	"strconv"
)

// SetSchemaVersionForTest pretends another pdsmux version wrote the file.
func SetSchemaVersionForTest(ctx context.Context, s *Store, v int) error {
	return s.b.Exec(ctx, []Stmt{{`UPDATE meta SET value = ? WHERE key = 'schema_version'`, []any{strconv.Itoa(v)}}})
}
