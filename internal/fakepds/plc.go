package fakepds

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/pdsmux/pdsmux/internal/blocks"
	"github.com/pdsmux/pdsmux/internal/xrpcerr"
)

// PLCCreatedAtLayout is how the PLC directory writes an operation's
// createdAt: UTC, always three fractional digits (JavaScript's
// Date.toISOString), e.g. 2026-11-30T06:40:00.123Z.
const PLCCreatedAtLayout = "2006-01-02T15:04:05.000Z"

// PLCHandler serves a did:plc directory for the store's accounts, naming
// endpoint as their PDS:
//
//   - GET /<did>: the DID document (JSON).
//   - GET /<did>/log/audit: the audit log, as plc.directory answers it: a
//     JSON array of {"did", "operation", "cid", "nullified", "createdAt"}.
//     Here it holds one entry, the genesis "plc_operation" (prev null) with
//     the account key as both rotation key and atproto verification method
//     (did:key), alsoKnownAs at://<handle>, service atproto_pds at
//     endpoint, and sig the base64url (unpadded) signature of the unsigned
//     operation's DAG-CBOR; cid is the CID (dag-cbor, sha2-256) of the
//     signed operation; nullified is false; createdAt is Account.Created in
//     PLCCreatedAtLayout. The entry is made once per (endpoint, handle) and
//     then served unchanged. The DID is not derived from this operation
//     (DIDFor derives it from the handle), so a client that recomputes a
//     genesis DID will not match it.
//
// An unknown DID, or any other path, answers 404 with an XRPC-style
// {"error": "NotFound", "message"} body.
func (s *Store) PLCHandler(endpoint string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/")
		did, audit := strings.CutSuffix(path, "/log/audit")
		s.mu.Lock()
		a := s.accounts[did]
		var entry *plcLogEntry
		var handle string
		var err error
		if a != nil {
			handle = a.Handle
			if audit {
				entry, err = a.plcGenesis(endpoint)
			}
		}
		s.mu.Unlock()
		switch {
		case a == nil:
			xrpcerr.Write(w, http.StatusNotFound, "NotFound", "DID not registered: "+did)
		case err != nil:
			xrpcerr.Write(w, http.StatusInternalServerError, "InternalError", err.Error())
		case audit:
			writeJSON(w, http.StatusOK, []plcLogEntry{*entry})
		default:
			serveDIDDoc(w, a, handle, endpoint)
		}
	})
}

func serveDIDDoc(w http.ResponseWriter, a *Account, handle, endpoint string) {
	pub, err := a.Key.PublicKey()
	if err != nil {
		xrpcerr.Write(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, identity.DIDDocument{
		DID:         syntax.DID(a.DID),
		AlsoKnownAs: []string{"at://" + handle},
		VerificationMethod: []identity.DocVerificationMethod{{
			ID: a.DID + "#atproto", Type: "Multikey", Controller: a.DID, PublicKeyMultibase: pub.Multibase(),
		}},
		Service: []identity.DocService{{ID: "#atproto_pds", Type: "AtprotoPersonalDataServer", ServiceEndpoint: endpoint}},
	})
}

// plcLogEntry is one element of a PLC audit log (field order as
// plc.directory writes it).
type plcLogEntry struct {
	DID       string       `json:"did"`
	Operation plcOperation `json:"operation"`
	CID       string       `json:"cid"`
	Nullified bool         `json:"nullified"`
	CreatedAt string       `json:"createdAt"`
}

type plcOperation struct {
	Type                string                `json:"type"`
	RotationKeys        []string              `json:"rotationKeys"`
	VerificationMethods map[string]string     `json:"verificationMethods"`
	AlsoKnownAs         []string              `json:"alsoKnownAs"`
	Services            map[string]plcService `json:"services"`
	Prev                *string               `json:"prev"`
	Sig                 string                `json:"sig"`
}

type plcService struct {
	Type     string `json:"type"`
	Endpoint string `json:"endpoint"`
}

// plcGenesis returns the account's genesis PLC log entry for endpoint,
// signing it on first use (signatures are randomised, so it is kept to
// answer the same bytes every time). It runs under the store lock.
func (a *Account) plcGenesis(endpoint string) (*plcLogEntry, error) {
	key := endpoint + "\n" + a.Handle
	if a.plcEntry != nil && a.plcEntryKey == key {
		return a.plcEntry, nil
	}
	pub, err := a.Key.PublicKey()
	if err != nil {
		return nil, err
	}
	didKey := pub.DIDKey()
	aka := "at://" + a.Handle
	// The DAG-CBOR form that is signed and hashed: the same fields, in
	// the data model's generic shapes.
	op := map[string]any{
		"type":                "plc_operation",
		"rotationKeys":        []any{didKey},
		"verificationMethods": map[string]any{"atproto": didKey},
		"alsoKnownAs":         []any{aka},
		"services": map[string]any{
			"atproto_pds": map[string]any{"type": "AtprotoPersonalDataServer", "endpoint": endpoint},
		},
		"prev": nil,
	}
	unsigned, err := atdata.MarshalCBOR(op)
	if err != nil {
		return nil, err
	}
	sigBytes, err := a.Key.HashAndSign(unsigned)
	if err != nil {
		return nil, err
	}
	sig := base64.RawURLEncoding.EncodeToString(sigBytes)
	op["sig"] = sig
	signed, err := atdata.MarshalCBOR(op)
	if err != nil {
		return nil, err
	}
	c, err := blocks.CBORCID(signed)
	if err != nil {
		return nil, err
	}
	a.plcEntry = &plcLogEntry{
		DID: a.DID,
		Operation: plcOperation{
			Type:                "plc_operation",
			RotationKeys:        []string{didKey},
			VerificationMethods: map[string]string{"atproto": didKey},
			AlsoKnownAs:         []string{aka},
			Services:            map[string]plcService{"atproto_pds": {Type: "AtprotoPersonalDataServer", Endpoint: endpoint}},
			Sig:                 sig,
		},
		CID:       c.String(),
		CreatedAt: a.Created.UTC().Format(PLCCreatedAtLayout),
	}
	a.plcEntryKey = key
	return a.plcEntry, nil
}

// Created returns when did's account was created (Account.Created), the
// value its audit log serves as createdAt; it makes a Store usable as
// pdsmux's repair.AccountAge in tests.
func (s *Store) Created(_ context.Context, did string) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[did]
	if a == nil {
		return time.Time{}, fmt.Errorf("fakepds: no account %s", did)
	}
	return a.Created, nil
}
