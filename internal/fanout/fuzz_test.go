package fanout_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pdsmux/pdsmux/internal/fanout"
)

// FuzzSubscribeQuery sends subscribeRepos requests with arbitrary query
// strings (plain GETs, so the handler stops before the upgrade): every
// answer is an HTTP 400 with an XRPC error body, a cursor is accepted
// exactly when it is a base-10 integer in [0, 2^63), and a refused one is
// named in the message.
func FuzzSubscribeQuery(f *testing.F) {
	srv := fanout.NewServer(fanout.Config{}, nil, nil, nil, nil, nil, quiet)
	for _, q := range []string{"", "cursor=0", "cursor=1764000000000001", "cursor=-1", "cursor=abc",
		"cursor=9223372036854775808", "cursor=%00", "cursor=1&cursor=x", "cursor=+5", "cursor", "a=b;c"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		r := httptest.NewRequest(http.MethodGet, "/xrpc/com.atproto.sync.subscribeRepos", nil)
		r.URL.RawQuery = rawQuery
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest {
			t.Fatalf("status %d for %q", w.Code, rawQuery)
		}
		var body struct{ Error, Message string }
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != "InvalidRequest" || body.Message == "" {
			t.Fatalf("body %q for %q: %v", w.Body.String(), rawQuery, err)
		}
		c := r.URL.Query().Get("cursor")
		v, isInt := new(big.Int).SetString(c, 10)
		valid := c == "" || isInt && v.Sign() >= 0 && v.Cmp(big.NewInt(math.MaxInt64)) <= 0
		refused := strings.HasPrefix(body.Message, "cursor must be") || strings.HasSuffix(body.Message, fmt.Sprintf("is out of range (at most %d)", int64(math.MaxInt64)))
		if valid == refused {
			t.Fatalf("cursor %q: refused=%v, message %q", c, refused, body.Message)
		}
	})
}
