package webhook

import (
	"slices"
	"strings"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// Push is one pushed ref or image tag, as a verified delivery describes it.
type Push struct {
	// Provider names the provider that sent it, such as "github".
	Provider string
	// Repository is the repository as the provider names it: GitHub's,
	// Gitea's and Bitbucket's full_name ("acme/web"), GitLab's
	// path_with_namespace ("acme/infra/web"), Docker Hub's repo_name
	// ("acme/web", "library/nginx"), a registry's target.repository. It is
	// never empty.
	Repository string
	// Ref is the full ref of a git push ("refs/heads/main",
	// "refs/tags/v1.2.0") or the tag of an image push ("latest"); it is
	// empty for an image pushed by digest only.
	Ref string
	// Revision is what the push made Ref point to: a commit's object name
	// or an image digest ("sha256:…"). It is empty for a deletion and for
	// Docker Hub, which sends no digest. It comes from the body: treat it
	// as untrusted text (it is checked only by dedup.ValidRevision in
	// direct mode).
	Revision dedup.Revision
	// Deleted reports a branch or tag deletion, which triggers nothing.
	Deleted bool
}

// Branch returns the branch name of a push to refs/heads/…, else "".
func (p Push) Branch() string {
	name, ok := strings.CutPrefix(p.Ref, "refs/heads/")
	if !ok {
		return ""
	}
	return name
}

// A Router names the keys a push concerns. A Handler calls Route from the
// goroutine serving the request, possibly from several at once: it must be
// safe for concurrent use and should not block. No key (nil) means the
// push is not routed: the delivery is answered 202 with that reason.
type Router interface {
	Route(p Push) []string
}

// RouterFunc is a function that is a Router.
type RouterFunc func(p Push) []string

// Route returns f(p).
func (f RouterFunc) Route(p Push) []string { return f(p) }

// Source is a repository and a ref, the key of Routes.
type Source struct {
	// Repository is compared exactly with Push.Repository.
	Repository string
	// Ref matches a push to it as a full ref ("refs/heads/main"), a short
	// branch or tag name ("main", "v1.2.0") or an image tag ("latest").
	// An empty Ref matches every ref of the repository, and image pushes
	// by digest.
	Ref string
}

// Routes is a Router from a map: a push routes to the keys of every Source
// that matches it (its exact ref, its short branch or tag name, and the
// empty Ref), each key once. Do not change the map while a Handler uses
// it.
//
//	webhook.Routes{
//		{Repository: "acme/web", Ref: "main"}:       {"web-staging"},
//		{Repository: "acme/web", Ref: "production"}: {"web-prod"},
//		{Repository: "library/nginx"}:               {"proxy"},
//	}
type Routes map[Source][]string

// Route returns the keys of the Sources that match p.
func (r Routes) Route(p Push) []string {
	var keys []string
	add := func(ref string) {
		for _, k := range r[Source{Repository: p.Repository, Ref: ref}] {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	add(p.Ref)
	if short := shortRef(p.Ref); short != p.Ref {
		add(short)
	}
	if p.Ref != "" {
		add("")
	}
	return keys
}

// shortRef strips refs/heads/ or refs/tags/ from ref.
func shortRef(ref string) string {
	if s, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return s
	}
	if s, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		return s
	}
	return ref
}
