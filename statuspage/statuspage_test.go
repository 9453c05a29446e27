package statuspage_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/statuspage"
)

// keyJSON is what a client decodes: the JSON of a dedup.Status reads back
// into one.
type keyJSON = dedup.Status

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	m, clock := scenario(t)
	mux := http.NewServeMux()
	mux.Handle("GET /status/", statuspage.Handler("/status/", m, statuspage.WithClock(clock)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url, accept string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoErrorf(t, err, "GET %s", url)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

func at(d time.Duration) time.Time { return deduptest.Epoch.Add(d) }

func TestJSONEveryKey(t *testing.T) {
	srv := newServer(t)
	resp, body := get(t, srv.URL+"/status/", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	var list struct {
		Time time.Time `json:"time"`
		Keys []keyJSON `json:"keys"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &list), body)
	now := at(4*time.Minute + 31*time.Second)
	require.True(t, now.Equal(list.Time), "time %v; want %v", list.Time, now)
	var keys []string
	byKey := map[string]keyJSON{}
	for _, k := range list.Keys {
		keys = append(keys, k.Key)
		byKey[k.Key] = k
	}
	require.Equal(t, []string{hostile, "api", "db/main", "web"}, keys, "keys, sorted")

	web := byKey["web"]
	require.Equal(t, dedup.Revision("v1"), web.Live)
	require.Equal(t, dedup.Revision("v2"), web.Running)
	require.Equal(t, dedup.Revision("v3"), web.Pending)
	require.Equal(t, 1, web.Attempt)
	require.True(t, web.Slow, "web is slow")
	require.Equal(t, 3*time.Minute, list.Time.Sub(web.LastStarted), "how long web has run")
	require.Equal(t, 2, web.Runs)
	require.Equal(t, 1, web.Deployed)
	require.Equal(t, 1, web.Baseline.Samples)
	require.Equal(t, time.Minute, web.Baseline.Mean)
	require.Equal(t, time.Minute, web.Baseline.P90)
	require.True(t, web.LastStarted.Equal(now.Add(-3*time.Minute)), "last_started %v", web.LastStarted)
	require.NoError(t, web.LastErr)

	api := byKey["api"]
	require.Empty(t, api.Live)
	require.Empty(t, api.Running)
	require.Equal(t, dedup.Revision("a1"), api.Pending, "a failed revision waits for its retry")
	require.Equal(t, 1, api.Failures)
	require.EqualError(t, api.LastErr, "exit status 1\nerror: <b>image not found</b>")
	require.True(t, api.NextStart.Equal(at(10*time.Minute+101*time.Second)), "next_start %v", api.NextStart)
	require.Zero(t, api.Baseline.Samples)

	require.Equal(t, dedup.Revision(`"><img src=x onerror=alert(2)>`), byKey[hostile].Live)
	require.Equal(t, 30*time.Second, byKey["db/main"].Baseline.P90)
}

func TestJSONOneKey(t *testing.T) {
	srv := newServer(t)
	for path, want := range map[string]string{
		"/status/db/main": "db/main",
		"/status/web":     "web",
		"/status/%3Cscript%3Ealert%281%29%3C/script%3E": hostile,
		"/status/web?format=json":                       "web",
	} {
		resp, body := get(t, srv.URL+path, "application/json")
		require.Equalf(t, http.StatusOK, resp.StatusCode, "GET %s: %s", path, body)
		var k keyJSON
		require.NoErrorf(t, json.Unmarshal([]byte(body), &k), "GET %s: %s", path, body)
		require.Equalf(t, want, k.Key, "GET %s", path)
	}
	resp, body := get(t, srv.URL+"/status/nope", "")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.JSONEq(t, `{"error": "no key \"nope\""}`, body)
}

func TestHTML(t *testing.T) {
	srv := newServer(t)
	resp, body := get(t, srv.URL+"/status/", "text/html,application/xhtml+xml,*/*;q=0.8")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, resp.Header.Values("Vary"), "Accept")
	require.NotContains(t, body, "<script", "the hostile key is escaped")
	require.NotContains(t, body, "<img", "the hostile revision is escaped")
	require.NotContains(t, body, "<b>", "the error is escaped")
	require.Contains(t, body, "&lt;script&gt;alert(1)&lt;/script&gt;")
	require.Equal(t, 5, strings.Count(body, "<tr"), "a header row and a row per key")
	require.Contains(t, body, "attempt 1, for 3m0s, <strong>slow</strong>")
	require.Contains(t, body, "1m0s / 1m0s (1)", "web's baseline")
	require.Contains(t, body, "retry 2, not before 2000-01-01 00:11:41 UTC", "api's retry")
	require.Contains(t, body, "<summary>exit status 1</summary>", "the first line of a long error")

	// Every key's link leads to that key's page.
	links := regexp.MustCompile(`<td><a href="([^"]*)">`).FindAllStringSubmatch(body, -1)
	require.Len(t, links, 4)
	for i, want := range []string{hostile, "api", "db/main", "web"} {
		href := html.UnescapeString(links[i][1])
		resp, page := get(t, srv.URL+href, "text/html")
		require.Equalf(t, http.StatusOK, resp.StatusCode, "GET %s: %s", href, page)
		require.Equalf(t, 2, strings.Count(page, "<tr"), "GET %s: one row", href)
		require.Containsf(t, page, "<h1>"+html.EscapeString(want)+"</h1>", "GET %s", href)
	}

	resp, body = get(t, srv.URL+"/status/?format=html", "application/json")
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"), "?format=html wins over Accept")
	require.Contains(t, body, "<table>")
	resp, body = get(t, srv.URL+"/status/nope", "text/html")
	require.Equal(t, http.StatusNotFound, resp.StatusCode, body)
}

// Keys that are not clean paths are reached through ?key=, and the page
// links them so.
func TestUncleanKeys(t *testing.T) {
	ctx := context.Background()
	m, err := dedup.New(dedup.DeployFunc(func(context.Context, string, dedup.Revision) error { return nil }))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close(ctx)) })
	keys := []string{"../up", "/lead", "a//b", "a/./b", "trail/", "q?x=1#f", "100%"}
	for _, k := range keys {
		_, err := m.Deploy(ctx, k, "v1")
		require.NoError(t, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /status/", statuspage.Handler("/status/", m))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	_, body := get(t, srv.URL+"/status/", "text/html")
	links := regexp.MustCompile(`<td><a href="([^"]*)">`).FindAllStringSubmatch(body, -1)
	require.Len(t, links, len(keys))
	for _, l := range links {
		href := html.UnescapeString(l[1])
		resp, one := get(t, srv.URL+href, "application/json")
		require.Equalf(t, http.StatusOK, resp.StatusCode, "GET %s: %s", href, one)
		var k keyJSON
		require.NoError(t, json.Unmarshal([]byte(one), &k))
		require.Containsf(t, keys, k.Key, "GET %s", href)
		keys = slices.DeleteFunc(keys, func(s string) bool { return s == k.Key })
	}
	require.Empty(t, keys, "keys no link led to")

	resp, _ := get(t, srv.URL+"/status/?key=", "")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "?key= empty")
}

func TestEmpty(t *testing.T) {
	m, clock := scenario(t)
	for _, k := range m.Statuses() {
		m.Forget(k.Key) // web and api are busy and stay
	}
	h := statuspage.Handler("/s/", emptySource{}, statuspage.WithClock(clock))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/s/", nil))
	require.JSONEq(t, `{"time": "2000-01-01T00:04:31Z", "keys": []}`, rec.Body.String())
	rec = httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/s/", nil)
	req.Header.Set("Accept", "text/html")
	h.ServeHTTP(rec, req)
	require.Contains(t, rec.Body.String(), "No keys yet.")
}

type emptySource struct{}

func (emptySource) Statuses() []dedup.Status           { return nil }
func (emptySource) Status(string) (dedup.Status, bool) { return dedup.Status{}, false }

func TestBadRequests(t *testing.T) {
	srv := newServer(t)
	resp, _ := get(t, srv.URL+"/status/?format=xml", "")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "?format=xml")

	h := statuspage.Handler("/status/", emptySource{})
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "/status/", nil))
		require.Equalf(t, http.StatusMethodNotAllowed, rec.Code, "%s", method)
		require.Equal(t, "GET, HEAD", rec.Header().Get("Allow"))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/elsewhere/", nil))
	require.Equal(t, http.StatusNotFound, rec.Code, "a path outside the prefix")

	req, err := http.NewRequest(http.MethodHead, srv.URL+"/status/web", nil)
	require.NoError(t, err)
	hresp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	hresp.Body.Close()
	require.Equal(t, http.StatusOK, hresp.StatusCode, "HEAD")

	for _, prefix := range []string{"", "status/", "/status"} {
		require.Panicsf(t, func() { statuspage.Handler(prefix, emptySource{}) }, "Handler(%q)", prefix)
	}
	require.Panics(t, func() { statuspage.Handler("/s/", nil) }, "Handler with a nil Source")
}
