package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// scrapeTargets reads prometheus/prometheus.yml: "scrape" holds every
// static scrape target, "alerting" every Alertmanager.
func scrapeTargets(t *testing.T) map[string][]string {
	t.Helper()
	type static struct {
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	}
	var cfg struct {
		Alerting struct {
			Alertmanagers []static `yaml:"alertmanagers"`
		} `yaml:"alerting"`
		ScrapeConfigs []static `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &cfg))
	out := map[string][]string{}
	collect := func(key string, ss []static) {
		for _, s := range ss {
			for _, sc := range s.StaticConfigs {
				out[key] = append(out[key], sc.Targets...)
			}
		}
	}
	collect("scrape", cfg.ScrapeConfigs)
	collect("alerting", cfg.Alerting.Alertmanagers)
	return out
}

// tool finds a Prometheus tool from Debian's packages. CI (CI=true, where
// .ci/run installs them) fails without it; elsewhere the test is skipped.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing in CI: .ci/run installs it (apt-get install %s)", name, pkg)
	}
	t.Skipf("%s not installed (apt-get install --no-install-recommends %s); CI runs this", name, pkg)
	return ""
}

func run(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v:\n%s", filepath.Base(bin), args, out)
	t.Logf("%s %v:\n%s", filepath.Base(bin), args, out)
}

// The Prometheus config and rules load, and the alert rules behave as
// alerts_test.yml says: pdsmux down (stopped, or its target missing), lag
// that fires while over 10 s and clears at 0, steady commit repairs that
// stay quiet, #sync repairs, forks and failing repairs that fire.
func TestPrometheus_ConfigAndRules(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	dir := "prometheus"
	run(t, dir, promtool, "check", "config", "prometheus.yml")
	run(t, dir, promtool, "check", "rules", "alerts.yml")
	run(t, dir, promtool, "test", "rules", "alerts_test.yml")
}

// The Alertmanager config (with its placeholder receiver) is valid.
func TestAlertmanager_Config(t *testing.T) {
	amtool := tool(t, "amtool", "prometheus-alertmanager")
	run(t, "alertmanager", amtool, "check-config", "alertmanager.yml")
}
