package poller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// DefaultMaxBody is the default of HTTPSource.MaxBody.
const DefaultMaxBody = 32 << 20

// HTTPSource reports the revision of an HTTP resource. The revision is, in
// order of preference:
//
//   - the Docker-Content-Digest header (e.g. "sha256:…" of an image
//     manifest), which names the content exactly;
//   - a strong ETag, without its quotes; a weak one (W/"…") only says that
//     two versions are about equal, so it is never a revision;
//   - else "sha256:" and the hexadecimal SHA-256 of the body.
//
// After a response with an ETag (strong or weak), the next request carries
// If-None-Match, so an unchanged resource costs a 304 Not Modified, which
// reports the revision found before. Any other status outside 2xx is an
// error carrying the status; so is a body longer than MaxBody.
//
// Make one with HTTP and set its fields before the first poll. An HTTPSource
// is safe for concurrent use; it remembers the last ETag it saw, so reusing
// one for several keys with the same URL is fine.
type HTTPSource struct {
	// URL is the resource, http or https.
	URL string
	// Method is GET (the default, also when empty) or HEAD. With HEAD the
	// response must carry a digest or a strong ETag: there is no body to
	// hash.
	Method string
	// Header is sent with every request, e.g. Authorization or Accept.
	Header http.Header
	// Client sends the requests; nil means http.DefaultClient. The
	// request context carries the poll's cancellation and timeout.
	Client *http.Client
	// MaxBody bounds the bytes read from a body; zero means
	// DefaultMaxBody.
	MaxBody int64

	mu   sync.Mutex
	etag string         // ETag of the last successful response
	rev  dedup.Revision // revision of that response
}

// HTTP returns an HTTPSource for url. Watch rejects a URL that is not
// absolute http or https, with an error wrapping dedup.ErrInvalid; so does
// every call of Latest.
func HTTP(url string) *HTTPSource {
	return &HTTPSource{URL: url}
}

// maxErrorBody is how much of the body of an error response goes into the
// error.
const maxErrorBody = 512

// Latest requests the resource and returns its revision. It blocks until
// the body is read or ctx is done.
func (s *HTTPSource) Latest(ctx context.Context) (dedup.Revision, error) {
	if err := s.check(); err != nil {
		return "", err
	}
	method := s.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL, nil)
	if err != nil {
		return "", err
	}
	if s.Header != nil {
		req.Header = s.Header.Clone()
	}
	s.mu.Lock()
	etag, prev := s.etag, s.rev
	s.mu.Unlock()
	conditional := etag != "" && req.Header.Get("If-None-Match") == ""
	if conditional {
		req.Header.Set("If-None-Match", etag)
	}
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			uerr.URL = redactURL(req.URL) // net/http removes a password, not a token given as the name
		}
		return "", err
	}
	defer resp.Body.Close()

	what := method + " " + redactURL(req.URL)
	switch {
	case resp.StatusCode == http.StatusNotModified && conditional:
		drain(resp.Body)
		return prev, nil
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if msg := strings.TrimSpace(strings.ToValidUTF8(string(body), "?")); msg != "" {
			return "", fmt.Errorf("%s: %s: %q", what, resp.Status, msg)
		}
		return "", fmt.Errorf("%s: %s", what, resp.Status)
	}

	rev := headerRevision(resp.Header)
	if rev != "" {
		drain(resp.Body)
	} else {
		if method == http.MethodHead {
			return "", fmt.Errorf("%s: no Docker-Content-Digest or strong ETag in the response, and no body to hash", what)
		}
		if rev, err = hashBody(resp.Body, s.maxBody()); err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
	}
	s.mu.Lock()
	s.etag, s.rev = resp.Header.Get("ETag"), rev
	s.mu.Unlock()
	return rev, nil
}

// headerRevision returns the revision that the headers name, or "".
func headerRevision(h http.Header) dedup.Revision {
	if d := dedup.Revision(strings.TrimSpace(h.Get("Docker-Content-Digest"))); d != "" && dedup.ValidRevision(d) == nil {
		return d
	}
	etag := strings.TrimSpace(h.Get("ETag"))
	if strings.HasPrefix(etag, "W/") {
		return ""
	}
	if len(etag) >= 2 && etag[0] == '"' && etag[len(etag)-1] == '"' {
		etag = etag[1 : len(etag)-1]
	}
	if rev := dedup.Revision(etag); rev != "" && dedup.ValidRevision(rev) == nil {
		return rev
	}
	return ""
}

func hashBody(body io.Reader, limit int64) (dedup.Revision, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(body, limit+1))
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if n > limit {
		return "", fmt.Errorf("body longer than %d bytes", limit)
	}
	return dedup.Revision("sha256:" + hex.EncodeToString(h.Sum(nil))), nil
}

// drain reads a little of an unneeded body, so that a short one lets the
// connection be reused; closing the body discards the rest.
func drain(body io.Reader) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
}

func (s *HTTPSource) maxBody() int64 {
	if s.MaxBody > 0 {
		return s.MaxBody
	}
	return DefaultMaxBody
}

func (s *HTTPSource) check() error {
	u, err := url.Parse(s.URL)
	switch {
	case err != nil:
		return fmt.Errorf("%w: HTTP source URL: %v", dedup.ErrInvalid, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: HTTP source URL %q is not http or https", dedup.ErrInvalid, redactURL(u))
	case u.Host == "":
		return fmt.Errorf("%w: HTTP source URL %q has no host", dedup.ErrInvalid, redactURL(u))
	case s.Method != "" && s.Method != http.MethodGet && s.Method != http.MethodHead:
		return fmt.Errorf("%w: HTTP source method %q is not GET or HEAD", dedup.ErrInvalid, s.Method)
	case s.MaxBody < 0:
		return fmt.Errorf("%w: HTTP source MaxBody %d is negative", dedup.ErrInvalid, s.MaxBody)
	}
	return nil
}

// redactURL is u with its password, or its name if it has no password
// (a token given as the name), replaced by xxxxx.
func redactURL(u *url.URL) string {
	switch _, hasPassword := u.User.Password(); {
	case u.User == nil:
		return u.String()
	case hasPassword:
		return u.Redacted()
	}
	// A name alone is often a token (https://TOKEN@host/...).
	c := *u
	c.User = url.User("xxxxx")
	return c.String()
}

var _ Source = (*HTTPSource)(nil)
