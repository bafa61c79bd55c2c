package cursor

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the default key prefix. Keys look like {pdsmux}:log.
const DefaultPrefix = "pdsmux"

// keys are the fixed Redis keys of one log. Per-repo and per-replica keys
// are built from prefix (always including the hash tag).
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
		ack:    p + ":ack",
	}, nil
}

func (k keys) script() []string {
	return []string{k.seq, k.log, k.did, k.cur, k.holdq, k.meta, k.tidx, k.acct, k.fix, k.rolled}
}

func (k keys) hold(did string) string { return k.prefix + ":hold:" + did }

func (k keys) holdSrc(replica string) string { return k.prefix + ":hsrc:" + replica }

// luaRevLess is revLess(a, b) for the small scripts: TIDs are fixed-width
// and base32-sortable, so rev order is byte order (not strcoll's).
// append.lua has the same function of its own.
const luaRevLess = `local function revLess(a, b)
  if a == b then return false end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
`
