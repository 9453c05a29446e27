package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is a handler over a Manager whose deploys the test finishes by
// hand, and the Manager's events, to wait for a trigger made in another
// goroutine.
type fixture struct {
	m      *dedup.Manager
	d      *deduptest.Deployer
	h      http.Handler
	events chan dedup.Event
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{d: new(deduptest.Deployer), events: make(chan dedup.Event, 1000)}
	m, err := dedup.New(f.d, dedup.WithObserver(func(e dedup.Event) {
		select {
		case f.events <- e:
		default:
			panic("test observer: event buffer full")
		}
	}))
	require.NoError(t, err)
	f.m = m
	f.h = newHandler(m)
	t.Cleanup(func() {
		// Cancels what still runs: the test Deployer returns then.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = m.Close(ctx)
	})
	return f
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitEvent returns the first event of kind for rev, skipping others.
func (f *fixture) waitEvent(t *testing.T, kind dedup.EventKind, rev dedup.Revision) dedup.Event {
	t.Helper()
	ctx := ctxT(t)
	for {
		select {
		case e := <-f.events:
			if e.Kind == kind && e.Revision == rev {
				return e
			}
		case <-ctx.Done():
			t.Fatalf("no %v event for %s", kind, rev)
		}
	}
}

// next returns the next deploy call and checks what it deploys.
func (f *fixture) next(t *testing.T, key string, rev dedup.Revision) *deduptest.Call {
	t.Helper()
	c, err := f.d.Next(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, key, c.Key)
	require.Equal(t, rev, c.Revision)
	return c
}

func (f *fixture) do(method, target, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

// doAsync serves the request in another goroutine; the channel yields the
// response once the handler returned.
func (f *fixture) doAsync(method, target, contentType, body string) <-chan *httptest.ResponseRecorder {
	ch := make(chan *httptest.ResponseRecorder, 1)
	go func() { ch <- f.do(method, target, contentType, body) }()
	return ch
}

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctxT(t).Done():
		t.Fatal("no response")
		panic("unreachable")
	}
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var v T
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v), "body: %s", rec.Body)
	return v
}

const jsonType = "application/json"

func TestBadRequests(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, method, target, contentType, body string
		want                                    int
		wantErr                                 string
	}{
		{"empty revision", "POST", "/deploy/web", jsonType, `{"revision":""}`, 400, "empty revision"},
		{"no revision at all", "POST", "/deploy/web", "", "", 400, "empty revision"},
		{"no revision in JSON", "POST", "/deploy/web", jsonType, `{"rev":"v1"}`, 400, "empty revision"},
		{"control character in key", "POST", "/deploy/a%01b", jsonType, `{"revision":"v1"}`, 400, "key has control character"},
		{"control character in revision", "POST", "/deploy/web?rev=v%0a1", "", "", 400, "revision has control character"},
		{"revision too long", "POST", "/deploy/web?rev=" + strings.Repeat("a", dedup.MaxLen+1), "", "", 400, "longer than 1024"},
		{"bad JSON", "POST", "/deploy/web", jsonType, `{"revision":`, 400, "bad JSON body"},
		{"JSON that is no object", "POST", "/deploy/web", jsonType, `"v1"`, 400, "bad JSON body"},
		{"two revisions in a form", "POST", "/deploy/web", "application/x-www-form-urlencoded", "rev=v1&rev=v2", 400, "2 revisions in the form"},
		{"form and query differ", "POST", "/deploy/web?rev=v2", "application/x-www-form-urlencoded", "rev=v1", 400, "differ"},
		{"body and query differ", "POST", "/deploy/web?rev=v2", jsonType, `{"revision":"v1"}`, 400, `"v1" in the body and "v2" in the query differ`},
		{"body too large", "POST", "/deploy/web", jsonType, `{"revision":"` + strings.Repeat("a", maxBody) + `"}`, 413, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := f.do(tt.method, tt.target, tt.contentType, tt.body)
			require.Equal(t, tt.want, rec.Code, "%s %s: body %s", tt.method, tt.target, rec.Body)
			got := decode[map[string]string](t, rec)
			assert.Contains(t, got["error"], tt.wantErr)
		})
	}
	assert.Equal(t, http.StatusMethodNotAllowed, f.do("GET", "/deploy/web", "", "").Code)
	assert.Empty(t, f.m.Statuses(), "a bad request triggered something")
	assert.Empty(t, f.d.Calls())
}

func TestTriggerAnswers(t *testing.T) {
	f := newFixture(t)
	steps := []struct {
		name, target, contentType, body string
		want                            triggered
	}{
		{"first revision starts", "/deploy/web", jsonType, `{"revision":"v1"}`, triggered{
			Requested: "v1", Action: "started", Running: "v1", Message: "deploy of v1 started"}},
		{"same revision joins the deploy", "/deploy/web?rev=v1", "", "", triggered{
			Requested: "v1", Action: "joined-running", Running: "v1", Message: "v1 is deploying already; joined that deploy"}},
		{"newer revision waits", "/deploy/web", "application/x-www-form-urlencoded", "rev=v2", triggered{
			Requested: "v2", Action: "queued", Running: "v1", Pending: "v2", Message: "queued; deploys when the running deploy of v1 ends"}},
		{"same pending revision joins it", "/deploy/web?rev=v2", jsonType, `{"revision":"v2"}`, triggered{
			Requested: "v2", Action: "joined-pending", Running: "v1", Pending: "v2", Message: "v2 was queued already; joined it"}},
		{"newest revision supersedes", "/deploy/web?rev=v3", "", "", triggered{
			Requested: "v3", Action: "superseded", Replaced: "v2", Running: "v1", Pending: "v3",
			Message: "superseded pending v2; deploys when the running deploy of v1 ends"}},
		{"back to the running revision", "/deploy/web?rev=v1", "", "", triggered{
			Requested: "v1", Action: "superseded", Replaced: "v3", Running: "v1", Pending: "v1",
			Message: "superseded pending v3; the running deploy of v1 covers it, unless it fails"}},
		{"and forward again", "/deploy/web?rev=v3", "", "", triggered{
			Requested: "v3", Action: "superseded", Replaced: "v1", Running: "v1", Pending: "v3",
			Message: "superseded pending v1; deploys when the running deploy of v1 ends"}},
	}
	for _, s := range steps {
		rec := f.do("POST", s.target, s.contentType, s.body)
		require.Equal(t, http.StatusAccepted, rec.Code, "%s: body %s", s.name, rec.Body)
		s.want.Key = "web"
		assert.Equal(t, s.want, decode[triggered](t, rec), s.name)
	}

	f.next(t, "web", "v1").Finish(nil)
	f.next(t, "web", "v3").Finish(nil) // v2 was skipped
	f.waitEvent(t, dedup.EventSucceeded, "v3")

	rec := f.do("POST", "/deploy/web?rev=v3", "", "")
	require.Equal(t, http.StatusAccepted, rec.Code)
	assert.Equal(t, triggered{Key: "web", Requested: "v3", Action: "unchanged", Live: "v3",
		Message: "v3 is live already; nothing to do"}, decode[triggered](t, rec))

	rec = f.do("GET", "/status", "", "")
	require.Equal(t, http.StatusOK, rec.Code)
	sts := decode[[]statusJSON](t, rec)
	require.Len(t, sts, 1)
	st := sts[0]
	assert.Equal(t, "web", st.Key)
	assert.Equal(t, "v3", st.Live)
	assert.Empty(t, st.Running)
	assert.Empty(t, st.Pending)
	assert.Equal(t, 2, st.Runs)
	assert.Equal(t, 2, st.Deployed)
	assert.Equal(t, 3, st.Superseded)
	assert.False(t, st.LastFinished.IsZero())
}

func TestRequestedRevision(t *testing.T) {
	f := newFixture(t)
	const form = "application/x-www-form-urlencoded"
	var mpBody strings.Builder
	mpType := multipartWriter(t, &mpBody, map[string]string{"rev": "4f2a9c1"})
	tests := []struct {
		name, target, contentType, body string
	}{
		{"JSON", "/deploy/a", jsonType, `{"revision":"4f2a9c1"}`},
		{"JSON sent by curl -d", "/deploy/b", form, `{"revision":"4f2a9c1"}`},
		{"JSON without a Content-Type", "/deploy/c", "", ` {"revision":"4f2a9c1"}`},
		{"query", "/deploy/d?rev=4f2a9c1", "", ""},
		{"query and JSON agree", "/deploy/e?rev=4f2a9c1", jsonType, `{"revision":"4f2a9c1"}`},
		{"query, JSON without revision", "/deploy/f?rev=4f2a9c1&x=1", jsonType, `{"other":"field"}`},
		{"form", "/deploy/g", form, "rev=4f2a9c1&x=1"},
		{"query, form without revision", "/deploy/h?rev=4f2a9c1", form, "x=1"},
		{"multipart form", "/deploy/i", mpType, mpBody.String()},
	}
	for _, tt := range tests {
		rec := f.do("POST", tt.target, tt.contentType, tt.body)
		require.Equal(t, http.StatusAccepted, rec.Code, "%s: %s", tt.name, rec.Body)
		assert.Equal(t, "4f2a9c1", decode[triggered](t, rec).Requested, tt.name)
	}
}

// multipartWriter writes fields as a multipart form to b and returns its
// Content-Type.
func multipartWriter(t *testing.T, b io.Writer, fields map[string]string) string {
	t.Helper()
	w := multipart.NewWriter(b)
	for k, v := range fields {
		require.NoError(t, w.WriteField(k, v))
	}
	require.NoError(t, w.Close())
	return w.FormDataContentType()
}

func TestWait(t *testing.T) {
	f := newFixture(t)
	require.Equal(t, http.StatusAccepted, f.do("POST", "/deploy/web?rev=v1", "", "").Code)
	v1 := f.next(t, "web", "v1")

	v2 := f.doAsync("POST", "/deploy/web?rev=v2&wait=1", "", "")
	f.waitEvent(t, dedup.EventQueued, "v2")
	v3 := f.doAsync("POST", "/deploy/web?rev=v3&wait=1", "", "")
	assert.Equal(t, dedup.Revision("v2"), f.waitEvent(t, dedup.EventCoalesced, "v3").Replaced)

	v1.Finish(nil)
	f.next(t, "web", "v3").Finish(nil)

	rec := receive(t, v2)
	require.Equal(t, http.StatusOK, rec.Code, "body %s", rec.Body)
	got := decode[result](t, rec)
	assert.Equal(t, "web", got.Key)
	assert.Equal(t, "v2", got.Requested)
	assert.Equal(t, "v3", got.Revision, "v2 is covered by the deploy of v3")
	assert.Equal(t, "superseded", got.Outcome)
	assert.Equal(t, 1, got.Attempts)
	assert.Empty(t, got.Error)
	assert.False(t, got.Finished.Before(got.Started))

	rec = receive(t, v3)
	require.Equal(t, http.StatusOK, rec.Code, "body %s", rec.Body)
	got = decode[result](t, rec)
	assert.Equal(t, "v3", got.Requested)
	assert.Equal(t, "v3", got.Revision)
	assert.Equal(t, "deployed", got.Outcome)

	// Live already: answered at once.
	rec = f.do("POST", "/deploy/web?rev=v3&wait=1", "", "")
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "unchanged", decode[result](t, rec).Outcome)

	// A failed deploy is a 502 that says why.
	v4 := f.doAsync("POST", "/deploy/web?rev=v4&wait=1", "", "")
	f.next(t, "web", "v4").Finish(errors.New("compose up: exit status 1"))
	rec = receive(t, v4)
	require.Equal(t, http.StatusBadGateway, rec.Code, "body %s", rec.Body)
	got = decode[result](t, rec)
	assert.Equal(t, "failed", got.Outcome)
	assert.Equal(t, "v4", got.Revision)
	assert.Equal(t, "compose up: exit status 1", got.Error)
}

func TestWaitClientGone(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, "POST", "/deploy/web?rev=v1&wait=1", nil)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.h.ServeHTTP(rec, req)
	}()
	call := f.next(t, "web", "v1")
	cancel()
	receive(t, done)
	assert.Empty(t, rec.Body.String(), "nobody to answer")
	select {
	case <-call.Context().Done():
		t.Fatal("the client going away canceled the deploy")
	default:
	}
	call.Finish(nil)
}

func TestClosed(t *testing.T) {
	f := newFixture(t)
	require.Equal(t, http.StatusAccepted, f.do("POST", "/deploy/web?rev=v1", "", "").Code)
	v1 := f.next(t, "web", "v1")
	v2 := f.doAsync("POST", "/deploy/web?rev=v2&wait=1", "", "")
	f.waitEvent(t, dedup.EventQueued, "v2")

	closed := make(chan error, 1)
	go func() { closed <- f.m.Close(context.Background()) }()

	// Close aborts what waits and lets the running deploy finish.
	rec := receive(t, v2)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, "body %s", rec.Body)
	got := decode[result](t, rec)
	assert.Equal(t, "aborted", got.Outcome)
	assert.Contains(t, got.Error, dedup.ErrClosed.Error())

	rec = f.do("POST", "/deploy/web?rev=v3", "", "")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, dedup.ErrClosed.Error(), decode[map[string]string](t, rec)["error"])

	v1.Finish(nil)
	require.NoError(t, receive(t, closed))
	assert.NoError(t, v1.Err(), "Close canceled the running deploy")
}

func newTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// serve runs run on a local port; the channel yields what run returned.
func serve(t *testing.T, ctx context.Context, d dedup.Deployer, grace time.Duration) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- run(ctx, ln, d, grace, newTestLogger(t)) }()
	return "http://" + ln.Addr().String(), done
}

// post sends a request on a connection of its own, so that no idle
// connection outlives the test.
func post(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), "POST", url, nil)
	require.NoError(t, err)
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestShutdownWaitsForDeploys(t *testing.T) {
	d := new(deduptest.Deployer)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	url, done := serve(t, ctx, d, time.Minute)

	code, body := post(t, url+"/deploy/web?rev=v1")
	require.Equal(t, http.StatusAccepted, code, body)
	call, err := d.Next(ctxT(t))
	require.NoError(t, err)

	stop() // as SIGTERM does
	call.Finish(nil)
	require.NoError(t, receive(t, done))
	assert.NoError(t, call.Err(), "shutdown canceled a deploy it had time to wait for")
}

func TestShutdownCancelsDeploysAfterGrace(t *testing.T) {
	d := new(deduptest.Deployer)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	url, done := serve(t, ctx, d, time.Nanosecond)

	code, body := post(t, url+"/deploy/web?rev=v1")
	require.Equal(t, http.StatusAccepted, code, body)
	call, err := d.Next(ctxT(t))
	require.NoError(t, err)

	stop() // the deploy never finishes by itself
	err = receive(t, done)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, call.Err(), context.Canceled)
}

func TestSimulatedDeploy(t *testing.T) {
	deploy := simulatedDeploy(time.Hour, newTestLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := deploy(ctx, "web", "v1")
	assert.ErrorIs(t, err, context.Canceled)
	assert.NoError(t, simulatedDeploy(0, newTestLogger(t))(context.Background(), "web", "v1"))
}
