package webhook_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
	"github.com/dedupdeploy/dedupdeploy/webhook"
)

// GitHub's documented test vector: the secret "It's a Secret to Everybody"
// over "Hello, World!".
const (
	githubVectorSecret = "It's a Secret to Everybody"
	githubVectorBody   = "Hello, World!"
	githubVectorSig    = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
)

// The Standard Webhooks test vector, published with the specification's
// reference libraries.
const (
	swVectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	swVectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	swVectorTS     = 1614265330
	swVectorBody   = `{"test": 2432232314}`
	swVectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestGitHubTestVector(t *testing.T) {
	require.Equal(t, githubVectorSig, hexHMAC(githubVectorSecret, []byte(githubVectorBody)), "the test's own HMAC")
	p := new(pollRecorder)
	h, err := webhook.New(webhook.GitHub(githubVectorSecret), webhook.Routes{}, p)
	require.NoError(t, err)

	code, reply := deliver(t, h, "/", hdr("X-GitHub-Event", "ping", "X-Hub-Signature-256", "sha256="+githubVectorSig), []byte(githubVectorBody))
	assert.Equal(t, http.StatusOK, code, "%+v", reply)
	assert.Equal(t, webhook.Reply{Provider: "github", Event: "ping", Result: "ignored", Reason: "ping"}, reply)

	wrong := "sha256=" + githubVectorSig[:63] + "f"
	code, reply = deliver(t, h, "/", hdr("X-GitHub-Event", "ping", "X-Hub-Signature-256", wrong), []byte(githubVectorBody))
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Equal(t, "X-Hub-Signature-256 does not match the body", reply.Reason)
}

func TestStandardWebhooksTestVector(t *testing.T) {
	require.Equal(t, swVectorSig, standardSignature(t, swVectorSecret, swVectorID, swVectorTS, []byte(swVectorBody)), "the test's own signature")
	clock := new(deduptest.Clock)
	clock.Set(time.Unix(swVectorTS, 0))
	h, err := webhook.New(webhook.StandardWebhooks(swVectorSecret), webhook.Routes{}, new(pollRecorder), webhook.WithClock(clock))
	require.NoError(t, err)
	send := func(sig string) (int, webhook.Reply) {
		return deliver(t, h, "/", hdr("webhook-id", swVectorID, "webhook-timestamp", "1614265330", "webhook-signature", sig), []byte(swVectorBody))
	}

	code, reply := send(swVectorSig)
	assert.Equal(t, http.StatusAccepted, code, "%+v", reply)
	assert.Equal(t, "ignored", reply.Result)
	assert.Equal(t, `event "" is not a push`, reply.Reason)

	// A list: another scheme, a wrong v1, then the right one. The same
	// ID again is a duplicate... only once it did something: a non-push
	// claims nothing, so it is verified and ignored again.
	code, _ = send("v1a,bm9wZQ== v1,bm9wZQ== " + swVectorSig)
	assert.Equal(t, http.StatusAccepted, code)

	code, reply = send("v1,bm9wZQ==")
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Equal(t, "no v1 signature in webhook-signature matches", reply.Reason)
	code, _ = send("v2," + swVectorSig[3:])
	assert.Equal(t, http.StatusUnauthorized, code, "only v1 is HMAC-SHA256")

	// The tolerance, both ways.
	clock.Set(time.Unix(swVectorTS, 0).Add(webhook.DefaultTolerance))
	code, _ = send(swVectorSig)
	assert.Equal(t, http.StatusAccepted, code, "at the edge of the tolerance")
	clock.Advance(time.Second)
	code, reply = send(swVectorSig)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Equal(t, "webhook-timestamp is 5m1s old, more than the tolerance of 5m0s", reply.Reason)
	clock.Set(time.Unix(swVectorTS, 0).Add(-webhook.DefaultTolerance - time.Second))
	code, reply = send(swVectorSig)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Contains(t, reply.Reason, "in the future")
}

// providerCase is one provider's documented push, how to sign it, and
// what it must route.
type providerCase struct {
	name     string
	provider webhook.Provider
	target   string
	file     string
	header   func(body []byte) http.Header // a valid delivery's headers
	forged   http.Header                   // a wrong signature or token
	routes   webhook.Routes
	want     []webhook.KeyReply
	reason   string // pushes that route nowhere
}

const (
	testSecret   = "correct horse battery staple"
	testWhsec    = "whsec_c2VjcmV0LWtleS1mb3ItdGhlLXRlc3RzLTEyMzQ1Ng=="
	testHubToken = "dockerhub-token-0123456789"
	testAuth     = "Bearer registry-token-abcdef"
)

func providerCases(t testing.TB, now time.Time) []providerCase {
	ts := now.Unix()
	return []providerCase{{
		name: "github", provider: webhook.GitHub(testSecret), target: "/", file: "github-push.json",
		header: func(b []byte) http.Header {
			return hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958",
				"X-Hub-Signature-256", "sha256="+hexHMAC(testSecret, b), "Content-Type", "application/json")
		},
		forged: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+hexHMAC("guess", nil)),
		routes: webhook.Routes{{Repository: "Codertocat/Hello-World", Ref: "main"}: {"hello"}},
		want: []webhook.KeyReply{{Key: "hello", Repository: "Codertocat/Hello-World", Ref: "refs/heads/main",
			Revision: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Action: "poll"}},
	}, {
		name: "gitlab token", provider: webhook.GitLab(testSecret, ""), target: "/", file: "gitlab-push.json",
		header: func(b []byte) http.Header {
			return hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", testSecret,
				"X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e")
		},
		forged: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", testSecret+" "),
		routes: webhook.Routes{{Repository: "mike/diaspora", Ref: "refs/heads/master"}: {"diaspora"}},
		want: []webhook.KeyReply{{Key: "diaspora", Repository: "mike/diaspora", Ref: "refs/heads/master",
			Revision: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", Action: "poll"}},
	}, {
		name: "gitlab signed tag", provider: webhook.GitLab(testSecret, testWhsec), target: "/", file: "gitlab-tag-push.json",
		header: func(b []byte) http.Header {
			return hdr("X-Gitlab-Event", "Tag Push Hook", "X-Gitlab-Token", testSecret,
				"Idempotency-Key", "b7a6ec0c-0f4b-4f3e-9bd0-7b5d3d2f9c11", "webhook-id", "b7a6ec0c-0f4b-4f3e-9bd0-7b5d3d2f9c11",
				"webhook-timestamp", itoa(ts), "webhook-signature", standardSignature(t, testWhsec, "b7a6ec0c-0f4b-4f3e-9bd0-7b5d3d2f9c11", ts, b))
		},
		// The right token, but no signature: with a signing token the
		// Standard Webhooks headers are required.
		forged: hdr("X-Gitlab-Event", "Tag Push Hook", "X-Gitlab-Token", testSecret),
		routes: webhook.Routes{{Repository: "jsmith/example"}: {"example"}},
		want: []webhook.KeyReply{{Key: "example", Repository: "jsmith/example", Ref: "refs/tags/v1.0.0",
			Revision: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7", Action: "poll"}},
	}, {
		name: "gitea", provider: webhook.Gitea(testSecret), target: "/", file: "gitea-push.json",
		header: func(b []byte) http.Header {
			return hdr("X-Gitea-Event", "push", "X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473",
				"X-Gitea-Signature", hexHMAC(testSecret, b))
		},
		forged: hdr("X-Gitea-Event", "push", "X-Gitea-Signature", "sha256="+hexHMAC(testSecret, nil)),
		routes: webhook.Routes{{Repository: "gitea/webhooks", Ref: "develop"}: {"hooks-dev"}},
		want: []webhook.KeyReply{{Key: "hooks-dev", Repository: "gitea/webhooks", Ref: "refs/heads/develop",
			Revision: "bffeb74224043ba2feb48d137756c8a9331c449a", Action: "poll"}},
	}, {
		name: "forgejo", provider: webhook.Forgejo(testSecret), target: "/", file: "gitea-push.json",
		header: func(b []byte) http.Header {
			return hdr("X-Forgejo-Event", "push", "X-Forgejo-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473",
				"X-Forgejo-Signature", hexHMAC(testSecret, b))
		},
		// Signed as Gitea signs: Forgejo's handler reads Forgejo's header.
		forged: hdr("X-Forgejo-Event", "push", "X-Gitea-Signature", hexHMAC(testSecret, []byte("{}"))),
		routes: webhook.Routes{{Repository: "gitea/webhooks"}: {"hooks", "hooks-mirror"}},
		want: []webhook.KeyReply{
			{Key: "hooks", Repository: "gitea/webhooks", Ref: "refs/heads/develop", Revision: "bffeb74224043ba2feb48d137756c8a9331c449a", Action: "poll"},
			{Key: "hooks-mirror", Repository: "gitea/webhooks", Ref: "refs/heads/develop", Revision: "bffeb74224043ba2feb48d137756c8a9331c449a", Action: "poll"},
		},
	}, {
		name: "bitbucket", provider: webhook.Bitbucket(testSecret), target: "/", file: "bitbucket-push.json",
		header: func(b []byte) http.Header {
			return hdr("X-Event-Key", "repo:push", "X-Request-UUID", "afe2a4a5-4f0e-4b32-8d4d-2b1b6e7bb9e1",
				"X-Hook-UUID", "{4b2a8f46-7d3c-4f0b-9a2e-0f5b7c9d1e22}", "X-Hub-Signature", "sha256="+hexHMAC(testSecret, b))
		},
		// Bare hex, as Gitea sends it: Bitbucket's carries the prefix.
		forged: hdr("X-Event-Key", "repo:push", "X-Hub-Signature", hexHMAC(testSecret, nil)),
		routes: webhook.Routes{
			{Repository: "team_name/web", Ref: "main"}:   {"web"},
			{Repository: "team_name/web", Ref: "v2.0.0"}: {"web-release"},
		},
		want: []webhook.KeyReply{
			{Key: "web", Repository: "team_name/web", Ref: "refs/heads/main", Revision: "709d658dc5b6d6afcd46049c2f332ee3f515a67d", Action: "poll"},
			{Key: "web-release", Repository: "team_name/web", Ref: "refs/tags/v2.0.0", Revision: "709d658dc5b6d6afcd46049c2f332ee3f515a67d", Action: "poll"},
		},
		reason: "team_name/web refs/heads/old-feature deleted",
	}, {
		name: "standard webhooks", provider: webhook.StandardWebhooks(testWhsec), target: "/", file: "",
		header: func(b []byte) http.Header {
			return hdr("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "webhook-timestamp", itoa(ts),
				"webhook-signature", standardSignature(t, testWhsec, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts, b))
		},
		forged: hdr("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "webhook-timestamp", itoa(ts),
			"webhook-signature", standardSignature(t, swVectorSecret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts, []byte(standardPushBody))),
		routes: webhook.Routes{{Repository: "acme/web", Ref: "main"}: {"web"}},
		want: []webhook.KeyReply{{Key: "web", Repository: "acme/web", Ref: "refs/heads/main",
			Revision: "4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39", Action: "poll"}},
	}, {
		name: "docker hub path", provider: webhook.DockerHub(testHubToken), target: "/hooks/dockerhub/" + testHubToken, file: "dockerhub-push.json",
		header: func([]byte) http.Header { return http.Header{} },
		routes: webhook.Routes{{Repository: "svendowideit/testhook", Ref: "latest"}: {"testhook"}},
		want:   []webhook.KeyReply{{Key: "testhook", Repository: "svendowideit/testhook", Ref: "latest", Action: "poll"}},
	}, {
		name: "docker hub query", provider: webhook.DockerHub(testHubToken), target: "/hooks/dockerhub?token=" + testHubToken, file: "dockerhub-push.json",
		header: func([]byte) http.Header { return http.Header{} },
		routes: webhook.Routes{{Repository: "svendowideit/testhook"}: {"testhook"}},
		want:   []webhook.KeyReply{{Key: "testhook", Repository: "svendowideit/testhook", Ref: "latest", Action: "poll"}},
	}, {
		name: "registry", provider: webhook.Registry(testAuth), target: "/", file: "registry-events.json",
		header: func([]byte) http.Header {
			return hdr("Authorization", testAuth, "Content-Type", "application/vnd.docker.distribution.events.v1+json")
		},
		forged: hdr("Authorization", "Bearer registry-token-abcdeF"),
		routes: webhook.Routes{{Repository: "hello-world", Ref: "latest"}: {"hello"}, {Repository: "library/test"}: {"test"}},
		want: []webhook.KeyReply{{Key: "hello", Repository: "hello-world", Ref: "latest",
			Revision: "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf", Action: "poll"}},
	}}
}

// standardPushBody is the push this package documents for Standard
// Webhooks senders.
const standardPushBody = `{"type":"push","timestamp":"2026-11-29T12:00:00Z","data":{"repository":"acme/web","ref":"refs/heads/main","revision":"4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"}}`

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestProviders(t *testing.T) {
	now := time.Unix(1_780_000_000, 0)
	for _, tc := range providerCases(t, now) {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(standardPushBody)
			if tc.file != "" {
				body = payload(t, tc.file)
			}
			clock := new(deduptest.Clock)
			clock.Set(now)
			p := new(pollRecorder)
			h, err := webhook.New(tc.provider, tc.routes, p, webhook.WithClock(clock))
			require.NoError(t, err)
			mux := http.NewServeMux()
			mux.Handle("POST /hooks/dockerhub/{token}", h)
			mux.Handle("/", h)

			// Forged or unsigned: 401, nothing polled.
			unsigned := tc.header(body)
			for _, name := range []string{"X-Hub-Signature-256", "X-Gitlab-Token", "X-Gitea-Signature", "X-Forgejo-Signature",
				"X-Hub-Signature", "webhook-signature", "Authorization"} {
				unsigned.Del(name)
			}
			target := tc.target
			if tc.provider.Name() == "dockerhub" {
				target = "/hooks/dockerhub/" + testHubToken[:len(testHubToken)-1] + "X"
			}
			code, reply := deliver(t, mux, target, unsigned, body)
			assert.Equal(t, http.StatusUnauthorized, code, "unsigned: %+v", reply)
			assert.Equal(t, "rejected", reply.Result)
			if tc.forged != nil {
				code, reply = deliver(t, mux, tc.target, tc.forged, body)
				assert.Equal(t, http.StatusUnauthorized, code, "forged: %+v", reply)
			}
			// A valid signature over another body.
			if tc.name != "gitlab token" && tc.provider.Name() != "dockerhub" && tc.provider.Name() != "registry" { // the token-only senders sign no body
				code, _ = deliver(t, mux, tc.target, tc.header(body), append(body, ' '))
				assert.Equal(t, http.StatusUnauthorized, code, "signature of another body")
			}
			assert.Empty(t, p.polled(), "a rejected delivery polled")

			// Genuine: the routed keys poll.
			code, reply = deliver(t, mux, tc.target, tc.header(body), body)
			require.Equal(t, http.StatusAccepted, code, "%+v", reply)
			assert.Equal(t, "polled", reply.Result)
			assert.Equal(t, tc.want, reply.Keys)
			assert.Equal(t, tc.reason, reply.Reason)
			var want []string
			for _, k := range tc.want {
				want = append(want, k.Key)
			}
			assert.Equal(t, want, p.polled())

			// Again: a duplicate, except where there is no delivery ID.
			code, reply = deliver(t, mux, tc.target, tc.header(body), body)
			if tc.provider.Name() == "dockerhub" {
				assert.Equal(t, http.StatusAccepted, code)
				assert.Equal(t, "polled", reply.Result, "Docker Hub has no delivery ID")
				return
			}
			assert.Equal(t, http.StatusOK, code, "%+v", reply)
			assert.Equal(t, "duplicate", reply.Result)
			assert.Equal(t, want, p.polled(), "a duplicate polled")
		})
	}
}

// GitHub's default content type is a form whose payload field holds the
// JSON; the signature covers the form as sent.
func TestFormPayload(t *testing.T) {
	p := new(pollRecorder)
	h, err := webhook.New(webhook.GitHub(testSecret), webhook.Routes{{Repository: "Codertocat/Hello-World"}: {"hello"}}, p)
	require.NoError(t, err)
	form := []byte(url.Values{"payload": {string(payload(t, "github-push.json"))}}.Encode())
	header := githubHeader(form, "form-1")
	header.Set("Content-Type", "application/x-www-form-urlencoded")
	code, reply := deliver(t, h, "/", header, form)
	require.Equal(t, http.StatusAccepted, code, "%+v", reply)
	assert.Equal(t, []string{"hello"}, p.polled())

	bad := []byte("nopayload=1")
	header = githubHeader(bad, "form-2")
	header.Set("Content-Type", "application/x-www-form-urlencoded")
	code, reply = deliver(t, h, "/", header, bad)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Equal(t, "bad payload: a form without a payload field", reply.Reason)
}

func TestGitHubRejectsSHA1(t *testing.T) {
	body := payload(t, "github-push.json")
	h, err := webhook.New(webhook.GitHub(testSecret), webhook.Routes{{Repository: "Codertocat/Hello-World"}: {"hello"}}, new(pollRecorder))
	require.NoError(t, err)
	mac := sha1HMAC(testSecret, body)
	code, reply := deliver(t, h, "/", hdr("X-GitHub-Event", "push", "X-Hub-Signature", "sha1="+mac), body)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Equal(t, "signed with SHA-1 only (X-Hub-Signature); only X-Hub-Signature-256 is accepted", reply.Reason)
	// Nor does a SHA-1 in the SHA-256 header pass.
	code, reply = deliver(t, h, "/", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha1="+mac), body)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Equal(t, `X-Hub-Signature-256 does not start with "sha256="`, reply.Reason)
}

func TestNotPushes(t *testing.T) {
	routes := webhook.Routes{{Repository: "Codertocat/Hello-World"}: {"hello"}, {Repository: "Octocoders/Hello-World"}: {"octo"}}
	p := new(pollRecorder)
	h, err := webhook.New(webhook.GitHub(testSecret), routes, p)
	require.NoError(t, err)
	send := func(event, file string) (int, webhook.Reply) {
		body := payload(t, file)
		return deliver(t, h, "/", hdr("X-GitHub-Event", event, "X-Hub-Signature-256", "sha256="+hexHMAC(testSecret, body)), body)
	}

	code, reply := send("ping", "github-ping.json")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ping", reply.Reason)

	code, reply = send("push", "github-push-delete-tag.json")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, webhook.Reply{Provider: "github", Event: "push", Result: "ignored",
		Reason: "Codertocat/Hello-World refs/tags/simple-tag deleted"}, reply)

	code, reply = send("issues", "github-push.json")
	assert.Equal(t, http.StatusAccepted, code)
	assert.Equal(t, `event "issues" is not a push`, reply.Reason)
	assert.Empty(t, p.polled())

	// A GitLab branch deletion: after is all zeros.
	gl, err := webhook.New(webhook.GitLab(testSecret, ""), webhook.Routes{{Repository: "mike/diaspora"}: {"d"}}, p)
	require.NoError(t, err)
	code, reply = deliver(t, gl, "/", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", testSecret),
		[]byte(`{"object_kind":"push","ref":"refs/heads/gone","after":"0000000000000000000000000000000000000000","checkout_sha":null,"project":{"path_with_namespace":"mike/diaspora"}}`))
	assert.Equal(t, http.StatusOK, code, "%+v", reply)
	assert.Equal(t, "mike/diaspora refs/heads/gone deleted", reply.Reason)
	// A GitLab event that is not a push.
	code, reply = deliver(t, gl, "/", hdr("X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Token", testSecret), []byte(`{"object_kind":"merge_request"}`))
	assert.Equal(t, http.StatusAccepted, code)
	assert.Equal(t, `event "Merge Request Hook" is not a push`, reply.Reason)
	assert.Empty(t, p.polled())

	// A registry envelope of pulls and blob pushes only.
	reg, err := webhook.New(webhook.Registry(testAuth), webhook.Routes{{Repository: "library/test"}: {"t"}}, p)
	require.NoError(t, err)
	code, reply = deliver(t, reg, "/", hdr("Authorization", testAuth),
		[]byte(`{"events":[{"id":"1","action":"pull","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"library/test","digest":"sha256:ab"}}]}`))
	assert.Equal(t, http.StatusAccepted, code)
	assert.Equal(t, "no manifest push in the envelope", reply.Reason)
	assert.Empty(t, p.polled())
}

func TestRegistryEventIDs(t *testing.T) {
	p := new(pollRecorder)
	h, err := webhook.New(webhook.Registry(testAuth), webhook.Routes{{Repository: "app"}: {"app"}}, p)
	require.NoError(t, err)
	event := func(id, digest string) string {
		return `{"id":"` + id + `","action":"push","target":{"mediaType":"application/vnd.oci.image.index.v1+json","repository":"app","tag":"v1","digest":"` + digest + `"}}`
	}
	send := func(events ...string) (int, webhook.Reply) {
		body := `{"events":[`
		for i, e := range events {
			if i > 0 {
				body += ","
			}
			body += e
		}
		return deliver(t, h, "/", hdr("Authorization", testAuth), []byte(body+`]}`))
	}
	code, reply := send(event("e1", "sha256:01"))
	require.Equal(t, http.StatusAccepted, code, "%+v", reply)
	// The registry retries an envelope that holds e1 and a new e2: only e2
	// acts.
	code, reply = send(event("e1", "sha256:01"), event("e2", "sha256:02"))
	require.Equal(t, http.StatusAccepted, code, "%+v", reply)
	require.Len(t, reply.Keys, 1)
	assert.Equal(t, "sha256:02", reply.Keys[0].Revision)
	code, reply = send(event("e2", "sha256:02"))
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "duplicate", reply.Result)
	assert.Equal(t, []string{"app", "app"}, p.polled())
}

func TestDirect(t *testing.T) {
	d := new(deduptest.Deployer)
	m, err := dedup.New(d)
	require.NoError(t, err)
	t.Cleanup(func() { closeNow(m) })
	routes := webhook.Routes{{Repository: "acme/web", Ref: "main"}: {"web"}}
	h, err := webhook.NewDirect(webhook.StandardWebhooks(testWhsec), routes, m)
	require.NoError(t, err)
	send := func(id, rev string) (int, webhook.Reply) {
		ts := time.Now().Unix()
		body := []byte(`{"type":"push","data":{"repository":"acme/web","ref":"refs/heads/main","revision":"` + rev + `"}}`)
		return deliver(t, h, "/", hdr("webhook-id", id, "webhook-timestamp", itoa(ts),
			"webhook-signature", standardSignature(t, testWhsec, id, ts, body)), body)
	}

	code, reply := send("m1", "c1")
	require.Equal(t, http.StatusAccepted, code, "%+v", reply)
	assert.Equal(t, "triggered", reply.Result)
	assert.Equal(t, []webhook.KeyReply{{Key: "web", Repository: "acme/web", Ref: "refs/heads/main", Revision: "c1", Action: "started"}}, reply.Keys)
	call, err := d.Next(testContext(t))
	require.NoError(t, err)
	assert.Equal(t, dedup.Revision("c1"), call.Revision)

	_, reply = send("m2", "c2")
	assert.Equal(t, "queued", reply.Keys[0].Action)
	_, reply = send("m3", "c3")
	assert.Equal(t, "queued", reply.Keys[0].Action)
	assert.Equal(t, "c2", reply.Keys[0].Replaced)
	// Direct mode trusts order: a late delivery of c2 supersedes c3.
	_, reply = send("m4", "c2")
	assert.Equal(t, "c3", reply.Keys[0].Replaced, "the documented hazard of direct mode")

	// A revision the Manager refuses: 400, the body is at fault.
	code, reply = send("m5", `bad\u0001rev`) // JSON's escape: a control character
	assert.Equal(t, http.StatusBadRequest, code, "%+v", reply)
	assert.Equal(t, "rejected", reply.Result)
	require.Len(t, reply.Keys, 1)
	assert.Contains(t, reply.Keys[0].Error, "control character")

	call.Finish(nil)
	next, err := d.Next(testContext(t))
	require.NoError(t, err)
	assert.Equal(t, dedup.Revision("c2"), next.Revision)
	next.Finish(nil)

	// Notify only (another Manager, say): "notified".
	hn, err := webhook.NewDirect(webhook.StandardWebhooks(testWhsec), routes, notifyOnly{m})
	require.NoError(t, err)
	h = hn
	code, reply = send("m6", "c7")
	require.Equal(t, http.StatusAccepted, code)
	assert.Equal(t, "notified", reply.Keys[0].Action)
	c7, err := d.Next(testContext(t))
	require.NoError(t, err)
	assert.Equal(t, dedup.Revision("c7"), c7.Revision)
	c7.Finish(nil)

	// Closed: 503, and the delivery is forgotten so that a retry acts.
	closeNow(m)
	code, reply = send("m7", "c8")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "failed", reply.Result)
	code, _ = send("m7", "c8")
	assert.Equal(t, http.StatusServiceUnavailable, code, "the retry was taken for a duplicate")

	// Docker Hub names no digest: direct mode cannot act on it.
	dh, err := webhook.NewDirect(webhook.DockerHub(testHubToken), webhook.Routes{{Repository: "svendowideit/testhook"}: {"hook"}}, m)
	require.NoError(t, err)
	code, reply = deliver(t, dh, "/?token="+testHubToken, nil, payload(t, "dockerhub-push.json"))
	assert.Equal(t, http.StatusAccepted, code)
	assert.Equal(t, "no revision in the push of svendowideit/testhook latest (Docker Hub sends none); direct mode needs one", reply.Reason)
}

type notifyOnly struct{ n webhook.Notifier }

func (n notifyOnly) Notify(key string, rev dedup.Revision, opts ...dedup.TriggerOption) error {
	return n.n.Notify(key, rev, opts...)
}

// An annotated tag's push names the tag object in after and the commit in
// head_commit: the commit is what deploys.
func TestGitHubAnnotatedTag(t *testing.T) {
	m, err := dedup.New(new(deduptest.Deployer))
	require.NoError(t, err)
	t.Cleanup(func() { closeNow(m) })
	h, err := webhook.NewDirect(webhook.GitHub(testSecret), webhook.Routes{{Repository: "acme/web", Ref: "v1.0.0"}: {"web"}}, m)
	require.NoError(t, err)
	body := []byte(`{"ref":"refs/tags/v1.0.0","before":"0000000000000000000000000000000000000000",` +
		`"after":"5e6b1c2d3a4f5061728394a5b6c7d8e9f0a1b2c3","created":true,"deleted":false,` +
		`"head_commit":{"id":"d2b75aa7797ec26b088fa2dd527e9d2c052fcedd"},"repository":{"full_name":"acme/web"}}`)
	code, reply := deliver(t, h, "/", githubHeader(body, "tag-1"), body)
	require.Equal(t, http.StatusAccepted, code, "%+v", reply)
	require.Len(t, reply.Keys, 1)
	assert.Equal(t, "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd", reply.Keys[0].Revision)
	assert.Equal(t, "started", reply.Keys[0].Action)
}
