package deployer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/internal/tail"
)

// DefaultMaxBody is how much of the body of a non-2xx response a
// StatusError keeps when HTTPDeployer.MaxBody is zero.
const DefaultMaxBody = 8 << 10

// drainLimit is how much of a response body is read after use, so that the
// connection can be reused; a longer body closes the connection instead.
const drainLimit = 64 << 10

// defaultClient follows no redirect: following one would turn the POST into
// a GET (on 301, 302, 303) that could answer 200 without deploying anything.
var defaultClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// HTTPDeployer is a Deployer that sends one POST request per deploy, with
// the JSON body {"key":"...","revision":"..."}, and succeeds when the
// response status is 2xx. HTTP makes one; a literal works as well. Set the
// fields before the first Deploy and do not change them after: Deploy is
// then safe for concurrent use.
type HTTPDeployer struct {
	// URL is the endpoint: an absolute http or https URL. Deploy checks it.
	URL string
	// Header is sent with every request. Content-Type is
	// application/json unless Header sets it; a Host entry sets the Host
	// of the request.
	Header http.Header
	// Client sends the requests. Nil means a client on
	// http.DefaultTransport that does not follow redirects, so that a 3xx
	// is an error rather than a POST silently turned into a GET. That
	// client has no timeout of its own: the context of Deploy bounds each
	// request (see dedup.WithTimeout).
	Client *http.Client
	// MaxBody is how much of the body of a non-2xx response the
	// StatusError keeps. Zero means DefaultMaxBody; negative is invalid.
	MaxBody int64
}

// HTTP returns an HTTPDeployer that posts to url. It checks nothing: Deploy
// does, every time.
func HTTP(url string) *HTTPDeployer {
	return &HTTPDeployer{URL: url}
}

var _ dedup.Deployer = (*HTTPDeployer)(nil)

// Deploy posts key and rev to the URL and blocks until the response has
// been read, or until ctx ends. Of a non-2xx response it keeps the first
// MaxBody bytes of the body; beyond that, it reads and discards at most
// 64 KiB of a body, so that the connection can be reused. It returns nil
// for a 2xx status, a *StatusError for any other status, the error of the
// Client (wrapping ctx's error if ctx ended first) if there was no
// response, and an error wrapping dedup.ErrInvalid if the URL, MaxBody,
// key or rev is invalid.
func (h *HTTPDeployer) Deploy(ctx context.Context, key string, rev dedup.Revision) error {
	u, err := h.check(key, rev)
	if err != nil {
		return err
	}
	body, err := json.Marshal(struct {
		Key      string `json:"key"`
		Revision string `json:"revision"`
	}{key, string(rev)})
	if err != nil {
		return fmt.Errorf("deployer: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("deployer: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range h.Header {
		req.Header[http.CanonicalHeaderKey(k)] = slices.Clone(vs)
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host // net/http sends req.Host, not a Host header
	}

	client := h.Client
	if client == nil {
		client = defaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("deployer: %w", err)
	}
	defer func() {
		_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
		resp.Body.Close()
	}()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	limit := h.MaxBody
	if limit == 0 {
		limit = DefaultMaxBody
	}
	// A body cut short by an error still says something; keep what came.
	b, more, _ := tail.Head(resp.Body, limit)
	return &StatusError{URL: u.Redacted(), Code: resp.StatusCode, Status: statusLine(resp), Body: b, Truncated: more}
}

func (h *HTTPDeployer) check(key string, rev dedup.Revision) (*url.URL, error) {
	if h.MaxBody < 0 {
		return nil, fmt.Errorf("deployer: %w: negative MaxBody %d", dedup.ErrInvalid, h.MaxBody)
	}
	u, err := url.Parse(h.URL)
	if err != nil {
		return nil, fmt.Errorf("deployer: %w: %w", dedup.ErrInvalid, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("deployer: %w: URL %q is not an absolute http or https URL", dedup.ErrInvalid, u.Redacted())
	}
	if err := dedup.ValidKey(key); err != nil {
		return nil, fmt.Errorf("deployer: %w", err)
	}
	if err := dedup.ValidRevision(rev); err != nil {
		return nil, fmt.Errorf("deployer: %w", err)
	}
	return u, nil
}

// StatusError is the error of a deploy whose response status was not 2xx.
type StatusError struct {
	URL    string // the request URL, password redacted
	Code   int    // the status code, such as 502
	Status string // the status line, such as "502 Bad Gateway"
	// Body is the start of the response body, at most MaxBody bytes;
	// Truncated reports whether the body was longer.
	Body      []byte
	Truncated bool
}

// Error reports the URL, the status and the body, cut to MaxBody bytes.
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "deployer: POST %s: %s", e.URL, e.Status)
	body := bytes.TrimSpace(e.Body)
	if len(body) == 0 {
		return b.String()
	}
	b.WriteString(": ")
	b.WriteString(strings.ToValidUTF8(string(body), string(utf8.RuneError)))
	if e.Truncated {
		b.WriteString(" [truncated]")
	}
	return b.String()
}

func statusLine(resp *http.Response) string {
	if resp.Status != "" {
		return resp.Status
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
}
