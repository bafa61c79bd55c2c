package cursor_test

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// checkDeclaredKeys watches addr with MONITOR for the rest of the test and,
// at cleanup, fails the test if any command a script ran touched a key the
// script call did not pass in KEYS (proxies and managed Redis refuse such
// scripts). redis-server feeds a script's own commands to monitors right
// after (7.0) or right before (7.2 on) the EVAL/EVALSHA line.
func checkDeclaredKeys(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("monitor %s: %v", addr, err)
	}
	r := bufio.NewReaderSize(conn, 1<<20)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatalf("monitor %s: %v", addr, err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("monitor %s: %q %v", addr, line, err)
	}
	marker := fmt.Sprintf("monitor-done-%d", time.Now().UnixNano())
	var (
		mu       sync.Mutex
		problems []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var declared map[string]bool // keys of the current script call
		var pending [][]string       // script commands seen before their call (7.2 on)
		check := func(cmd []string) {
			if k, ok := scriptKey(cmd); ok && !declared[k] {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%q touches undeclared key %q", cmd[0], k))
				mu.Unlock()
			}
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			src, args := parseMonitorLine(line)
			if len(args) > 0 && strings.EqualFold(args[0], "echo") && len(args) == 2 && args[1] == marker {
				return
			}
			switch {
			case src == "lua" && declared == nil:
				pending = append(pending, args)
			case src == "lua":
				check(args)
			case len(args) > 2 && (strings.EqualFold(args[0], "evalsha") || strings.EqualFold(args[0], "eval")):
				n, _ := strconv.Atoi(args[2])
				declared = map[string]bool{}
				for _, k := range args[3:min(3+n, len(args))] {
					declared[k] = true
				}
				for _, p := range pending {
					check(p)
				}
				pending = nil
			default:
				declared = nil
			}
		}
	}()
	t.Cleanup(func() {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			fmt.Fprintf(c, "ECHO %s\r\n", marker)
			_, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("monitor never saw its end marker")
		}
		conn.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("script key not declared: %s", p)
		}
	})
}

// scriptKey is the key a command a script ran touches (every command the
// cursor scripts use takes one key; XINFO and MEMORY after their
// subcommand).
func scriptKey(cmd []string) (string, bool) {
	switch {
	case len(cmd) >= 3 && (strings.EqualFold(cmd[0], "xinfo") || strings.EqualFold(cmd[0], "memory")):
		return cmd[2], true
	case len(cmd) >= 2:
		return cmd[1], true
	}
	return "", false
}

// parseMonitorLine splits `+1700000000.000000 [0 lua] "SET" "k" "v"` into
// its source ("lua" or the client address) and unquoted arguments.
func parseMonitorLine(line string) (string, []string) {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "+"), "\r\n")
	open, end := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
	if open < 0 || end < open {
		return "", nil
	}
	_, src, _ := strings.Cut(line[open+1:end], " ")
	var args []string
	rest := line[end+1:]
	for {
		i := strings.IndexByte(rest, '"')
		if i < 0 {
			return src, args
		}
		rest = rest[i+1:]
		var b strings.Builder
		for len(rest) > 0 && rest[0] != '"' {
			if rest[0] == '\\' && len(rest) > 1 {
				switch rest[1] {
				case 'x':
					if len(rest) >= 4 {
						v, _ := strconv.ParseUint(rest[2:4], 16, 8)
						b.WriteByte(byte(v))
						rest = rest[4:]
						continue
					}
				case 'n':
					b.WriteByte('\n')
				case 'r':
					b.WriteByte('\r')
				case 't':
					b.WriteByte('\t')
				case 'a':
					b.WriteByte('\a')
				case 'b':
					b.WriteByte('\b')
				default:
					b.WriteByte(rest[1])
				}
				rest = rest[2:]
				continue
			}
			b.WriteByte(rest[0])
			rest = rest[1:]
		}
		args = append(args, b.String())
		if len(rest) > 0 {
			rest = rest[1:]
		}
	}
}
