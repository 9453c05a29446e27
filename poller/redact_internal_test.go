package poller

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Credentials in a remote never show in what is reported: a password, or a
// name alone, which is often a token.
func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://example.com/web.git":           "https://example.com/web.git",
		"https://me:s3cret@example.com/web.git": "https://me:xxxxx@example.com/web.git",
		"https://ghp_T0KEN@example.com/web.git": "https://xxxxx@example.com/web.git",
		"/srv/git/web.git":                      "/srv/git/web.git",
		"git@example.com:web.git":               "git@example.com:web.git",
	} {
		if got := redactRemote(in); got != want {
			t.Errorf("redactRemote(%q) = %q; want %q", in, got, want)
		}
	}
}

// The poll and the tree fetch authenticate alike: Basic from the user
// info, unless a header sets Authorization.
func TestBasicAuth(t *testing.T) {
	u, _ := url.Parse("https://me:pw@example.com/")
	if got := basicAuth(u.User, nil); got != "Basic bWU6cHc=" {
		t.Errorf("basicAuth(me:pw) = %q", got)
	}
	if got := basicAuth(u.User, http.Header{"Authorization": {"Bearer x"}}); got != "" {
		t.Errorf("basicAuth with an Authorization header = %q; want none", got)
	}
	if got := basicAuth(nil, nil); got != "" {
		t.Errorf("basicAuth(nil) = %q; want none", got)
	}
}

// A token given as the URL's name does not show in an HTTP source's error.
func TestHTTPErrorRedactsToken(t *testing.T) {
	src := HTTP("http://ghp_T0KEN@127.0.0.1:1/release.json") // nothing listens on port 1
	_, err := src.Latest(t.Context())
	if err == nil || strings.Contains(err.Error(), "ghp_T0KEN") {
		t.Fatalf("Latest = %v; want an error without the token", err)
	}
}
