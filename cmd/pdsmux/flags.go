package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v3"
)

// knownEnv collects the PDSMUX_* variable of every flag, so a typo in a
// variable name fails start-up instead of silently meaning "default".
var knownEnv = map[string]bool{}

// env returns the flag's single PDSMUX_* source.
func env(flag string) cli.ValueSourceChain {
	name := "PDSMUX_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
	knownEnv[name] = true
	return cli.EnvVars(name)
}

func rejectUnknownEnv(environ []string) error {
	var unknown []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PDSMUX_") && !knownEnv[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return &usageError{msg: fmt.Sprintf("unknown environment variable(s) %s: every setting is --flag or its PDSMUX_ variable; see pdsmux serve --help", strings.Join(unknown, ", "))}
}
