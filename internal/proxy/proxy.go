package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdsmux/pdsmux/internal/pool"
	"github.com/pdsmux/pdsmux/internal/xrpcerr"
)

// maxBuffered bounds the error bodies kept in memory while trying the next
// replica.
const maxBuffered = 64 << 10

// Proxy is the handler.
type Proxy struct {
	pool      *pool.Pool
	transport http.RoundTripper
	log       *slog.Logger
	errLog    *log.Logger
	m         *metrics
}

// New returns a proxy over p. reg may be nil.
func New(p *pool.Pool, transport http.RoundTripper, reg prometheus.Registerer, logger *slog.Logger) *Proxy {
	px := &Proxy{pool: p, transport: transport, log: logger.With("component", "proxy")}
	px.errLog = slog.NewLogLogger(px.log.Handler(), slog.LevelWarn)
	var names []string
	for _, r := range p.All() {
		names = append(names, r.Name)
	}
	px.m = newMetrics(reg, names)
	return px
}

// retryable is returned by ModifyResponse to move on to the next replica.
type retryable struct {
	status int
	header http.Header
	body   []byte // a not-found answer, kept to replay
	down   bool   // 502/503/504: the replica is not serving
}

func (r *retryable) Error() string { return "replica answered HTTP " + strconv.Itoa(r.status) }

// forwarded sets the X-Forwarded-* headers for the replica. pdsmux's
// listener is an internal hop behind Caddy, which replaces whatever a client
// sent in X-Forwarded-For/-Proto/-Host with what it saw (Caddy's
// reverse_proxy, no trusted_proxies). So the chain that arrives is kept:
// the peer's address is appended to X-Forwarded-For (client first, each
// hop appending), X-Forwarded-Proto and X-Forwarded-Host pass as
// received (set from this hop only when absent), and Forwarded passes
// unchanged. X-Real-IP, which no hop here sets, is dropped: a client's
// value must not reach the replica.
func forwarded(pr *httputil.ProxyRequest) {
	in := pr.In.Header
	if v := in["X-Forwarded-For"]; len(v) > 0 {
		pr.Out.Header["X-Forwarded-For"] = v // SetXForwarded appends the peer
	}
	pr.SetXForwarded()
	for _, k := range []string{"X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"} {
		if v := in[k]; len(v) > 0 {
			pr.Out.Header[k] = v
		}
	}
	pr.Out.Header.Del("X-Real-Ip")
}

func codeClass(status int) string {
	return strconv.Itoa(status/100) + "xx"
}

// notFound reports whether a 400/404 answer names a missing thing (repo,
// record, blob, block), which another replica may have.
func notFound(body []byte) bool {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return false
	}
	return strings.HasSuffix(e.Error, "NotFound") || e.Error == "RepoNotFound"
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reps := p.pool.Ordered()
	if len(reps) == 0 {
		p.m.requests.WithLabelValues("none", "error").Inc()
		xrpcerr.Write(w, http.StatusServiceUnavailable, "NoReplica", "no replica is configured")
		return
	}
	// Only a request without a body can be sent again.
	idempotent := (r.Method == http.MethodGet || r.Method == http.MethodHead) && (r.Body == nil || r.Body == http.NoBody)
	var kept *retryable // first not-found answer, replayed if nobody has it
	var lastErr error
	for i, rep := range reps {
		more := idempotent && i < len(reps)-1
		var failed error
		rp := &httputil.ReverseProxy{
			Transport: p.transport,
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(rep.URL)
				forwarded(pr)
			},
			ModifyResponse: func(resp *http.Response) error {
				used := func() error {
					p.m.requests.WithLabelValues(rep.Name, codeClass(resp.StatusCode)).Inc()
					return nil
				}
				switch {
				case !more:
					return used()
				case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
					resp.Body.Close()
					return &retryable{status: resp.StatusCode, down: true}
				case resp.StatusCode >= 500:
					// this request failed there; the replica may still be up
					resp.Body.Close()
					return &retryable{status: resp.StatusCode}
				case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotFound:
					body, err := io.ReadAll(io.LimitReader(resp.Body, maxBuffered+1))
					resp.Body.Close()
					if err != nil {
						return err
					}
					if len(body) <= maxBuffered && notFound(body) {
						return &retryable{status: resp.StatusCode, header: resp.Header.Clone(), body: body}
					}
					resp.Body = io.NopCloser(bytes.NewReader(body))
				}
				return used()
			},
			ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) { failed = err },
			ErrorLog:     p.errLog, // a body cut mid-copy, in the JSON log
		}
		rp.ServeHTTP(w, r)
		if failed == nil {
			return
		}
		var rt *retryable
		if errors.As(failed, &rt) {
			p.m.requests.WithLabelValues(rep.Name, codeClass(rt.status)).Inc()
			if rt.body != nil && kept == nil {
				kept = rt
			}
			if rt.down {
				p.pool.ReportFailure(rep, failed)
			}
		} else {
			p.m.requests.WithLabelValues(rep.Name, "error").Inc()
			p.pool.ReportFailure(rep, failed)
		}
		lastErr = failed
		if !more {
			break
		}
		p.m.retries.Inc()
	}
	if kept != nil {
		for k, v := range kept.header {
			w.Header()[k] = v
		}
		w.WriteHeader(kept.status)
		_, _ = w.Write(kept.body)
		return
	}
	p.m.requests.WithLabelValues("none", "error").Inc()
	xrpcerr.Write(w, http.StatusBadGateway, "UpstreamFailure", fmt.Sprintf("no replica answered %s: %v", r.URL.Path, lastErr))
}
