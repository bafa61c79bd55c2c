package cursor

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

// The scripts order revs exactly as Go does, including bytes above 0x7f
// (strcoll would not) and a rev that is a prefix of another.
func TestRevLess_LuaMatchesGo(t *testing.T) {
	srv := redisserver.Start(t, redisserver.Options{})
	script := redis.NewScript(luaRevLess + `
local out = {}
for i = 1, #ARGV, 2 do out[#out + 1] = revLess(ARGV[i], ARGV[i + 1]) and 1 or 0 end
return out
`)
	revs := []string{"", "2", "3lbbbbbbbbb22", "3lbbbbbbbbb23", "3lbbbbbbbbb2", "3mzzzzzzzzzzz", "a", "B", "\xff", "\x00"}
	var args []any
	var want []int64
	for _, a := range revs {
		for _, b := range revs {
			args = append(args, a, b)
			w := int64(0)
			if RevLess(a, b) {
				w = 1
			}
			want = append(want, w)
		}
	}
	got, err := script.Run(context.Background(), srv.Client(), []string{"{pdsmux}:none"}, args...).Int64Slice()
	require.NoError(t, err)
	require.Equal(t, want, got)
}
