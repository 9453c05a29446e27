package webhook_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/poller"
	"github.com/dedupdeploy/dedupdeploy/webhook"
)

func githubHeader(body []byte, delivery string) http.Header {
	return hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", delivery, "X-Hub-Signature-256", "sha256="+hexHMAC(testSecret, body))
}

func TestBadInput(t *testing.T) {
	p := new(pollRecorder)
	h, err := webhook.New(webhook.GitHub(testSecret), webhook.Routes{{Repository: "acme/web"}: {"web"}}, p, webhook.WithMaxBody(1024))
	require.NoError(t, err)
	tests := []struct {
		name   string
		body   string
		header http.Header // nil: validly signed
		want   int
		reason string
	}{
		{"malformed JSON", `{"ref":`, nil, 400, "bad payload: unexpected end of JSON input"},
		{"not an object", `["refs/heads/main"]`, nil, 400, "bad payload: json: cannot unmarshal"},
		{"no repository", `{"ref":"refs/heads/main","after":"abc"}`, nil, 400, "bad payload: push without repository.full_name"},
		{"no ref", `{"after":"abc","repository":{"full_name":"acme/web"}}`, nil, 400, "bad payload: push without ref"},
		{"no after", `{"ref":"refs/heads/main","repository":{"full_name":"acme/web"}}`, nil, 400, "bad payload: push without after"},
		{"unrouted repository", `{"ref":"refs/heads/main","after":"abc","repository":{"full_name":"acme/api"}}`, nil, 202, "no route for acme/api refs/heads/main"},
		{"missing signature", `{}`, hdr("X-GitHub-Event", "push"), 401, "missing X-Hub-Signature-256"},
		{"signature not hex", `{}`, hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256=zz"), 401, "malformed X-Hub-Signature-256"},
		{"signature too short", `{}`, hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+hexHMAC(testSecret, []byte("{}"))[:62]), 401, "malformed X-Hub-Signature-256"},
		{"body over the limit", `{"ref":"` + strings.Repeat("a", 1024) + `"}`, nil, 413, "body of 1034 bytes over the limit of 1024"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := tt.header
			if header == nil {
				header = githubHeader([]byte(tt.body), fmt.Sprint("d", i))
			}
			code, reply := deliver(t, h, "/", header, []byte(tt.body))
			assert.Equal(t, tt.want, code, "%+v", reply)
			assert.True(t, strings.HasPrefix(reply.Reason, tt.reason), "reason %q, want %q...", reply.Reason, tt.reason)
		})
	}
	assert.Empty(t, p.polled())

	// A body of unknown length over the limit: read no further than the
	// limit.
	body := &countingReader{r: strings.NewReader(strings.Repeat("x", 1<<20))}
	req := httptest.NewRequest(http.MethodPost, "/", body)
	req.ContentLength = -1
	req.Header = githubHeader(nil, "chunked")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code, rec.Body.String())
	assert.Contains(t, rec.Body.String(), `"reason":"body over the limit of 1024 bytes"`)
	assert.LessOrEqual(t, body.n, 1024+512*5, "read far past the limit") // io.ReadAll's chunks
	assert.Less(t, body.n, 1<<20)

	// Not a POST.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	assert.Equal(t, "POST", rec.Header().Get("Allow"))
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestSecretsNeverLeak sends wrong and right deliveries to every provider
// and looks for the secrets, in every encoding a sender uses, in replies
// and logs.
func TestSecretsNeverLeak(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	now := time.Unix(1_780_000_000, 0)
	clock := new(deduptest.Clock)
	clock.Set(now)
	var replies strings.Builder
	for _, tc := range providerCases(t, now) {
		body := []byte(standardPushBody)
		if tc.file != "" {
			body = payload(t, tc.file)
		}
		h, err := webhook.New(tc.provider, tc.routes, new(pollRecorder), webhook.WithLogger(log), webhook.WithClock(clock))
		require.NoError(t, err)
		mux := http.NewServeMux()
		mux.Handle("POST /hooks/dockerhub/{token}", h)
		mux.Handle("/", h)
		for _, header := range []http.Header{tc.forged, {}, tc.header(body)} {
			req := httptest.NewRequest(http.MethodPost, strings.Replace(tc.target, testHubToken, "wrong-token-0123456789", 1), bytes.NewReader(body))
			for k, v := range header {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			replies.WriteString(rec.Body.String())
		}
		replies.WriteString(fmt.Sprintf("%v %+v %#v %s %q\n", tc.provider, tc.provider, tc.provider, tc.provider, tc.provider))
	}
	// Bad configurations: their errors do not quote the secret either.
	for _, p := range []webhook.Provider{
		webhook.StandardWebhooks("whsec_" + testSecret), webhook.GitLab("", "whsec_!"+testSecret), webhook.DockerHub("short-" + testSecret[:5]),
	} {
		_, err := webhook.New(p, webhook.Routes{}, new(pollRecorder))
		require.ErrorIs(t, err, dedup.ErrInvalid)
		replies.WriteString(err.Error() + "\n")
	}
	whKey, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(testWhsec, "whsec_"))
	require.NoError(t, err)
	out := replies.String() + logs.String()
	require.Contains(t, logs.String(), "rejected", "the logger logged nothing")
	for _, secret := range []string{testSecret, testSecret[5:], testWhsec, testWhsec[6:], string(whKey), testHubToken, testAuth, testAuth[7:]} {
		assert.NotContains(t, out, secret)
	}
}

func TestPollFailures(t *testing.T) {
	p := &pollRecorder{fail: map[string]error{"api": poller.ErrNotWatched}}
	routes := webhook.Routes{{Repository: "acme/web"}: {"web", "api"}}
	h, err := webhook.New(webhook.GitHub(testSecret), routes, p)
	require.NoError(t, err)
	body := []byte(`{"ref":"refs/heads/main","after":"abc","repository":{"full_name":"acme/web"}}`)

	code, reply := deliver(t, h, "/", githubHeader(body, "d1"), body)
	assert.Equal(t, http.StatusInternalServerError, code)
	assert.Equal(t, "failed", reply.Result)
	assert.Equal(t, []webhook.KeyReply{
		{Key: "web", Repository: "acme/web", Ref: "refs/heads/main", Revision: "abc", Action: "poll"},
		{Key: "api", Repository: "acme/web", Ref: "refs/heads/main", Revision: "abc", Error: "poller: key not watched"},
	}, reply.Keys)

	// The delivery was forgotten: GitHub's redelivery acts again.
	delete(p.fail, "api")
	code, reply = deliver(t, h, "/", githubHeader(body, "d1"), body)
	assert.Equal(t, http.StatusAccepted, code, "%+v", reply)
	assert.Equal(t, []string{"web", "web", "api"}, p.polled())
}

func TestDeliveryMemory(t *testing.T) {
	p := new(pollRecorder)
	h, err := webhook.New(webhook.GitHub(testSecret), webhook.Routes{{Repository: "acme/web"}: {"web"}}, p, webhook.WithDeliveryMemory(2))
	require.NoError(t, err)
	body := []byte(`{"ref":"refs/heads/main","after":"abc","repository":{"full_name":"acme/web"}}`)
	send := func(id string) string {
		_, reply := deliver(t, h, "/", githubHeader(body, id), body)
		return reply.Result
	}
	assert.Equal(t, "polled", send("a"))
	assert.Equal(t, "polled", send("b"))
	assert.Equal(t, "duplicate", send("a"))
	assert.Equal(t, "duplicate", send("b"))
	assert.Equal(t, "polled", send("c")) // evicts a
	assert.Equal(t, "polled", send("a"), "remembers two IDs, not three")
	assert.Equal(t, "duplicate", send("c"))

	// Without a memory every delivery acts.
	h, err = webhook.New(webhook.GitHub(testSecret), webhook.Routes{{Repository: "acme/web"}: {"web"}}, p, webhook.WithDeliveryMemory(0))
	require.NoError(t, err)
	assert.Equal(t, "polled", send("a"))
	assert.Equal(t, "polled", send("a"))
}

func TestRoutes(t *testing.T) {
	r := webhook.Routes{
		{Repository: "acme/web", Ref: "main"}:            {"web"},
		{Repository: "acme/web", Ref: "refs/heads/main"}: {"web", "web-full"},
		{Repository: "acme/web", Ref: "v1"}:              {"release"},
		{Repository: "acme/web"}:                         {"any"},
		{Repository: "nginx", Ref: "latest"}:             {"proxy"},
	}
	tests := []struct {
		push webhook.Push
		want []string
	}{
		{webhook.Push{Repository: "acme/web", Ref: "refs/heads/main"}, []string{"web", "web-full", "any"}},
		{webhook.Push{Repository: "acme/web", Ref: "refs/tags/v1"}, []string{"release", "any"}},
		{webhook.Push{Repository: "acme/web", Ref: "refs/heads/v1"}, []string{"release", "any"}},
		{webhook.Push{Repository: "acme/web", Ref: "refs/heads/dev"}, []string{"any"}},
		{webhook.Push{Repository: "Acme/Web", Ref: "refs/heads/main"}, nil},
		{webhook.Push{Repository: "nginx", Ref: "latest"}, []string{"proxy"}},
		{webhook.Push{Repository: "nginx"}, nil},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, r.Route(tt.push), "%+v", tt.push)
	}
	assert.Equal(t, "main", webhook.Push{Ref: "refs/heads/main"}.Branch())
	assert.Empty(t, webhook.Push{Ref: "refs/tags/v1"}.Branch())

	var got webhook.Push
	f := webhook.RouterFunc(func(p webhook.Push) []string { got = p; return []string{p.Repository} })
	assert.Equal(t, []string{"x"}, f.Route(webhook.Push{Repository: "x"}))
	assert.Equal(t, "x", got.Repository)
}

func TestNewRefuses(t *testing.T) {
	p := new(pollRecorder)
	r := webhook.Routes{}
	tests := []struct {
		name string
		err  error
	}{
		{"no provider", func() error { _, err := webhook.New(webhook.Provider{}, r, p); return err }()},
		{"empty GitHub secret", func() error { _, err := webhook.New(webhook.GitHub(""), r, p); return err }()},
		{"empty Gitea secret", func() error { _, err := webhook.New(webhook.Gitea(""), r, p); return err }()},
		{"empty Forgejo secret", func() error { _, err := webhook.New(webhook.Forgejo(""), r, p); return err }()},
		{"empty Bitbucket secret", func() error { _, err := webhook.New(webhook.Bitbucket(""), r, p); return err }()},
		{"GitLab without tokens", func() error { _, err := webhook.New(webhook.GitLab("", ""), r, p); return err }()},
		{"GitLab signing token not base64", func() error { _, err := webhook.New(webhook.GitLab("t", "whsec_%%%"), r, p); return err }()},
		{"empty Standard Webhooks secret", func() error { _, err := webhook.New(webhook.StandardWebhooks("whsec_"), r, p); return err }()},
		{"short Docker Hub token", func() error { _, err := webhook.New(webhook.DockerHub("0123456789abcde"), r, p); return err }()},
		{"empty registry authorization", func() error { _, err := webhook.New(webhook.Registry(""), r, p); return err }()},
		{"nil router", func() error { _, err := webhook.New(webhook.GitHub("s"), nil, p); return err }()},
		{"nil poller", func() error { _, err := webhook.New(webhook.GitHub("s"), r, nil); return err }()},
		{"nil notifier", func() error { _, err := webhook.NewDirect(webhook.GitHub("s"), r, nil); return err }()},
		{"max body", func() error { _, err := webhook.New(webhook.GitHub("s"), r, p, webhook.WithMaxBody(0)); return err }()},
		{"memory", func() error {
			_, err := webhook.New(webhook.GitHub("s"), r, p, webhook.WithDeliveryMemory(-1))
			return err
		}()},
		{"tolerance", func() error {
			_, err := webhook.New(webhook.GitHub("s"), r, p, webhook.WithTolerance(time.Millisecond))
			return err
		}()},
		{"clock", func() error { _, err := webhook.New(webhook.GitHub("s"), r, p, webhook.WithClock(nil)); return err }()},
	}
	for _, tt := range tests {
		assert.ErrorIs(t, tt.err, dedup.ErrInvalid, tt.name)
	}
	_, err := webhook.New(webhook.DockerHub("0123456789abcdef"), r, p)
	assert.NoError(t, err, "a token of MinDockerHubToken bytes")
	_, err = webhook.New(webhook.GitLab("", "c2VjcmV0"), r, p)
	assert.NoError(t, err, "the whsec_ prefix is optional")
}
