package deployer_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/deployer"
)

// received is what a test server saw of one request.
type received struct {
	method, path, contentType, auth, host string
	body                                  map[string]string
}

// server starts an httptest server that records each request and answers
// with status and body.
func server(t *testing.T, status int, body string) (*httptest.Server, <-chan received) {
	t.Helper()
	got := make(chan received, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := received{
			method: r.Method, path: r.URL.Path, host: r.Host,
			contentType: r.Header.Get("Content-Type"), auth: r.Header.Get("Authorization"),
		}
		if err := json.NewDecoder(r.Body).Decode(&rec.body); err != nil {
			t.Errorf("request body: %v", err)
		}
		got <- rec
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func TestHTTPRequest(t *testing.T) {
	srv, got := server(t, http.StatusNoContent, "")
	h := deployer.HTTP(srv.URL + "/hooks/deploy")
	h.Client = srv.Client()
	h.Header = http.Header{"Authorization": {"Bearer s3cret"}, "host": {"deploy.example"}}

	key, rev := `web "eu"`, dedup.Revision(`4f2a9c1 <&> ü`)
	require.NoError(t, h.Deploy(testContext(t), key, rev))
	r := <-got
	assert.Equal(t, http.MethodPost, r.method)
	assert.Equal(t, "/hooks/deploy", r.path)
	assert.Equal(t, "application/json", r.contentType)
	assert.Equal(t, "Bearer s3cret", r.auth)
	assert.Equal(t, "deploy.example", r.host)
	assert.Equal(t, map[string]string{"key": key, "revision": string(rev)}, r.body)
	assert.Equal(t, http.Header{"Authorization": {"Bearer s3cret"}, "host": {"deploy.example"}}, h.Header, "Deploy changed Header")
}

func TestHTTPContentTypeOverride(t *testing.T) {
	srv, got := server(t, http.StatusOK, "")
	h := &deployer.HTTPDeployer{URL: srv.URL, Client: srv.Client(), Header: http.Header{"Content-Type": {"application/vnd.deploy+json"}}}
	require.NoError(t, h.Deploy(testContext(t), "web", "v1"))
	assert.Equal(t, "application/vnd.deploy+json", (<-got).contentType)
}

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		maxBody   int64
		wantErr   bool
		wantBody  string
		truncated bool
	}{
		{name: "200", status: 200, body: "deployed"},
		{name: "201", status: 201},
		{name: "204", status: 204},
		{name: "299", status: 299},
		{name: "304 is not success", status: 304, wantErr: true},
		{name: "400 with body", status: 400, body: `{"error":"unknown key"}`, wantErr: true, wantBody: `{"error":"unknown key"}`},
		{name: "500 empty body", status: 500, wantErr: true},
		{name: "502 long body is cut", status: 502, body: strings.Repeat("a", 100) + "END", maxBody: 10, wantErr: true, wantBody: strings.Repeat("a", 10), truncated: true},
		{name: "503 body of exactly max", status: 503, body: "0123456789", maxBody: 10, wantErr: true, wantBody: "0123456789"},
		{name: "default max body", status: 500, body: strings.Repeat("b", deployer.DefaultMaxBody+1), wantErr: true, wantBody: strings.Repeat("b", deployer.DefaultMaxBody), truncated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := server(t, tt.status, tt.body)
			h := &deployer.HTTPDeployer{URL: srv.URL + "/deploy", Client: srv.Client(), MaxBody: tt.maxBody}
			err := h.Deploy(testContext(t), "web", "v1")
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			var se *deployer.StatusError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.status, se.Code)
			assert.Equal(t, srv.URL+"/deploy", se.URL)
			assert.Equal(t, tt.wantBody, string(se.Body))
			assert.Equal(t, tt.truncated, se.Truncated)
			msg := err.Error()
			assert.Contains(t, msg, srv.URL+"/deploy")
			assert.Contains(t, msg, http.StatusText(tt.status))
			assert.Contains(t, msg, tt.wantBody)
			assert.NotContains(t, msg, "END")
		})
	}
}

func TestHTTPDefaultClientDoesNotFollowRedirects(t *testing.T) {
	var deployed atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new", http.StatusFound)
	})
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) {
		deployed.Store(true)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})

	err := deployer.HTTP(srv.URL+"/old").Deploy(testContext(t), "web", "v1")
	var se *deployer.StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusFound, se.Code)
	assert.False(t, deployed.Load(), "the redirect was followed")
}

func TestHTTPCancel(t *testing.T) {
	arrived := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server notices a gone client only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		close(arrived)
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	h := &deployer.HTTPDeployer{URL: srv.URL, Client: srv.Client()}

	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	result := deployAsync(ctx, t, h, "web", "v1")
	await(t, arrived, "the request")
	cancel()
	require.ErrorIs(t, result(), context.Canceled)
}

func TestHTTPTransportError(t *testing.T) {
	boom := errors.New("connection refused, for the test")
	h := &deployer.HTTPDeployer{
		URL:    "https://deploy.example/hook",
		Client: &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, boom })},
	}
	err := h.Deploy(testContext(t), "web", "v1")
	require.ErrorIs(t, err, boom)
	var se *deployer.StatusError
	assert.False(t, errors.As(err, &se))
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestHTTPInvalid(t *testing.T) {
	var calls atomic.Int32
	client := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		calls.Add(1)
		return nil, errors.New("no request was expected")
	})}
	tests := []struct {
		name    string
		url     string
		maxBody int64
		key     string
		rev     dedup.Revision
	}{
		{name: "empty URL", url: "", key: "web", rev: "v1"},
		{name: "relative URL", url: "/deploy", key: "web", rev: "v1"},
		{name: "no host", url: "http:///deploy", key: "web", rev: "v1"},
		{name: "other scheme", url: "ftp://deploy.example/x", key: "web", rev: "v1"},
		{name: "unparsable", url: "http://deploy.example/%zz", key: "web", rev: "v1"},
		{name: "negative max body", url: "http://deploy.example", maxBody: -1, key: "web", rev: "v1"},
		{name: "empty key", url: "http://deploy.example", key: "", rev: "v1"},
		{name: "bad revision", url: "http://deploy.example", key: "web", rev: "v1\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &deployer.HTTPDeployer{URL: tt.url, Client: client, MaxBody: tt.maxBody}
			err := h.Deploy(testContext(t), tt.key, tt.rev)
			require.ErrorIs(t, err, dedup.ErrInvalid)
		})
	}
	assert.Zero(t, calls.Load(), "requests sent")
}

func TestHTTPRedactsPassword(t *testing.T) {
	srv, _ := server(t, http.StatusForbidden, "no")
	h := &deployer.HTTPDeployer{URL: strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1), Client: srv.Client()}
	err := h.Deploy(testContext(t), "web", "v1")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "hunter2")
}
