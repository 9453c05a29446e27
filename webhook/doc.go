// Package webhook receives push notifications from git hosts and image
// registries, verifies them, and makes the keys they concern poll now. A
// delivery that fails verification, or whose body is over the limit or
// malformed, does nothing; one that passes makes each routed key poll (or,
// in direct mode, triggers the pushed revision), and a delivery ID seen
// recently does nothing again.
//
// Mount one Handler per sender, each with its own secret:
//
//	routes := webhook.Routes{{Repository: "acme/web", Ref: "main"}: {"web"}}
//	gh, err := webhook.New(webhook.GitHub(os.Getenv("GITHUB_WEBHOOK_SECRET")), routes, p) // p is a *poller.Poller
//	if err != nil {
//		return err
//	}
//	mux.Handle("POST /hooks/github", gh)
//
// # Providers
//
//   - GitHub: X-Hub-Signature-256 (HMAC-SHA256); SHA-1-only deliveries are
//     rejected.
//   - GitLab: X-Gitlab-Token (constant-time), and with a signing token the
//     Standard Webhooks headers.
//   - Gitea and Forgejo: X-Gitea-Signature, X-Forgejo-Signature (HMAC-SHA256).
//   - Bitbucket Cloud: X-Hub-Signature "sha256=…".
//   - Any Standard Webhooks sender: webhook-signature over id, timestamp and
//     body, the timestamp within a tolerance.
//   - Docker Hub, which signs nothing: a secret token in the URL.
//   - A Distribution registry's notifications: a configured Authorization
//     header.
//
// Every comparison with a secret takes constant time; no error, reply or
// log line holds a secret, a signature or a token. A body sent as a form
// (application/x-www-form-urlencoded, GitHub's default content type) is
// read from its payload field after the signature over the form is checked.
//
// # Poll, not trust
//
// By default a push is a hint: the Handler calls PollNow on the routed keys
// of a poller (*poller.Poller), and the poll reads the revision from the
// source. So a late, reordered or replayed delivery cannot roll a key back,
// and a lost one only delays the deploy to the next regular poll. NewDirect
// instead triggers the revision the delivery names (the commit after the
// push, the image digest) on a Manager, for users without a poller; it
// trusts delivery order, which providers do not promise.
//
// # Answers
//
// 401 for a missing or wrong signature, 413 for a body over the limit (read
// through http.MaxBytesReader, never further), 400 for a malformed body,
// 202 with a reason for an event that is not a push or a push routed to no
// key, 200 for a ping, a branch deletion or a duplicate delivery, 202 when
// keys were polled or triggered. Every answer is a JSON Reply. The Handler
// starts no goroutine.
//
// Why not a library: go-playground/webhooks reads bodies without a cap and
// does not check Bitbucket's HMAC; go-github's ValidatePayload falls back to
// SHA-1 and is a large dependency.
package webhook
