package store

import (
	"context"
	"strconv"
)

// SetSchemaVersionForTest pretends another pdsmux version wrote the file.
func SetSchemaVersionForTest(ctx context.Context, s *Store, v int) error {
	_, err := s.db.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = 'schema_version'`, strconv.Itoa(v))
	return err
}
