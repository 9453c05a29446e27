package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// A Provider verifies and parses the deliveries of one kind of sender. Make
// one with GitHub, GitLab, Gitea, Forgejo, Bitbucket, StandardWebhooks,
// DockerHub or Registry; New reports a bad secret. A Provider holds its
// secret but never prints it: its String and GoString name the provider
// only. It is safe for concurrent use.
type Provider struct {
	p *provider
}

// Name returns the provider's name as replies and logs spell it, such as
// "github" or "standard-webhooks".
func (p Provider) Name() string {
	if p.p == nil {
		return ""
	}
	return p.p.kind.String()
}

// String names the provider, without its secret.
func (p Provider) String() string { return "webhook.Provider(" + p.Name() + ")" }

// GoString is String, so that %#v does not print the secret either.
func (p Provider) GoString() string { return p.String() }

type kind uint8

const (
	kindGitHub kind = iota + 1
	kindGitLab
	kindGitea
	kindForgejo
	kindBitbucket
	kindStandard
	kindDockerHub
	kindRegistry
)

var kindNames = [...]string{"", "github", "gitlab", "gitea", "forgejo", "bitbucket", "standard-webhooks", "dockerhub", "registry"}

func (k kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "provider(" + strconv.Itoa(int(k)) + ")"
}

type provider struct {
	kind kind
	// key is the HMAC key (GitHub, Gitea, Forgejo, Bitbucket), the
	// token (GitLab, Docker Hub) or the Authorization value (registry).
	key []byte
	// signing is the Standard Webhooks key: the generic sender's, or
	// GitLab's signing token.
	signing []byte
	// err is what New reports: a secret that cannot be used. It never
	// holds the secret.
	err error
}

// MinDockerHubToken is the shortest token DockerHub accepts: the token in
// the URL is all that tells a Docker Hub delivery from anyone's request.
const MinDockerHubToken = 16

// GitHub verifies GitHub's deliveries: X-Hub-Signature-256, the hexadecimal
// HMAC-SHA256 of the body keyed with the webhook's secret. A delivery
// signed only with SHA-1 (X-Hub-Signature) is rejected. Push events
// (X-GitHub-Event: push) route; ping is answered 200; other events 202.
// The delivery ID is X-GitHub-Delivery, which a redelivery keeps.
func GitHub(secret string) Provider {
	return hmacProvider(kindGitHub, secret)
}

// Gitea verifies Gitea's deliveries: X-Gitea-Signature, the hexadecimal
// HMAC-SHA256 of the body. The event is X-Gitea-Event, the delivery ID
// X-Gitea-Delivery; the push payload is GitHub's shape.
func Gitea(secret string) Provider {
	return hmacProvider(kindGitea, secret)
}

// Forgejo verifies Forgejo's deliveries: X-Forgejo-Signature, the
// hexadecimal HMAC-SHA256 of the body. The event is X-Forgejo-Event, the
// delivery ID X-Forgejo-Delivery; the push payload is GitHub's shape.
func Forgejo(secret string) Provider {
	return hmacProvider(kindForgejo, secret)
}

// Bitbucket verifies Bitbucket Cloud's deliveries: X-Hub-Signature,
// "sha256=" and the hexadecimal HMAC-SHA256 of the body (a webhook without
// a secret is unsigned and cannot be used). repo:push (X-Event-Key)
// routes each change of the push; the delivery ID is X-Request-UUID.
func Bitbucket(secret string) Provider {
	return hmacProvider(kindBitbucket, secret)
}

func hmacProvider(k kind, secret string) Provider {
	p := &provider{kind: k, key: []byte(secret)}
	if secret == "" {
		p.err = fmt.Errorf("webhook: %s: empty secret: %w", k, dedup.ErrInvalid)
	}
	return Provider{p}
}

// GitLab verifies GitLab's deliveries. With a token, X-Gitlab-Token must
// equal it (compared in constant time: GitLab sends the token itself, not
// a signature, so use HTTPS). With a signing token ("whsec_" and base64, as
// GitLab shows it), the Standard Webhooks headers webhook-id,
// webhook-timestamp and webhook-signature must be present and valid, and
// the timestamp within the tolerance (WithTolerance). Give either or both;
// with both, both are checked. Push Hook and Tag Push Hook (and a System
// Hook whose object_kind is push or tag_push) route; the delivery ID is
// webhook-id, else Idempotency-Key, else X-Gitlab-Event-UUID.
func GitLab(token, signingToken string) Provider {
	p := &provider{kind: kindGitLab, key: []byte(token)}
	switch {
	case token == "" && signingToken == "":
		p.err = fmt.Errorf("webhook: gitlab: neither a token nor a signing token: %w", dedup.ErrInvalid)
	case signingToken != "":
		p.signing, p.err = standardKey(kindGitLab, signingToken)
	}
	return Provider{p}
}

// StandardWebhooks verifies a sender that follows the Standard Webhooks
// specification (standardwebhooks.com): secret is "whsec_" and the base64
// of the key (the prefix is optional); webhook-signature holds one or more
// space-separated "v1,<base64 HMAC-SHA256>" of "id.timestamp.body", one of
// which must match; webhook-timestamp (Unix seconds) must be within the
// tolerance; webhook-id is the delivery ID. The body must be
//
//	{"type": "push", "data": {"repository": "acme/web", "ref": "refs/heads/main",
//	 "revision": "<commit or digest>", "deleted": false}}
//
// (other fields are ignored; other types are answered 202, "ping" 200).
func StandardWebhooks(secret string) Provider {
	p := &provider{kind: kindStandard}
	p.signing, p.err = standardKey(kindStandard, secret)
	return Provider{p}
}

// standardKey decodes a Standard Webhooks secret; its errors never quote
// it.
func standardKey(k kind, secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	switch {
	case err != nil:
		return nil, fmt.Errorf("webhook: %s: the signing secret is not \"whsec_\" and base64: %w", k, dedup.ErrInvalid)
	case len(key) == 0:
		return nil, fmt.Errorf("webhook: %s: empty signing secret: %w", k, dedup.ErrInvalid)
	}
	return key, nil
}

// DockerHub accepts Docker Hub's image push notifications. Docker Hub
// signs nothing, so the only proof is a secret token in the URL you give
// Docker Hub: the path value "token" (mount the Handler on a pattern such
// as "POST /hooks/dockerhub/{token}") or else the query parameter "token".
// It is compared in constant time and must be at least MinDockerHubToken
// bytes. The payload carries no digest: Push.Revision is empty, so only
// the default mode (a poll) can act on it. There is no delivery ID.
func DockerHub(token string) Provider {
	p := &provider{kind: kindDockerHub, key: []byte(token)}
	if len(token) < MinDockerHubToken {
		p.err = fmt.Errorf("webhook: dockerhub: token shorter than %d bytes: %w", MinDockerHubToken, dedup.ErrInvalid)
	}
	return Provider{p}
}

// Registry accepts the notifications of a CNCF Distribution registry
// (registry:2 and its successors). The registry sends the headers
// configured for its endpoint; authorization is the whole Authorization
// value configured there (such as "Bearer 3f9c…"), compared in constant
// time. Each event of the envelope whose action is push and whose target
// is a manifest or an index (not a blob) is a Push of target.repository,
// target.tag and target.digest; each event's id is its delivery ID.
func Registry(authorization string) Provider {
	p := &provider{kind: kindRegistry, key: []byte(authorization)}
	if authorization == "" {
		p.err = fmt.Errorf("webhook: registry: empty authorization: %w", dedup.ErrInvalid)
	}
	return Provider{p}
}

// unauthorized is the error of a delivery that failed verification: the
// handler answers 401 to any.
func unauthorized(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}

// verify checks r's proof of origin. Its errors name what is missing or
// wrong, never a secret.
func (p *provider) verify(r *http.Request, body []byte, now time.Time, tolerance time.Duration) error {
	h := r.Header
	switch p.kind {
	case kindGitHub:
		sig := h.Get("X-Hub-Signature-256")
		if sig == "" && h.Get("X-Hub-Signature") != "" {
			return unauthorized("signed with SHA-1 only (X-Hub-Signature); only X-Hub-Signature-256 is accepted")
		}
		return verifyHex(p.key, body, "X-Hub-Signature-256", sig, "sha256=")
	case kindGitea:
		return verifyHex(p.key, body, "X-Gitea-Signature", h.Get("X-Gitea-Signature"), "")
	case kindForgejo:
		return verifyHex(p.key, body, "X-Forgejo-Signature", h.Get("X-Forgejo-Signature"), "")
	case kindBitbucket:
		return verifyHex(p.key, body, "X-Hub-Signature", h.Get("X-Hub-Signature"), "sha256=")
	case kindGitLab:
		if len(p.key) > 0 {
			if err := verifyToken(p.key, "X-Gitlab-Token", h.Get("X-Gitlab-Token")); err != nil {
				return err
			}
		}
		if p.signing != nil {
			return verifyStandard(p.signing, h, body, now, tolerance)
		}
		return nil
	case kindStandard:
		return verifyStandard(p.signing, h, body, now, tolerance)
	case kindDockerHub:
		tok := r.PathValue("token")
		if tok == "" {
			tok = r.URL.Query().Get("token")
		}
		return verifyToken(p.key, "token in the URL", tok)
	case kindRegistry:
		return verifyToken(p.key, "Authorization", h.Get("Authorization"))
	}
	return unauthorized("unknown provider")
}

// verifyHex checks header value sig: prefix and the hexadecimal
// HMAC-SHA256 of body keyed with key.
func verifyHex(key, body []byte, header, sig, prefix string) error {
	if sig == "" {
		return unauthorized("missing %s", header)
	}
	hexSig, ok := strings.CutPrefix(sig, prefix)
	if !ok {
		return unauthorized("%s does not start with %q", header, prefix)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return unauthorized("malformed %s", header)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return unauthorized("%s does not match the body", header)
	}
	return nil
}

// verifyToken compares a token in constant time, also in its length: both
// sides are hashed first.
func verifyToken(want []byte, what, got string) error {
	if got == "" {
		return unauthorized("missing %s", what)
	}
	w, g := sha256.Sum256(want), sha256.Sum256([]byte(got))
	if subtle.ConstantTimeCompare(w[:], g[:]) != 1 {
		return unauthorized("wrong %s", what)
	}
	return nil
}

// verifyStandard checks the Standard Webhooks headers.
func verifyStandard(key []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	for _, hv := range [...]struct{ name, v string }{{"webhook-id", id}, {"webhook-timestamp", ts}, {"webhook-signature", sigs}} {
		if hv.v == "" {
			return unauthorized("missing %s", hv.name)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return unauthorized("malformed webhook-timestamp")
	}
	// Compare in seconds: a time.Time from an extreme sec overflows.
	switch age := now.Unix() - sec; {
	case age > int64(tolerance/time.Second):
		return unauthorized("webhook-timestamp is %s old, more than the tolerance of %s", time.Duration(min(age, 1<<32))*time.Second, tolerance)
	case -age > int64(tolerance/time.Second):
		return unauthorized("webhook-timestamp is more than the tolerance of %s in the future", tolerance)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	want := mac.Sum(nil)
	for _, f := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(f, ",")
		if !ok || version != "v1" {
			continue // another scheme, such as v1a (ed25519)
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return unauthorized("no v1 signature in webhook-signature matches")
}

// event returns the event name a delivery's headers give ("" where the
// body says it, or for a sender with a single event).
func (p *provider) event(h http.Header) string {
	switch p.kind {
	case kindGitHub:
		return h.Get("X-GitHub-Event")
	case kindGitLab:
		return h.Get("X-Gitlab-Event")
	case kindGitea:
		return h.Get("X-Gitea-Event")
	case kindForgejo:
		return h.Get("X-Forgejo-Event")
	case kindBitbucket:
		return h.Get("X-Event-Key")
	}
	return ""
}

// delivery returns the delivery ID a delivery's headers give, "" if none.
func (p *provider) delivery(h http.Header) string {
	switch p.kind {
	case kindGitHub:
		return h.Get("X-GitHub-Delivery")
	case kindGitLab:
		for _, name := range [...]string{"webhook-id", "Idempotency-Key", "X-Gitlab-Event-UUID"} {
			if v := h.Get(name); v != "" {
				return v
			}
		}
	case kindGitea:
		return h.Get("X-Gitea-Delivery")
	case kindForgejo:
		return h.Get("X-Forgejo-Delivery")
	case kindBitbucket:
		return h.Get("X-Request-UUID")
	case kindStandard:
		return h.Get("webhook-id")
	}
	return ""
}

var errNoProvider = errors.New("webhook: no provider (use GitHub, GitLab, ...)")
