package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The known variables are read from the command tree: the root's
// subcommands' flags, each through its one PDSMUX_* source; flags
// without one (--timeout, --json) add nothing.
func TestKnownEnv_WalksTheCommandTree(t *testing.T) {
	known := knownEnv(app())
	for _, name := range []string{
		"PDSMUX_REPLICA", "PDSMUX_REDIS_URL", "PDSMUX_LOG_FORMAT", "PDSMUX_DB_AUTH_TOKEN", // serve
		"PDSMUX_HEALTH_URL",  // health
		"PDSMUX_METRICS_URL", // status
	} {
		require.True(t, known[name], "%s is a flag's variable", name)
	}
	require.False(t, known["PDSMUX_TIMEOUT"], "health --timeout has no variable")
	require.False(t, known["PDSMUX_JSON"], "status --json has no variable")
	n := 0
	for _, f := range serveFlags() {
		if ef, ok := f.(interface{ GetEnvVars() []string }); ok && len(ef.GetEnvVars()) > 0 {
			n++
		}
	}
	// serve's flags, health's --url, status's --metrics-url (its
	// --redis-url and --redis-prefix are serve's variables too)
	require.Len(t, known, n+2)
}

// An unknown PDSMUX_* variable is a usage error (exit status 2) naming
// it, never its value; other variables and known ones pass.
func TestRejectUnknownEnv_NamesTheTypo(t *testing.T) {
	known := knownEnv(app())
	require.NoError(t, rejectUnknownEnv(known, []string{"PDSMUX_REDIS_URL=redis://x", "HOME=/root", "PDSMUXREDIS=1"}))

	err := rejectUnknownEnv(known, []string{"PDSMUX_REDIS_URL=redis://x", "PDSMUX_DB_AUTH_TOKN=s3cret", "PDSMUX_BOGUS=1"})
	require.Error(t, err)
	require.Equal(t, exitConfig, exitCode(err))
	require.Contains(t, err.Error(), "PDSMUX_BOGUS, PDSMUX_DB_AUTH_TOKN")
	require.NotContains(t, err.Error(), "s3cret")
	require.NotContains(t, err.Error(), "PDSMUX_REDIS_URL")
}
