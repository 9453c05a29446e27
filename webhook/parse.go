package webhook

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// eventKind sorts deliveries.
type eventKind uint8

const (
	eventOther eventKind = iota // not a push: answered 202
	eventPing                   // answered 200
	eventPush
)

// parsed is what a delivery's body says.
type parsed struct {
	kind eventKind
	// event names the event when the body says it (Standard Webhooks'
	// type, GitLab's object_kind).
	event  string
	pushes []Push
	// ids are the registry's per-event IDs, one per push.
	ids []string
	// reason says why a delivery that is no push is none, where the
	// generic "event %q is not a push" would mislead.
	reason string
}

// badPayload is a body that does not parse: a 400.
type badPayload struct{ err error }

func (e *badPayload) Error() string { return "bad payload: " + e.err.Error() }
func (e *badPayload) Unwrap() error { return e.err }

func malformed(format string, args ...any) error {
	return &badPayload{fmt.Errorf(format, args...)}
}

// parse reads body, the payload of event (as the headers name it).
func (p *provider) parse(event string, body []byte) (parsed, error) {
	switch p.kind {
	case kindGitHub:
		switch event {
		case "push":
			return parseGitHubPush(p.kind, body)
		case "ping":
			return parsed{kind: eventPing}, nil
		}
		return parsed{}, nil
	case kindGitea, kindForgejo:
		if event == "push" {
			return parseGitHubPush(p.kind, body)
		}
		return parsed{}, nil
	case kindGitLab:
		return parseGitLab(event, body)
	case kindBitbucket:
		if event == "repo:push" {
			return parseBitbucket(body)
		}
		return parsed{}, nil
	case kindStandard:
		return parseStandard(body)
	case kindDockerHub:
		return parseDockerHub(body)
	case kindRegistry:
		return parseRegistry(body)
	}
	return parsed{}, errNoProvider
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return &badPayload{err}
	}
	return nil
}

// isZeroObject reports an all-zero object name: git's name for "no
// commit", the after of a deletion (SHA-1 or SHA-256).
func isZeroObject(s string) bool {
	return (len(s) == 40 || len(s) == 64) && strings.Trim(s, "0") == ""
}

type githubPush struct {
	Ref        string `json:"ref"`
	After      string `json:"after"`
	Deleted    bool   `json:"deleted"`
	HeadCommit *struct {
		ID string `json:"id"`
	} `json:"head_commit"`
	Repository *struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
}

// parseGitHubPush reads a push of GitHub's shape, which Gitea and Forgejo
// share.
func parseGitHubPush(k kind, body []byte) (parsed, error) {
	var in githubPush
	if err := decode(body, &in); err != nil {
		return parsed{}, err
	}
	if in.Repository == nil || in.Repository.FullName == "" {
		return parsed{}, malformed("push without repository.full_name")
	}
	if in.Ref == "" {
		return parsed{}, malformed("push without ref")
	}
	push := Push{Provider: k.String(), Repository: in.Repository.FullName, Ref: in.Ref}
	switch {
	case in.Deleted || isZeroObject(in.After):
		push.Deleted = true
	case in.After == "":
		return parsed{}, malformed("push without after")
	case strings.HasPrefix(in.Ref, "refs/tags/") && in.HeadCommit != nil && in.HeadCommit.ID != "":
		// An annotated tag's after is the tag object; head_commit is
		// the commit it points to, which is what deploys.
		push.Revision = dedup.Revision(in.HeadCommit.ID)
	default:
		push.Revision = dedup.Revision(in.After)
	}
	return parsed{kind: eventPush, pushes: []Push{push}}, nil
}

type gitlabPush struct {
	ObjectKind  string  `json:"object_kind"`
	Ref         string  `json:"ref"`
	After       string  `json:"after"`
	CheckoutSHA *string `json:"checkout_sha"`
	Project     *struct {
		PathWithNamespace string `json:"path_with_namespace"`
	} `json:"project"`
}

func parseGitLab(event string, body []byte) (parsed, error) {
	switch event {
	case "Push Hook", "Tag Push Hook", "System Hook":
	default:
		return parsed{}, nil
	}
	var in gitlabPush
	if err := decode(body, &in); err != nil {
		return parsed{}, err
	}
	if in.ObjectKind != "push" && in.ObjectKind != "tag_push" {
		return parsed{event: in.ObjectKind}, nil // a System Hook of another kind
	}
	if in.Project == nil || in.Project.PathWithNamespace == "" {
		return parsed{}, malformed("push without project.path_with_namespace")
	}
	if in.Ref == "" {
		return parsed{}, malformed("push without ref")
	}
	push := Push{Provider: kindGitLab.String(), Repository: in.Project.PathWithNamespace, Ref: in.Ref}
	switch {
	case isZeroObject(in.After):
		push.Deleted = true
	case in.CheckoutSHA != nil && *in.CheckoutSHA != "":
		// For a tag, the commit it points to; for a branch, after.
		push.Revision = dedup.Revision(*in.CheckoutSHA)
	case in.After == "":
		return parsed{}, malformed("push without after")
	default:
		push.Revision = dedup.Revision(in.After)
	}
	return parsed{kind: eventPush, event: in.ObjectKind, pushes: []Push{push}}, nil
}

type bitbucketRef struct {
	Type   string `json:"type"`
	Name   string `json:"name"`
	Target *struct {
		Hash string `json:"hash"`
	} `json:"target"`
}

type bitbucketPush struct {
	Push *struct {
		Changes []struct {
			New *bitbucketRef `json:"new"`
			Old *bitbucketRef `json:"old"`
		} `json:"changes"`
	} `json:"push"`
	Repository *struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
}

// parseBitbucket reads a repo:push: one Push per change.
func parseBitbucket(body []byte) (parsed, error) {
	var in bitbucketPush
	if err := decode(body, &in); err != nil {
		return parsed{}, err
	}
	if in.Repository == nil || in.Repository.FullName == "" {
		return parsed{}, malformed("push without repository.full_name")
	}
	if in.Push == nil {
		return parsed{}, malformed("repo:push without push")
	}
	out := parsed{kind: eventPush}
	for i, c := range in.Push.Changes {
		push := Push{Provider: kindBitbucket.String(), Repository: in.Repository.FullName}
		switch {
		case c.New != nil:
			if c.New.Name == "" || c.New.Target == nil || c.New.Target.Hash == "" {
				return parsed{}, malformed("change %d: new without name or target.hash", i)
			}
			push.Ref, push.Revision = bitbucketFullRef(c.New), dedup.Revision(c.New.Target.Hash)
		case c.Old != nil && c.Old.Name != "":
			push.Ref, push.Deleted = bitbucketFullRef(c.Old), true
		default:
			return parsed{}, malformed("change %d: neither new nor old", i)
		}
		out.pushes = append(out.pushes, push)
	}
	return out, nil
}

func bitbucketFullRef(r *bitbucketRef) string {
	switch r.Type {
	case "branch", "named_branch":
		return "refs/heads/" + r.Name
	case "tag", "annotated_tag":
		return "refs/tags/" + r.Name
	}
	return r.Name // a Mercurial bookmark, say: no git ref
}

type standardPush struct {
	Type string `json:"type"`
	Data *struct {
		Repository string `json:"repository"`
		Ref        string `json:"ref"`
		Revision   string `json:"revision"`
		Deleted    bool   `json:"deleted"`
	} `json:"data"`
}

func parseStandard(body []byte) (parsed, error) {
	var in standardPush
	if err := decode(body, &in); err != nil {
		return parsed{}, err
	}
	switch in.Type {
	case "push":
	case "ping":
		return parsed{kind: eventPing, event: in.Type}, nil
	default:
		return parsed{event: in.Type}, nil
	}
	if in.Data == nil || in.Data.Repository == "" {
		return parsed{}, malformed("push without data.repository")
	}
	push := Push{Provider: kindStandard.String(), Repository: in.Data.Repository, Ref: in.Data.Ref,
		Revision: dedup.Revision(in.Data.Revision), Deleted: in.Data.Deleted}
	if push.Deleted {
		push.Revision = ""
	}
	return parsed{kind: eventPush, event: in.Type, pushes: []Push{push}}, nil
}

type dockerHubPush struct {
	PushData *struct {
		Tag string `json:"tag"`
	} `json:"push_data"`
	Repository *struct {
		RepoName string `json:"repo_name"`
	} `json:"repository"`
}

func parseDockerHub(body []byte) (parsed, error) {
	var in dockerHubPush
	if err := decode(body, &in); err != nil {
		return parsed{}, err
	}
	if in.Repository == nil || in.Repository.RepoName == "" {
		return parsed{}, malformed("push without repository.repo_name")
	}
	push := Push{Provider: kindDockerHub.String(), Repository: in.Repository.RepoName}
	if in.PushData != nil {
		push.Ref = in.PushData.Tag
	}
	return parsed{kind: eventPush, event: "push", pushes: []Push{push}}, nil
}

// manifestTypes are the media types of what a tag or digest names: a
// registry event whose target is anything else (a layer, a config) is a
// blob and routes nowhere.
var manifestTypes = map[string]bool{
	"application/vnd.docker.distribution.manifest.v1+json":      true,
	"application/vnd.docker.distribution.manifest.v1+prettyjws": true,
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
	"application/vnd.oci.image.manifest.v1+json":                true,
	"application/vnd.oci.image.index.v1+json":                   true,
	"application/vnd.oci.artifact.manifest.v1+json":             true,
}

type registryEnvelope struct {
	Events *[]struct {
		ID     string `json:"id"`
		Action string `json:"action"`
		Target struct {
			MediaType  string `json:"mediaType"`
			Digest     string `json:"digest"`
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"target"`
	} `json:"events"`
}

// parseRegistry reads a notification envelope: each manifest push is a
// Push; pulls, deletions and blob pushes are skipped.
func parseRegistry(body []byte) (parsed, error) {
	var in registryEnvelope
	if err := decode(body, &in); err != nil {
		return parsed{}, err
	}
	if in.Events == nil {
		return parsed{}, malformed("envelope without events")
	}
	out := parsed{event: "push"}
	for i, e := range *in.Events {
		if e.Action != "push" || !manifestTypes[e.Target.MediaType] {
			continue
		}
		if e.Target.Repository == "" || e.Target.Digest == "" {
			return parsed{}, malformed("event %d: manifest push without target.repository or target.digest", i)
		}
		out.pushes = append(out.pushes, Push{Provider: kindRegistry.String(), Repository: e.Target.Repository,
			Ref: e.Target.Tag, Revision: dedup.Revision(e.Target.Digest)})
		out.ids = append(out.ids, e.ID)
	}
	if len(out.pushes) > 0 {
		out.kind = eventPush
	} else {
		out.reason = "no manifest push in the envelope"
	}
	return out, nil
}
