package loopback

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one child process with its log file.
type Proc struct {
	Name string
	Log  string
	bin  string
	args []string
	env  []string
	dir  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// start launches the process, logging to Log.
func (p *Proc) start() error {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	return nil
}

// Running reports whether the process is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to the process group and waits up to grace, then
// kills it.
func (p *Proc) Stop(grace time.Duration) {
	done := p.signal(syscall.SIGTERM)
	if done == nil {
		return
	}
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	p.Kill()
}

// Kill sends SIGKILL to the process group and waits for the exit.
func (p *Proc) Kill() {
	done := p.signal(syscall.SIGKILL)
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// Freeze stops the process group (SIGSTOP): it keeps its sockets but
// answers nothing, as a hung process or a device off the network looks
// to its peers. Thaw resumes it.
func (p *Proc) Freeze() { p.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen process group (SIGCONT).
func (p *Proc) Thaw() { p.signal(syscall.SIGCONT) }

// signal sends sig to the process group and returns the channel closed
// at its exit; nil if it was never started.
func (p *Proc) signal(sig syscall.Signal) <-chan struct{} {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	return done
}

// Restart starts the process again with the same arguments.
func (p *Proc) Restart() error {
	p.Stop(10 * time.Second)
	return p.start()
}

// Pid is the process id (0 when not started).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddrs returns n loopback host:port addresses that were free a
// moment ago.
func FreeAddrs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		out[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return out, nil
}

// ProcStat reads a process's resident memory, its peak, and its CPU time
// (user + system) from /proc. Zeros when the process is gone.
func ProcStat(pid int) (rss, peak int64, cpu time.Duration) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "VmRSS:":
				rss = v * 1024
			case "VmHWM:":
				peak = v * 1024
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:])
			if len(f) > 13 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(ut+st) * (time.Second / 100) // USER_HZ
			}
		}
	}
	return rss, peak, cpu
}

// WaitHTTP polls url until it answers with a status below 500.
func WaitHTTP(url string, within time.Duration, p *Proc) error {
	deadline := time.Now().Add(within)
	c := &http.Client{Timeout: 2 * time.Second}
	var last error
	for time.Now().Before(deadline) {
		if p != nil && !p.Running() {
			return fmt.Errorf("%s exited; see %s", p.Name, p.Log)
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	name := url
	if p != nil {
		name = p.Name + " (" + filepath.Base(p.Log) + ")"
	}
	return fmt.Errorf("%s not ready after %s: %v", name, within, last)
}
