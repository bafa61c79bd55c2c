package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// plc is a did:plc directory for the generated accounts: GET /<did>
// answers the DID document with the account's signing key (Multikey,
// #atproto), so pdsmux checks every commit's signature as it does on its
// defaults. Anything else is a 404.
type plc struct {
	ln   net.Listener
	hits atomic.Int64 // DID documents served

	mu   sync.Mutex
	keys map[string]string // DID -> public key, multibase
}

func newPLC(keys map[string]string) (*plc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &plc{ln: ln, keys: map[string]string{}}
	for d, k := range keys {
		p.keys[d] = k
	}
	go http.Serve(ln, p)
	return p, nil
}

func (p *plc) URL() string { return "http://" + p.ln.Addr().String() }

// add registers one more account.
func (p *plc) add(did, pub string) {
	p.mu.Lock()
	p.keys[did] = pub
	p.mu.Unlock()
}

func (p *plc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	did := strings.TrimPrefix(r.URL.Path, "/")
	p.mu.Lock()
	pub, ok := p.keys[did]
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok || r.Method != http.MethodGet {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"NotFound","message":"DID not registered"}`))
		return
	}
	p.hits.Add(1)
	_ = json.NewEncoder(w).Encode(identity.DIDDocument{
		DID: syntax.DID(did),
		VerificationMethod: []identity.DocVerificationMethod{{
			ID: did + "#atproto", Type: "Multikey", Controller: did, PublicKeyMultibase: pub,
		}},
	})
}
