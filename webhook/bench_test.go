package webhook_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dedupdeploy/dedupdeploy/webhook"
)

// BenchmarkServeGitHub is one verified GitHub push of the documented
// payload (about 2.5 KB), parsed, routed and polled, each with a new
// delivery ID.
func BenchmarkServeGitHub(b *testing.B) {
	body := payload(b, "github-push.json")
	p := new(pollRecorder)
	h, err := webhook.New(webhook.GitHub(testSecret), webhook.Routes{{Repository: "Codertocat/Hello-World"}: {"hello"}}, p)
	if err != nil {
		b.Fatal(err)
	}
	sig := "sha256=" + hexHMAC(testSecret, body)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for i := 0; b.Loop(); i++ {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprint(i))
		req.Header.Set("X-Hub-Signature-256", sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatal(rec.Code, rec.Body)
		}
		p.keys = p.keys[:0]
	}
}
