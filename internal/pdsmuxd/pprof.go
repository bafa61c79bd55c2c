package pdsmuxd

import (
	"net/http"
	"os"
	"strings"
)

// redactedCmdline serves /debug/pprof/cmdline as net/http/pprof does (the
// arguments NUL-separated) but with the value of every secret-carrying
// flag redacted: the metrics listener may be bound to every interface
// (the Dockerfile does), and --redis-url or --db-auth-token on the command
// line would otherwise be readable there. Settings from PDSMUX_*
// variables never appear in it.
func redactedCmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(strings.Join(RedactArgs(os.Args), "\x00")))
}
