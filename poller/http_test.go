package poller_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// resource is an HTTP resource whose body and headers the test sets. It
// answers If-None-Match with 304 when the ETag matches, and records the
// requests.
type resource struct {
	mu       sync.Mutex
	body     string
	etag     string
	digest   string
	status   int // 0: 200
	requests []*http.Request
	notMod   int // 304s sent
}

func (r *resource) set(f func(r *resource)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *resource) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, req)
	if r.etag != "" {
		w.Header().Set("ETag", r.etag)
		if inm := req.Header.Get("If-None-Match"); inm != "" && strings.TrimPrefix(inm, "W/") == strings.TrimPrefix(r.etag, "W/") {
			r.notMod++
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	if r.digest != "" {
		w.Header().Set("Docker-Content-Digest", r.digest)
	}
	if r.status != 0 {
		w.WriteHeader(r.status)
	}
	_, _ = w.Write([]byte(r.body))
}

func (r *resource) lastRequest() *http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests[len(r.requests)-1]
}

func (r *resource) notModified() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notMod
}

func bodyHash(s string) dedup.Revision {
	sum := sha256.Sum256([]byte(s))
	return dedup.Revision("sha256:" + hex.EncodeToString(sum[:]))
}

func newResource(t *testing.T, r *resource) (*httptest.Server, *poller.HTTPSource) {
	t.Helper()
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	src := poller.HTTP(srv.URL + "/manifest")
	src.Client = srv.Client()
	return srv, src
}

func TestHTTPRevision(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  *resource
		want dedup.Revision
	}{
		{"strong ETag", &resource{body: "v1", etag: `"abc123"`}, "abc123"},
		{"weak ETag is not a revision", &resource{body: "v1", etag: `W/"abc123"`}, bodyHash("v1")},
		{"digest", &resource{body: "v1", digest: "sha256:feed"}, "sha256:feed"},
		{"digest before ETag", &resource{body: "v1", digest: "sha256:feed", etag: `"abc"`}, "sha256:feed"},
		{"body hash", &resource{body: "v1"}, bodyHash("v1")},
		{"empty body", &resource{}, bodyHash("")},
		{"201", &resource{body: "v1", status: http.StatusCreated}, bodyHash("v1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, src := newResource(t, tc.res)
			rev, err := src.Latest(testContext(t))
			require.NoError(t, err)
			require.Equal(t, tc.want, rev)
		})
	}
}

// TestHTTPConditional: after an ETag, an unchanged resource costs a 304 and
// reports the same revision; a changed one reports the new revision.
func TestHTTPConditional(t *testing.T) {
	for _, etag := range []string{`"v1"`, `W/"v1"`} {
		t.Run(etag, func(t *testing.T) {
			res := &resource{body: "one", etag: etag}
			_, src := newResource(t, res)
			ctx := testContext(t)
			first, err := src.Latest(ctx)
			require.NoError(t, err)
			require.Empty(t, res.lastRequest().Header.Get("If-None-Match"), "first request")

			again, err := src.Latest(ctx)
			require.NoError(t, err)
			require.Equal(t, etag, res.lastRequest().Header.Get("If-None-Match"))
			require.Equal(t, 1, res.notModified(), "304s")
			require.Equal(t, first, again, "revision after a 304")

			res.set(func(r *resource) { r.body, r.etag = "two", strings.Replace(etag, "v1", "v2", 1) })
			changed, err := src.Latest(ctx)
			require.NoError(t, err)
			require.NotEqual(t, first, changed)
			require.Equal(t, 1, res.notModified(), "304s")
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		res     *resource
		src     func(*poller.HTTPSource)
		message string
	}{
		{"404", &resource{status: http.StatusNotFound, body: "no such manifest"}, nil, `404 Not Found: "no such manifest"`},
		{"500", &resource{status: http.StatusInternalServerError}, nil, "500 Internal Server Error"},
		{"304 to an unconditional request", &resource{status: http.StatusNotModified}, nil, "304"},
		{"body too large", &resource{body: strings.Repeat("x", 100)}, func(s *poller.HTTPSource) { s.MaxBody = 99 }, "longer than 99 bytes"},
		{"HEAD without digest", &resource{body: "v1"}, func(s *poller.HTTPSource) { s.Method = http.MethodHead }, "no body to hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, src := newResource(t, tc.res)
			if tc.src != nil {
				tc.src(src)
			}
			rev, err := src.Latest(testContext(t))
			require.Errorf(t, err, "Latest = %q", rev)
			require.Empty(t, rev)
			require.ErrorContains(t, err, tc.message)
		})
	}
}

func TestHTTPBodyAtLimit(t *testing.T) {
	_, src := newResource(t, &resource{body: strings.Repeat("x", 100)})
	src.MaxBody = 100
	rev, err := src.Latest(testContext(t))
	require.NoError(t, err)
	require.Equal(t, bodyHash(strings.Repeat("x", 100)), rev)
}

func TestHTTPHeadersAndHead(t *testing.T) {
	res := &resource{digest: "sha256:beef"}
	_, src := newResource(t, res)
	src.Method = http.MethodHead
	src.Header = http.Header{"Authorization": {"Bearer t0ken"}, "Accept": {"application/vnd.oci.image.index.v1+json"}}
	rev, err := src.Latest(testContext(t))
	require.NoError(t, err)
	require.Equal(t, dedup.Revision("sha256:beef"), rev)
	req := res.lastRequest()
	require.Equal(t, http.MethodHead, req.Method)
	require.Equal(t, "Bearer t0ken", req.Header.Get("Authorization"))
	require.Equal(t, "application/vnd.oci.image.index.v1+json", req.Header.Get("Accept"))
}

// TestHTTPCanceled: the request honors ctx.
func TestHTTPCanceled(t *testing.T) {
	entered := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	src := poller.HTTP(srv.URL)
	src.Client = srv.Client()
	ctx, cancel := context.WithCancel(testContext(t))
	done := make(chan error, 1)
	go func() {
		_, err := src.Latest(ctx)
		done <- err
	}()
	<-entered
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

func TestHTTPRedactsPassword(t *testing.T) {
	res := &resource{status: http.StatusForbidden}
	srv, _ := newResource(t, res)
	src := poller.HTTP(strings.Replace(srv.URL, "http://", "http://user:s3cret@", 1))
	src.Client = srv.Client()
	_, err := src.Latest(testContext(t))
	require.ErrorContains(t, err, "403")
	require.NotContains(t, err.Error(), "s3cret")
}
