package fakepds

import (
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// PLCHandler serves the accounts' DID documents the way a did:plc
// directory does (GET /<did>), naming endpoint as their PDS.
func (s *Store) PLCHandler(endpoint string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		did := strings.TrimPrefix(r.URL.Path, "/")
		s.mu.Lock()
		a := s.accounts[did]
		s.mu.Unlock()
		if a == nil {
			xrpcError(w, http.StatusNotFound, "NotFound", "DID not registered: "+did)
			return
		}
		pub, err := a.Key.PublicKey()
		if err != nil {
			xrpcError(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		writeJSON(w, http.StatusOK, identity.DIDDocument{
			DID:         syntax.DID(a.DID),
			AlsoKnownAs: []string{"at://" + a.Handle},
			VerificationMethod: []identity.DocVerificationMethod{{
				ID: a.DID + "#atproto", Type: "Multikey", Controller: a.DID, PublicKeyMultibase: pub.Multibase(),
			}},
			Service: []identity.DocService{{ID: "#atproto_pds", Type: "AtprotoPersonalDataServer", ServiceEndpoint: endpoint}},
		})
	})
}
