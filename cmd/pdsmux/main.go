package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v3"

	"github.com/pdsmux/pdsmux/internal/pdsmuxd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := app()
	if err := cmd.Run(ctx, os.Args); err != nil {
		if envValueRE.MatchString(err.Error()) {
			err = explainUsage(cmd, err)
		}
		fmt.Fprintln(os.Stderr, "pdsmux:", err)
		stop()
		os.Exit(exitCode(err))
	}
}

func app() *cli.Command {
	return &cli.Command{
		Name:    "pdsmux",
		Usage:   "make several replicas of one atproto PDS look like a single PDS to relays",
		Version: pdsmuxd.Version,
		Before: func(ctx context.Context, cmd *cli.Command) (context.Context, error) {
			return ctx, rejectUnknownEnv(knownEnv(cmd.Root()), os.Environ())
		},
		Commands:     []*cli.Command{serveCommand(), statusCommand(), healthCommand()},
		OnUsageError: onUsageError,
		Action: func(_ context.Context, cmd *cli.Command) error {
			if cmd.Args().Present() {
				return &usageError{msg: fmt.Sprintf("unknown command %q: want serve, status or health (see pdsmux --help)", cmd.Args().First())}
			}
			return cli.ShowRootCommandHelp(cmd)
		},
	}
}
