package poller

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// ErrUnknownRef is wrapped by the error of a GitSource whose remote has no
// such branch or tag.
var ErrUnknownRef = errors.New("poller: unknown ref")

// GitSource reports the commit at the tip of a branch or tag of a git
// remote; an annotated tag reports the commit it points to, not the tag
// object. Make one with Git; set its fields before the first poll and do not
// change them afterwards.
//
// An http:// or https:// remote is asked in process, with git's smart HTTP
// protocol: version 2 ls-refs for just the refs needed (two requests on a
// kept-alive connection, a few lines of answer however many refs the
// repository has), or the version 0 ref advertisement from servers without
// version 2. Credentials come from the URL's user info (sent as basic
// authentication), Header (a token: "Authorization: Bearer …") or Client;
// credentials (a password, or a name alone, often a token) are redacted in
// every error.
//
// Any other remote (ssh://, git://, file://, scp-like user@host:path, a
// local path) runs `git ls-remote --heads --tags` directly, never through a
// shell, with GIT_TERMINAL_PROMPT=0 and (on Unix) in a session of its own
// with no controlling terminal, so that a remote asking for credentials
// fails instead of waiting for someone to type them. When the context is
// done the whole process group is killed. Credentials come from git's own
// configuration (credential helpers, SSH keys, Env).
//
// Watched by a Poller, all the keys on one remote share its requests (see
// "Many keys on one remote" in the package documentation). A GitSource is
// safe for concurrent use.
type GitSource struct {
	// Remote is a URL (https://, http://, ssh://, git://, file://,
	// scp-like user@host:path) or a local path. It must not start with
	// "-".
	Remote string
	// Ref is a branch or tag name ("main", "v1.2.0"), a full ref
	// ("refs/heads/main", "refs/tags/v1.2.0") or "HEAD". A short name is
	// looked up as a branch first, then as a tag. It must not start with
	// "-" and must be a valid ref name.
	Ref string
	// Header is sent with every HTTP request, e.g. Authorization; an
	// Authorization header takes precedence over the URL's user info.
	Header http.Header
	// Client sends the HTTP requests; nil means the client of the Poller
	// (WithHTTPClient), else one of this package with keep-alive
	// connections. The request context carries the poll's cancellation.
	Client *http.Client
	// Git is the git executable; empty means "git", looked up in PATH.
	Git string
	// Env is added to the process environment of git, e.g.
	// "GIT_SSH_COMMAND=ssh -i /keys/deploy". GIT_TERMINAL_PROMPT is always
	// set to 0.
	Env []string
}

// Git returns a GitSource for ref of remote. Watch rejects a remote or ref
// that starts with "-" or is malformed, with an error wrapping
// dedup.ErrInvalid; so does every call of Latest.
func Git(remote, ref string) *GitSource {
	return &GitSource{Remote: remote, Ref: ref}
}

// Limits on what git may write: ls-remote with exact patterns prints a few
// lines, and an error message is useful in its first kilobytes.
const (
	maxGitOutput = 1 << 20
	maxGitStderr = 4 << 10
	// gitWaitDelay bounds the wait for git's output pipes to close after
	// it was killed, in case a process outside its group holds them.
	gitWaitDelay = 2 * time.Second
)

// Latest returns the full hexadecimal object name of the commit that Ref
// points to. It blocks until the remote answered or ctx is done, in which
// case the request is abandoned (git is killed) and an error wrapping
// ctx.Err() is returned. An unknown ref is an error wrapping ErrUnknownRef;
// a missing git executable one wrapping exec.ErrNotFound or
// fs.ErrNotExist; a failure of git, such as an unreachable remote, one that
// carries git's exit status and the start of its error output; an HTTP
// status other than 200 one that carries it.
func (g *GitSource) Latest(ctx context.Context) (dedup.Revision, error) {
	if err := g.check(); err != nil {
		return "", err
	}
	found, err := g.list(ctx, nil, g.wants())
	if err != nil {
		return "", err
	}
	return g.resolve(ctx, found)
}

// isHTTP reports whether remote is asked in process.
func isHTTP(remote string) bool {
	scheme, _, ok := strings.Cut(remote, "://")
	return ok && (strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https"))
}

func (g *GitSource) remoteID() string {
	var b strings.Builder
	b.WriteString(g.Remote)
	b.WriteByte(0)
	if isHTTP(g.Remote) {
		fmt.Fprintf(&b, "%p\x00", g.Client)
		keys := slices.Sorted(maps.Keys(g.Header))
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%q\x00", k, g.Header[k])
		}
	} else {
		b.WriteString(g.Git)
		for _, e := range g.Env {
			b.WriteByte(0)
			b.WriteString(e)
		}
	}
	return b.String()
}

func (g *GitSource) wants() []string { return gitCandidates(g.Ref) }

func (g *GitSource) list(ctx context.Context, client *http.Client, refs []string) (map[string]string, error) {
	if isHTTP(g.Remote) {
		if g.Client != nil {
			client = g.Client
		} else if client == nil {
			client = defaultClient
		}
		h, err := newHTTPRemote(g.Remote, g.Header, client)
		if err != nil {
			return nil, fmt.Errorf("%w: git remote: %v", dedup.ErrInvalid, err)
		}
		found, err := h.lsRefs(ctx, refs)
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("git ls-refs %s: %w", h.what, ctx.Err())
		}
		return found, err
	}
	return g.lsRemote(ctx, refs)
}

func (g *GitSource) resolve(_ context.Context, found map[string]string) (dedup.Revision, error) {
	for _, r := range g.wants() {
		obj, ok := found[r]
		if !ok {
			continue
		}
		if !isObjectName(obj) {
			return "", fmt.Errorf("unexpected object name %q for %s", obj, r)
		}
		return dedup.Revision(obj), nil
	}
	return "", fmt.Errorf("%s %s: %w", redactRemote(g.Remote), g.Ref, ErrUnknownRef)
}

// lsRemote runs git ls-remote for refs, limited to branches and tags when
// they all are, and returns what it found, peeled.
func (g *GitSource) lsRemote(ctx context.Context, refs []string) (map[string]string, error) {
	heads, tags, other := false, false, false
	for _, r := range refs {
		switch {
		case strings.HasPrefix(r, "refs/heads/"):
			heads = true
		case strings.HasPrefix(r, "refs/tags/"):
			tags = true
		default:
			other = true
		}
	}
	args := make([]string, 0, 5+2*len(refs))
	args = append(args, "ls-remote")
	if !other {
		// Without these, git lists every ref of the remote and filters
		// them itself.
		if heads {
			args = append(args, "--heads")
		}
		if tags {
			args = append(args, "--tags")
		}
	}
	args = append(args, "--", g.Remote)
	for _, r := range refs {
		args = append(args, r)
		if r != "HEAD" && !strings.HasPrefix(r, "refs/heads/") {
			args = append(args, r+peeled) // the commit an annotated tag points to
		}
	}
	stdout := &boundedBuffer{max: maxGitOutput}
	if err := g.run(ctx, stdout, nil, args...); err != nil {
		return nil, err
	}
	if stdout.truncated {
		return nil, fmt.Errorf("git ls-remote %s: output longer than %d bytes", redactRemote(g.Remote), maxGitOutput)
	}
	return parseLsRemote(stdout.Bytes(), refs), nil
}

const peeled = "^{}"

// gitCandidates returns the full refs that ref may name, in order of
// preference.
func gitCandidates(ref string) []string {
	if ref == "HEAD" || strings.HasPrefix(ref, "refs/") {
		return []string{ref}
	}
	return []string{"refs/heads/" + ref, "refs/tags/" + ref}
}

// run runs git with args and env added to its environment, writing its
// output to stdout. The error names the git command and the remote, with
// git's exit status and the start of its error output.
func (g *GitSource) run(ctx context.Context, stdout io.Writer, env []string, args ...string) error {
	name := g.Git
	if name == "" {
		name = "git"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(append(os.Environ(), g.Env...), env...), "GIT_TERMINAL_PROMPT=0") // last wins
	stderr := &boundedBuffer{max: maxGitStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = gitWaitDelay
	detach(cmd)

	err := cmd.Run()
	sub := args[0]
	if sub == "-C" && len(args) > 2 {
		sub = args[2]
	}
	what := "git " + sub + " " + redactRemote(g.Remote)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", what, ctx.Err())
	case errors.Is(err, exec.ErrNotFound) || (err != nil && cmd.ProcessState == nil && errors.Is(err, fs.ErrNotExist)):
		return fmt.Errorf("%s: git executable not found: %w", what, err)
	case err != nil:
		msg := oneLine(stderr.String())
		if msg == "" {
			return fmt.Errorf("%s: %w", what, err)
		}
		return fmt.Errorf("%s: %w: %s", what, err, msg)
	}
	return nil
}

// parseLsRemote returns the objects of refs that out lists, preferring the
// peeled line of an annotated tag. Lines are "<object name>\t<ref>".
func parseLsRemote(out []byte, refs []string) map[string]string {
	want := make(map[string]bool, len(refs))
	for _, r := range refs {
		want[r] = true
	}
	found := make(map[string]string, len(refs))
	peel := make(map[string]string)
	for line := range bytes.Lines(out) {
		obj, name, ok := strings.Cut(strings.TrimRight(string(line), "\r\n"), "\t")
		if !ok {
			continue
		}
		if base, ok := strings.CutSuffix(name, peeled); ok && want[base] {
			peel[base] = obj
		} else if want[name] {
			found[name] = obj
		}
	}
	for name, obj := range peel {
		found[name] = obj
	}
	return found
}

// isObjectName reports whether s is a full SHA-1 or SHA-256 object name.
func isObjectName(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (g *GitSource) check() error {
	switch {
	case g.Remote == "":
		return fmt.Errorf("%w: empty git remote", dedup.ErrInvalid)
	case strings.HasPrefix(g.Remote, "-"):
		return fmt.Errorf("%w: git remote %q starts with \"-\"", dedup.ErrInvalid, g.Remote)
	case hasControl(g.Remote):
		return fmt.Errorf("%w: git remote has a control character", dedup.ErrInvalid)
	}
	if isHTTP(g.Remote) {
		u, err := url.Parse(g.Remote)
		if err != nil {
			return fmt.Errorf("%w: git remote: %v", dedup.ErrInvalid, err)
		}
		if u.Host == "" {
			return fmt.Errorf("%w: git remote %q has no host", dedup.ErrInvalid, redactURL(u))
		}
	}
	return checkRef(g.Ref)
}

// checkRef rejects what git would not accept as a ref name, and anything
// that ls-remote would read as an option or a pattern.
func checkRef(ref string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: git ref %q %s", dedup.ErrInvalid, ref, why)
	}
	switch {
	case ref == "":
		return fmt.Errorf("%w: empty git ref", dedup.ErrInvalid)
	case strings.HasPrefix(ref, "-"):
		return bad(`starts with "-"`)
	case hasControl(ref):
		return fmt.Errorf("%w: git ref has a control character", dedup.ErrInvalid)
	case strings.ContainsAny(ref, " ~^:?*[\\"):
		return bad(`holds one of " ~^:?*[\"`)
	case strings.Contains(ref, "..") || strings.Contains(ref, "@{") || strings.Contains(ref, "//"):
		return bad(`holds "..", "@{" or "//"`)
	case strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/") || strings.HasSuffix(ref, ".") || strings.HasSuffix(ref, ".lock"):
		return bad(`starts with "/" or ends with "/", "." or ".lock"`)
	case ref == "@":
		return bad("is not a ref name")
	}
	for part := range strings.SplitSeq(ref, "/") {
		if strings.HasPrefix(part, ".") {
			return bad(`has a component starting with "."`)
		}
	}
	return nil
}

// oneLine joins the non-blank lines of git's error output with "; ", so
// that an error stays one line in logs.
func oneLine(s string) string {
	var parts []string
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, "; ")
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// redactRemote hides the credentials of a remote URL (see redactURL), so
// that error messages and logs do not leak them.
func redactRemote(remote string) string {
	u, err := url.Parse(remote)
	if err != nil {
		return remote
	}
	return redactURL(u)
}

// basicAuth is the Authorization a request to a remote with user info
// carries (the in-process poll and git fetch alike): Basic with its name
// and password, unless header sets Authorization itself; "" without user
// info.
func basicAuth(user *url.Userinfo, header http.Header) string {
	if user == nil || header.Get("Authorization") != "" {
		return ""
	}
	pw, _ := user.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user.Username()+":"+pw))
}

// boundedBuffer keeps the first max bytes written to it and drops the rest,
// still reporting every write as complete so that the writer does not fail.
type boundedBuffer struct {
	bytes.Buffer
	max       int
	truncated bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.truncated = true
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

var _ remoteSource = (*GitSource)(nil)
