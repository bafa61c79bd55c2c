package cursor

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// DefaultPrefix is the default key prefix. Keys look like {pdsmux}:log.
const DefaultPrefix = "pdsmux"

// keys are the fixed Redis keys of one log. Per-repo, per-replica and
// per-hash keys are built from prefix (always including the hash tag) here
// in Go and passed to every script in KEYS: no script builds a key.
type keys struct {
	prefix string // "{pdsmux}"
	seq    string
	log    string
	did    string
	cur    string
	holdq  string
	meta   string
	tidx   string
	acct   string
	fix    string
	rolled string
	reps   string // the configured replicas' names, for pdsmux status
	users  string // the processes using the log and their archives (claim.go)
	ack    string // written by Replicated reads, to WAIT on
}

func newKeys(name string) (keys, error) {
	if name == "" || strings.ContainsAny(name, "{}: \t\r\n") {
		return keys{}, fmt.Errorf("cursor: key prefix %q must be non-empty and free of braces, colons and spaces", name)
	}
	p := "{" + name + "}"
	return keys{
		prefix: p,
		seq:    p + ":seq",
		log:    p + ":log",
		did:    p + ":did",
		cur:    p + ":cur",
		holdq:  p + ":holdq",
		meta:   p + ":meta",
		tidx:   p + ":tidx",
		acct:   p + ":acct",
		fix:    p + ":fix",
		rolled: p + ":rolled",
		reps:   p + ":replicas",
		users:  p + ":users",
		ack:    p + ":ack",
	}, nil
}

func (k keys) script() []string {
	return []string{k.seq, k.log, k.did, k.cur, k.holdq, k.meta, k.tidx, k.acct, k.fix, k.rolled}
}

func (k keys) hold(did string) string { return k.prefix + ":hold:" + did }

func (k keys) holdSrc(replica string) string { return k.prefix + ":hsrc:" + replica }

// dedup is the content-hash marker of an #identity/#account/#sync/other
// event.
func (k keys) dedup(hash string) string { return k.prefix + ":h:" + hash }

// sources are the replicas whose held-commit index keys (holdSrc) a script
// call declares: every replica this process appended for or was told of
// by a script. A script that meets a held commit from a replica outside
// the list fails with UNDECLARED_SOURCES before writing; the caller adds
// the names and calls again.
type sources struct {
	mu    sync.Mutex
	names []string // sorted
}

// add records names and reports whether any was new.
func (s *sources) add(names ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	added := false
	for _, n := range names {
		if i, found := slices.BinarySearch(s.names, n); !found && n != "" {
			s.names = slices.Insert(s.names, i, n)
			added = true
		}
	}
	return added
}

func (s *sources) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.names)
}

// undeclaredSources returns the replicas a script named as missing, or
// false when err is not that error.
func undeclaredSources(err error) ([]string, bool) {
	if err == nil {
		return nil, false
	}
	rest, ok := strings.CutPrefix(err.Error(), "UNDECLARED_SOURCES ")
	if !ok {
		return nil, false
	}
	return strings.Fields(rest), true
}

// withSources runs call with the declared index keys and names of every
// known source, once more for each call that named sources it lacked.
func (l *Log) withSources(call func(keys, names []string) error) error {
	for {
		names := l.srcs.list()
		keys := make([]string, len(names))
		for i, n := range names {
			keys[i] = l.k.holdSrc(n)
		}
		err := call(keys, names)
		missing, ok := undeclaredSources(err)
		if !ok {
			return err
		}
		// Another tailer may have added them since names was read, so
		// retry unless this very call already declared them all.
		l.srcs.add(missing...)
		if !slices.ContainsFunc(missing, func(m string) bool { return !slices.Contains(names, m) }) {
			return err
		}
	}
}
