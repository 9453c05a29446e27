package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
	"github.com/dedupdeploy/dedupdeploy/webhook"
)

// A GitHub push makes the routed key poll now; the poll reads the
// revision and the Manager deploys it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	deployed := make(chan string, 1)
	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		deployed <- key + " at " + string(rev) // the Poller's first poll may come before the push
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(ctx)

	// The source stands in for poller.Git("https://github.com/acme/web.git", "main").
	p := poller.New(m)
	latest := poller.SourceFunc(func(context.Context) (dedup.Revision, error) { return "4f2a9c1", nil })
	if err := p.Watch("web", latest, poller.Every(time.Hour)); err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- p.Run(runCtx) }()
	defer func() { stop(); <-ran }()

	const secret = "It's a Secret to Everybody"
	h, err := webhook.New(webhook.GitHub(secret), webhook.Routes{{Repository: "acme/web", Ref: "main"}: {"web"}}, p)
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/github", h)

	// What GitHub sends.
	body := `{"ref":"refs/heads/main","after":"4f2a9c1","repository":{"full_name":"acme/web"}}`
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req := httptest.NewRequest("POST", "/hooks/github", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body)

	fmt.Println("deployed", <-deployed)
	// Output:
	// 202 {"provider":"github","event":"push","delivery":"72d3162e-cc78-11e3-81ab-4c9367dc0958","result":"polled","keys":[{"key":"web","repository":"acme/web","ref":"refs/heads/main","revision":"4f2a9c1","action":"poll"}]}
	// deployed web at 4f2a9c1
}

// Without a poller, NewDirect triggers the pushed revision, and the reply
// says what the trigger did. It trusts delivery order.
func ExampleNewDirect() {
	release := make(chan struct{})
	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		<-release
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(context.Background())
	defer close(release)

	h, err := webhook.NewDirect(webhook.Registry("Bearer s3cr3t"), webhook.Routes{{Repository: "acme/api"}: {"api"}}, m)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, digest := range []string{"sha256:aa", "sha256:bb", "sha256:cc"} {
		body := `{"events":[{"id":"` + digest + `","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"acme/api","tag":"v1","digest":"` + digest + `"}}]}`
		req := httptest.NewRequest("POST", "/hooks/registry", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer s3cr3t")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Print(rec.Code, " ", rec.Body)
	}
	// Output:
	// 202 {"provider":"registry","event":"push","result":"triggered","keys":[{"key":"api","repository":"acme/api","ref":"v1","revision":"sha256:aa","action":"started"}]}
	// 202 {"provider":"registry","event":"push","result":"triggered","keys":[{"key":"api","repository":"acme/api","ref":"v1","revision":"sha256:bb","action":"queued"}]}
	// 202 {"provider":"registry","event":"push","result":"triggered","keys":[{"key":"api","repository":"acme/api","ref":"v1","revision":"sha256:cc","action":"queued","replaced":"sha256:bb"}]}
}
