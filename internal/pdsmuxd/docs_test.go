package pdsmuxd_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/fakepds"
	"github.com/pdsmux/pdsmux/internal/testutil"
	"github.com/pdsmux/pdsmux/internal/testutil/proc"
	"github.com/pdsmux/pdsmux/internal/testutil/redisserver"
)

var metricName = regexp.MustCompile(`pdsmux_[a-z_]+`)

// exported lists the pdsmux_* metric families a running pdsmux exposes.
func exported(t *testing.T) map[string]bool {
	e := newEnv(t, fakepds.ModeOwn, 1, redisserver.Options{})
	cfg := e.config()
	cfg.Relays, cfg.Hostname = []string{"http://127.0.0.1:1"}, "pds.example.test"
	run := e.start(cfg, "pdsmux")
	waitConnected(t, run.rt)
	e.createAccounts(1)
	e.writeCommits(5, 1)
	waitLog(t, e.reader(), 7, 10*time.Second)
	out := map[string]bool{}
	for k := range testutil.Scrape(t, run.rt.MetricsAddr()) {
		name, _, _ := strings.Cut(k, "{")
		if strings.HasPrefix(name, "pdsmux_") {
			out[strings.TrimSuffix(strings.TrimSuffix(name, "_count"), "_sum")] = true
		}
	}
	return out
}

func repoFile(t *testing.T, parts ...string) string {
	b, err := os.ReadFile(filepath.Join(append([]string{proc.ModuleRoot()}, parts...)...))
	require.NoError(t, err)
	return string(b)
}

// Every metric the docs name exists on /metrics, every exported metric is
// documented, and the dashboard and alert rules use only real metrics.
func TestDocs_MetricsMatchWhatIsExported(t *testing.T) {
	t.Parallel()
	have := exported(t)
	documented := map[string]bool{}
	for _, m := range metricName.FindAllString(repoFile(t, "docs", "metrics.md"), -1) {
		documented[m] = true
		require.True(t, have[m], "docs/metrics.md names %s, which /metrics does not have", m)
	}
	var undocumented []string
	for m := range have {
		if !documented[m] {
			undocumented = append(undocumented, m)
		}
	}
	sort.Strings(undocumented)
	require.Empty(t, undocumented, "exported but missing from docs/metrics.md")

	base := func(m string) string {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b := strings.TrimSuffix(m, suf); b != m && have[b] {
				return b
			}
		}
		return m
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal([]byte(repoFile(t, "deploy", "grafana", "dashboards", "pdsmux.json")), &dash))
	require.NotEmpty(t, dash.Panels)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				require.True(t, have[base(m)], "dashboard panel %q uses %s, which does not exist", p.Title, m)
			}
		}
	}
	for _, m := range metricName.FindAllString(repoFile(t, "deploy", "prometheus", "alerts.yml"), -1) {
		require.True(t, have[base(m)], "alert rules use %s, which does not exist", m)
	}
}

// Every flag of pdsmux serve is in docs/configuration.md with its variable.
func TestDocs_ConfigurationListsEveryFlag(t *testing.T) {
	t.Parallel()
	help, err := exec.Command(proc.Pdsmux(t), "serve", "--help").CombinedOutput()
	require.NoError(t, err)
	doc := repoFile(t, "docs", "configuration.md")
	flags := regexp.MustCompile(`--([a-z-]+) .*\[\$(PDSMUX_[A-Z_]+)\]`).FindAllStringSubmatch(string(help), -1)
	require.Greater(t, len(flags), 20)
	for _, f := range flags {
		require.Contains(t, doc, "| `--"+f[1]+"` | `"+f[2]+"` |", "docs/configuration.md row for --%s", f[1])
	}
}
