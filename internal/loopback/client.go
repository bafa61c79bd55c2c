package loopback

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Client speaks XRPC to a PDS (directly or through Caddy).
type Client struct {
	Base string
	HTTP *http.Client
}

// NewClient returns a client for base.
func NewClient(base string) *Client {
	return &Client{Base: base, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Account is a created account with its session.
type Account struct {
	DID    string
	Handle string
	Token  string
}

func (c *Client) call(method, nsid, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.Base+"/xrpc/"+nsid, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", nsid, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// CreateAccount makes an account (no invite needed).
func (c *Client) CreateAccount(handle string) (*Account, error) {
	var out struct {
		DID       string `json:"did"`
		Handle    string `json:"handle"`
		AccessJwt string `json:"accessJwt"`
	}
	err := c.call(http.MethodPost, "com.atproto.server.createAccount", "", map[string]string{
		"handle": handle, "email": handle + "@example.test", "password": "password-" + handle,
	}, &out)
	if err != nil {
		return nil, err
	}
	return &Account{DID: out.DID, Handle: out.Handle, Token: out.AccessJwt}, nil
}

// Commit is what a write returns.
type Commit struct {
	URI string
	CID string
	Rev string
}

// CreateRecord writes a record and returns its URI and the commit rev.
func (c *Client) CreateRecord(a *Account, collection string, record map[string]any) (Commit, error) {
	var out struct {
		URI    string `json:"uri"`
		CID    string `json:"cid"`
		Commit struct {
			Rev string `json:"rev"`
		} `json:"commit"`
	}
	err := c.call(http.MethodPost, "com.atproto.repo.createRecord", a.Token, map[string]any{
		"repo": a.DID, "collection": collection, "record": record,
	}, &out)
	return Commit{URI: out.URI, CID: out.CID, Rev: out.Commit.Rev}, err
}

// DeleteRecord deletes collection/rkey and returns the commit rev.
func (c *Client) DeleteRecord(a *Account, collection, rkey string) (string, error) {
	var out struct {
		Commit struct {
			Rev string `json:"rev"`
		} `json:"commit"`
	}
	err := c.call(http.MethodPost, "com.atproto.repo.deleteRecord", a.Token, map[string]any{
		"repo": a.DID, "collection": collection, "rkey": rkey,
	}, &out)
	return out.Commit.Rev, err
}

// LatestCommit asks for a repo's head (com.atproto.sync.getLatestCommit).
func (c *Client) LatestCommit(did string) (cid, rev string, err error) {
	var out struct{ CID, Rev string }
	err = c.call(http.MethodGet, "com.atproto.sync.getLatestCommit?did="+did, "", nil, &out)
	return out.CID, out.Rev, err
}

// Post is a minimal app.bsky.feed.post record.
func Post(text string) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": time.Now().UTC().Format("2006-01-02T15:04:05.000Z")}
}

// Like is an app.bsky.feed.like record of uri/cid.
func Like(uri, cid string) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.like", "subject": map[string]string{"uri": uri, "cid": cid},
		"createdAt": time.Now().UTC().Format("2006-01-02T15:04:05.000Z")}
}
