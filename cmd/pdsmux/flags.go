package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v3"
)

// env returns the flag's single PDSMUX_* source: PDSMUX_ and the flag's
// name in upper case with "-" as "_" (redis-url: PDSMUX_REDIS_URL).
func env(flag string) cli.ValueSourceChain {
	return cli.EnvVars("PDSMUX_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_")))
}

// knownEnv returns the PDSMUX_* variable of every flag of root and of
// every command below it, read from the flags' Sources.
func knownEnv(root *cli.Command) map[string]bool {
	known := map[string]bool{}
	var walk func(*cli.Command)
	walk = func(c *cli.Command) {
		for _, f := range c.Flags {
			if ef, ok := f.(interface{ GetEnvVars() []string }); ok {
				for _, name := range ef.GetEnvVars() {
					if strings.HasPrefix(name, "PDSMUX_") {
						known[name] = true
					}
				}
			}
		}
		for _, sub := range c.Commands {
			walk(sub)
		}
	}
	walk(root)
	return known
}

// rejectUnknownEnv returns a usageError (exit status 2) naming every
// PDSMUX_* variable in environ ("NAME=value" entries) that is not in
// known, so a typo in a variable name fails start-up instead of silently
// meaning "default". Values are never printed.
func rejectUnknownEnv(known map[string]bool, environ []string) error {
	var unknown []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PDSMUX_") && !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return &usageError{msg: fmt.Sprintf("unknown environment variable(s) %s: every setting is --flag or its PDSMUX_ variable; see pdsmux serve --help", strings.Join(unknown, ", "))}
}
