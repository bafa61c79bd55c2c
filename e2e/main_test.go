//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/pdsmux/pdsmux/internal/loopback"
)

var deps loopback.Deps

func TestMain(m *testing.M) {
	bin, err := os.MkdirTemp("", "pdsmux-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	deps, err = loopback.LoadDeps(bin, os.Stderr, "node", "pds", "caddy", "relay")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: installing peers:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(bin)
	os.Exit(code)
}
