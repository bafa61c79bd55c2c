package repair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// NewRepos policies: which repos unknown to the log are announced with
// their records (a #commit of creates) rather than a #sync.
const (
	// NewReposAuto announces records of repos whose DID was created at or
	// after the deployment's first start (Config.Born), by the DID's PLC
	// audit log. Repos it cannot date (did:web, PLC unreachable) get #sync.
	NewReposAuto = "auto"
	// NewReposAll announces records of every repo unknown to the log
	// (a PDS whose every account is new to the network).
	NewReposAll = "all"
	// NewReposNone announces every repo unknown to the log with #sync only.
	NewReposNone = "none"
)

// AccountAge tells when a DID was created.
type AccountAge interface {
	// Created returns the DID's creation time, or an error when it cannot
	// be told (ErrAgeUnknown for DID methods without a history).
	Created(ctx context.Context, did string) (time.Time, error)
}

// ErrAgeUnknown means the DID method keeps no creation time (did:web).
var ErrAgeUnknown = errors.New("repair: DID has no creation time")

// PLCAge dates did:plc DIDs by the createdAt of the first operation in
// their audit log (GET {URL}/{did}/log/audit, as plc.directory serves it).
type PLCAge struct {
	URL       string // PLC directory base URL, e.g. https://plc.directory
	HTTP      *http.Client
	UserAgent string
}

// Created implements AccountAge.
func (p PLCAge) Created(ctx context.Context, did string) (time.Time, error) {
	if !strings.HasPrefix(did, "did:plc:") {
		return time.Time{}, fmt.Errorf("%w: %s", ErrAgeUnknown, did)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(p.URL, "/")+"/"+url.PathEscape(did)+"/log/audit", nil)
	if err != nil {
		return time.Time{}, err
	}
	if p.UserAgent != "" {
		req.Header.Set("User-Agent", p.UserAgent)
	}
	resp, err := p.HTTP.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("PLC audit log of %s: %w", did, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return time.Time{}, fmt.Errorf("%w: %s is not in the PLC directory", ErrAgeUnknown, did)
	}
	if resp.StatusCode != http.StatusOK {
		return time.Time{}, fmt.Errorf("PLC audit log of %s: HTTP %s", did, resp.Status)
	}
	var ops []struct {
		CreatedAt string `json:"createdAt"`
		Nullified bool   `json:"nullified"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&ops); err != nil {
		return time.Time{}, fmt.Errorf("PLC audit log of %s: %w", did, err)
	}
	if len(ops) == 0 {
		return time.Time{}, fmt.Errorf("PLC audit log of %s is empty", did)
	}
	t, err := time.Parse(time.RFC3339Nano, ops[0].CreatedAt)
	if err != nil {
		return time.Time{}, fmt.Errorf("PLC audit log of %s: createdAt %q: %w", did, ops[0].CreatedAt, err)
	}
	return t, nil
}
