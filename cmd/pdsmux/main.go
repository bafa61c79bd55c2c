// Command pdsmux merges the firehoses of several replicas of one atproto
// PDS into one subscribeRepos stream. See README.md.
package main

import (
	"context"
	"errors"
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
	if err := app().Run(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "pdsmux:", err)
		var ce *pdsmuxd.ConfigError
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func app() *cli.Command {
	return &cli.Command{
		Name:    "pdsmux",
		Usage:   "make several replicas of one atproto PDS look like a single PDS to relays",
		Version: pdsmuxd.Version,
		Before: func(ctx context.Context, _ *cli.Command) (context.Context, error) {
			return ctx, rejectUnknownEnv(os.Environ())
		},
		Commands: []*cli.Command{serveCommand(), statusCommand(), healthCommand()},
	}
}
