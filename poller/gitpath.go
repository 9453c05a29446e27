package poller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// ErrUnknownPath is wrapped by the error of a GitPathSource whose path is
// not a directory at the ref's commit.
var ErrUnknownPath = errors.New("poller: no such directory")

// GitPathSource reports the tree object of a directory at the tip of a
// branch or tag: the revision changes when a commit changes something under
// the directory, and a commit that touches only other directories leaves it
// as it was. Several stacks in one repository each watch their own
// directory, and a commit to one redeploys only that one.
//
// A poll asks the remote for the ref's commit as a GitSource does (cheaply,
// and shared with every key on the remote). Only when the commit is new to
// it, the source fetches the commit's trees, without file contents (a
// shallow, blob-less fetch by the git executable into CacheDir), and reads
// the directory's tree object. The remote must allow fetching objects by
// name, as protocol version 2 servers do; from a server that speaks only
// version 0, Archive needs uploadpack.allowAnySHA1InWant (or the host's
// equivalent).
//
// A Deployer materializes exactly the reported tree with Archive (a tar
// stream of the tree's files, fetched on demand), or with git itself:
//
//	git -C $CACHE archive --format=tar $DEDUP_REVISION | tar -x -C /srv/stack
//
// Make one with GitPath; set its fields before the first poll and do not
// change them afterwards. A GitPathSource is safe for concurrent use, also
// by several Pollers and processes sharing a CacheDir.
type GitPathSource struct {
	// GitSource is the remote, the ref and how to reach them.
	GitSource
	// Path is the directory, relative to the root of the repository, with
	// "/" as separator ("stacks/web"); "" or "." is the whole tree.
	Path string
	// CacheDir is the bare repository that holds the fetched trees; it is
	// made if missing. Empty means a directory named after the remote in
	// the user's cache directory (os.UserCacheDir, else os.TempDir).
	CacheDir string

	mu    sync.Mutex
	trees map[string]dedup.Revision // commit -> tree of Path, for recent commits
}

// GitPath returns a GitPathSource for the directory path at ref of remote.
// Watch rejects a malformed remote, ref or path (absolute, with ".." or a
// control character) with an error wrapping dedup.ErrInvalid; so does every
// call of Latest.
func GitPath(remote, ref, path string) *GitPathSource {
	return &GitPathSource{GitSource: GitSource{Remote: remote, Ref: ref}, Path: path}
}

// Latest returns the object name of the tree of Path at the commit that
// Ref points to. It blocks until the remote answered and, for a commit not
// seen before, the trees were fetched, or until ctx is done. Errors are
// those of GitSource.Latest, one wrapping ErrUnknownPath when Path is not a
// directory at the commit, or one of git fetch.
func (g *GitPathSource) Latest(ctx context.Context) (dedup.Revision, error) {
	if err := g.check(); err != nil {
		return "", err
	}
	found, err := g.list(ctx, nil, g.wants())
	if err != nil {
		return "", err
	}
	return g.resolve(ctx, found)
}

func (g *GitPathSource) check() error {
	if err := g.GitSource.check(); err != nil {
		return err
	}
	p := g.Path
	switch {
	case hasControl(p):
		return fmt.Errorf("%w: git path has a control character", dedup.ErrInvalid)
	case strings.HasPrefix(p, "/") || strings.HasPrefix(p, "-"):
		return fmt.Errorf("%w: git path %q starts with %q", dedup.ErrInvalid, p, p[:1])
	case p != "" && path.Clean(p) != strings.TrimSuffix(p, "/"):
		return fmt.Errorf("%w: git path %q is not clean (%q)", dedup.ErrInvalid, p, path.Clean(p))
	case p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("%w: git path %q is outside the repository", dedup.ErrInvalid, p)
	}
	return nil
}

func (g *GitPathSource) resolve(ctx context.Context, found map[string]string) (dedup.Revision, error) {
	commit, err := g.GitSource.resolve(ctx, found)
	if err != nil {
		return "", err
	}
	g.mu.Lock()
	tree, ok := g.trees[string(commit)]
	g.mu.Unlock()
	if ok {
		return tree, nil
	}
	tree, err = g.tree(ctx, string(commit))
	if err != nil {
		return "", err
	}
	g.mu.Lock()
	if len(g.trees) >= 16 || g.trees == nil {
		g.trees = make(map[string]dedup.Revision) // old commits are not asked for again
	}
	g.trees[string(commit)] = tree
	g.mu.Unlock()
	return tree, nil
}

// cacheLocks serializes the git commands on one cache directory within the
// process: concurrent fetches into one repository fight over its lock files.
var cacheLocks sync.Map // directory -> *sync.Mutex

// tree fetches commit into the cache, if it is not there, and returns the
// tree of Path at it.
func (g *GitPathSource) tree(ctx context.Context, commit string) (dedup.Revision, error) {
	dir, err := g.cacheDir()
	if err != nil {
		return "", err
	}
	mu, _ := cacheLocks.LoadOrStore(dir, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if err := g.initCache(ctx, dir); err != nil {
		return "", err
	}
	if _, err := g.git(ctx, dir, "cat-file", "-e", commit+"^{commit}"); err != nil {
		if ctx.Err() != nil {
			return "", err
		}
		if _, err := g.git(ctx, dir, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
			"--depth=1", "--filter=blob:none", "origin", commit); err != nil {
			return "", err
		}
	}
	p := strings.TrimSuffix(g.Path, "/")
	if p == "" || p == "." {
		out, err := g.git(ctx, dir, "rev-parse", "--verify", commit+"^{tree}")
		if err != nil {
			return "", err
		}
		return dedup.Revision(strings.TrimSpace(string(out))), nil
	}
	out, err := g.git(ctx, dir, "ls-tree", "-d", "-z", "--full-tree", commit, "--", p)
	if err != nil {
		return "", err
	}
	// "<mode> SP <type> SP <object> TAB <path> NUL"
	meta, name, _ := strings.Cut(strings.TrimSuffix(string(out), "\x00"), "\t")
	fields := strings.Fields(meta)
	if name != p || len(fields) != 3 || fields[1] != "tree" || !isObjectName(fields[2]) {
		return "", fmt.Errorf("%s %s at %.12s: %q: %w", redactRemote(g.Remote), g.Ref, commit, g.Path, ErrUnknownPath)
	}
	return dedup.Revision(fields[2]), nil
}

// Archive writes a tar archive of the files of tree (a revision that this
// source reported) to w, as `git archive` makes it: what a Deployer unpacks
// to deploy exactly that directory. The file contents are fetched from the
// remote as needed. It blocks until the archive is written or ctx is done.
func (g *GitPathSource) Archive(ctx context.Context, tree dedup.Revision, w io.Writer) error {
	if err := g.check(); err != nil {
		return err
	}
	if !isObjectName(string(tree)) {
		return fmt.Errorf("%w: %q is not a tree object name", dedup.ErrInvalid, tree)
	}
	dir, err := g.cacheDir()
	if err != nil {
		return err
	}
	mu, _ := cacheLocks.LoadOrStore(dir, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	return g.run(ctx, w, "-C", dir, "archive", "--format=tar", string(tree))
}

// cacheDir returns CacheDir or the default for the remote.
func (g *GitPathSource) cacheDir() (string, error) {
	if g.CacheDir != "" {
		return g.CacheDir, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	sum := sha256.Sum256([]byte(g.fetchURL()))
	return filepath.Join(base, "dedupdeploy", "git", hex.EncodeToString(sum[:8])), nil
}

// initCache makes dir a bare repository whose remote origin is ours and
// may send objects later (a partial clone's promisor), unless it is one.
func (g *GitPathSource) initCache(ctx context.Context, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "objects")); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if _, err := g.git(ctx, "", "init", "--quiet", "--bare", "--", dir); err != nil {
			return err
		}
	}
	want := g.fetchURL()
	if out, err := g.git(ctx, dir, "config", "--get", "remote.origin.url"); err == nil && strings.TrimSpace(string(out)) == want {
		return nil
	}
	for _, kv := range [][2]string{
		{"remote.origin.url", want},
		{"remote.origin.promisor", "true"},
		{"remote.origin.partialclonefilter", "blob:none"},
		{"extensions.partialclone", "origin"},
	} {
		if _, err := g.git(ctx, dir, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// fetchURL is the remote without the user info of an HTTP URL: credentials
// go to git through its environment, never into the cache's configuration.
func (g *GitPathSource) fetchURL() string {
	if !isHTTP(g.Remote) {
		return g.Remote
	}
	u, err := url.Parse(g.Remote)
	if err != nil {
		return g.Remote
	}
	u.User = nil
	return u.String()
}

// git runs git in dir (if not empty) and returns its output.
func (g *GitPathSource) git(ctx context.Context, dir string, args ...string) ([]byte, error) {
	out := &boundedBuffer{max: maxGitOutput}
	if dir != "" {
		args = append([]string{"-C", dir}, args...)
	}
	if err := g.run(ctx, out, args...); err != nil {
		return nil, err
	}
	if out.truncated {
		return nil, fmt.Errorf("git %s: output longer than %d bytes", args[2], maxGitOutput)
	}
	return out.Bytes(), nil
}

// run runs git with args, writing its output to stdout, with the
// credentials of an HTTP remote in its environment.
func (g *GitPathSource) run(ctx context.Context, stdout io.Writer, args ...string) error {
	var extra []string
	if isHTTP(g.Remote) {
		var headers []string
		if u, err := url.Parse(g.Remote); err == nil {
			if a := basicAuth(u.User, g.Header); a != "" {
				headers = append(headers, "Authorization: "+a)
			}
		}
		for k, vs := range g.Header {
			for _, v := range vs {
				headers = append(headers, k+": "+v)
			}
		}
		extra = append(extra, "GIT_CONFIG_COUNT="+strconv.Itoa(len(headers)))
		for i, h := range headers {
			extra = append(extra, fmt.Sprintf("GIT_CONFIG_KEY_%d=http.extraHeader", i), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i, h))
		}
	}
	extra = append(extra, "GIT_LITERAL_PATHSPECS=1")
	return g.GitSource.run(ctx, stdout, extra, args...)
}
