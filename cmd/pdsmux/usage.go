package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/urfave/cli/v3"

	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
)

// Exit codes, as docs/configuration.md lists them.
const (
	exitOK      = 0
	exitRuntime = 1 // pdsmux ran and failed, or a check found it unhealthy
	exitConfig  = 2 // a bad setting or command line: nothing was started
)

// usageError is a command line that cannot be parsed (an unknown flag or
// command, a stray argument).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, pdsmuxd.ErrConfig), errors.As(err, &ue):
		return exitConfig
	}
	return exitRuntime
}

var (
	flagValueRE = regexp.MustCompile(`^invalid value "(.*)" for flag -([\w-]+): `)
	envValueRE  = regexp.MustCompile(`^could not parse "(.*)" as \S+ value from environment variable "(\w+)" for flag ([\w-]+): `)
)

// onUsageError replaces urfave/cli's answer to a flag it cannot parse (the
// error, then every flag's help: 64 lines) with one line naming the
// setting: `invalid --max-entries "abc": want a whole number`.
func onUsageError(_ context.Context, cmd *cli.Command, err error, _ bool) error {
	return explainUsage(cmd, err)
}

// explainUsage turns urfave/cli's messages about a flag's or a PDSMUX_*
// variable's value into a ConfigError, and any other usage error into a
// one-line usageError pointing at --help.
func explainUsage(cmd *cli.Command, err error) error {
	if m := flagValueRE.FindStringSubmatch(err.Error()); m != nil {
		return pdsmuxd.BadSetting(m[2], m[1], "%s", want(cmd, m[2]))
	}
	if m := envValueRE.FindStringSubmatch(err.Error()); m != nil {
		return pdsmuxd.BadSetting(m[3], m[1], "%s (from %s)", want(cmd, m[3]), m[2])
	}
	return &usageError{msg: fmt.Sprintf("%v (see %s --help)", err, cmd.FullName())}
}

// want says what a flag's value should look like, by its type.
func want(cmd *cli.Command, name string) string {
	for _, c := range append([]*cli.Command{cmd}, cmd.Root().Commands...) {
		for _, f := range c.Flags {
			if !hasName(f, name) {
				continue
			}
			switch f.(type) {
			case *cli.IntFlag, *cli.Int64Flag:
				return "want a whole number"
			case *cli.DurationFlag:
				return "want a duration with a unit, e.g. 500ms, 30s, 5m or 72h"
			case *cli.BoolFlag:
				return "want true or false"
			}
		}
	}
	return "not a valid value"
}

func hasName(f cli.Flag, name string) bool {
	for _, n := range f.Names() {
		if n == name {
			return true
		}
	}
	return false
}
