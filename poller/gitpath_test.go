package poller_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// stacksRepo makes a repository with two stacks, stacks/a and stacks/b.
func stacksRepo(t *testing.T) string {
	t.Helper()
	r := newGitRepo(t)
	for _, f := range []string{"stacks/a/compose.yaml", "stacks/b/compose.yaml", "stacks/b/nested/x"} {
		writeFile(t, filepath.Join(r.dir, f), "first "+f+"\n")
	}
	git(t, r.dir, "add", ".")
	git(t, r.dir, "commit", "-q", "-m", "stacks")
	return r.dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

// TestGitPath: the revision is the tree of the directory, over HTTP, TLS
// (in process and through git fetch) and file://; a commit that does not
// touch it leaves it as it was; Archive unpacks exactly its files.
func TestGitPath(t *testing.T) {
	dir := stacksRepo(t)
	git(t, dir, "config", "uploadpack.allowFilter", "true")
	// What Archive's fetches of blobs by name need from a server that only
	// speaks protocol version 0 (version 2 allows them).
	git(t, dir, "config", "uploadpack.allowAnySHA1InWant", "true")
	for _, o := range []serverOpts{{}, {tls: true}, {v0: true}} {
		t.Run(fmt.Sprintf("http,tls=%v,v0=%v", o.tls, o.v0), func(t *testing.T) {
			s := newGitServer(t, dir, o)
			testGitPath(t, dir, func(path string) *poller.GitPathSource {
				src := poller.GitPath(s.url, "main", path)
				src.Client, src.Env, src.CacheDir = s.Client(), s.gitEnv(), filepath.Join(t.TempDir(), "cache")
				return src
			})
		})
	}
	t.Run("file", func(t *testing.T) {
		testGitPath(t, dir, func(path string) *poller.GitPathSource {
			src := poller.GitPath("file://"+dir, "main", path)
			src.CacheDir = filepath.Join(t.TempDir(), "cache")
			return src
		})
	})
}

func testGitPath(t *testing.T, dir string, source func(path string) *poller.GitPathSource) {
	ctx := testContext(t)
	a, b, root := source("stacks/a"), source("stacks/b"), source("")
	latest := func(src *poller.GitPathSource) dedup.Revision {
		t.Helper()
		rev, err := src.Latest(ctx)
		require.NoErrorf(t, err, "GitPath(%q).Latest", src.Path)
		return rev
	}
	a1, b1 := latest(a), latest(b)
	require.Equal(t, dedup.Revision(git(t, dir, "rev-parse", "main:stacks/a")), a1)
	require.Equal(t, dedup.Revision(git(t, dir, "rev-parse", "main:stacks/b")), b1)
	require.Equal(t, dedup.Revision(git(t, dir, "rev-parse", "main^{tree}")), latest(root))

	writeFile(t, filepath.Join(dir, "stacks/b/compose.yaml"), "second\n")
	git(t, dir, "commit", "-q", "-am", "change b")
	t.Cleanup(func() { git(t, dir, "reset", "-q", "--hard", "HEAD~1") })
	require.Equal(t, a1, latest(a), "a commit to b changed a")
	b2 := latest(b)
	require.NotEqual(t, b1, b2, "a commit to b did not change b")

	var buf bytes.Buffer
	require.NoError(t, b.Archive(ctx, b2, &buf))
	files := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if hdr.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			require.NoError(t, err)
			files[hdr.Name] = string(data)
		}
	}
	require.Equal(t, map[string]string{"compose.yaml": "second\n", "nested/x": "first stacks/b/nested/x\n"}, files)

	_, err := source("stacks/c").Latest(ctx)
	require.ErrorIs(t, err, poller.ErrUnknownPath)
	_, err = source("stacks/a/compose.yaml").Latest(ctx)
	require.ErrorIs(t, err, poller.ErrUnknownPath, "a file is not a directory")
}

func TestGitPathInvalid(t *testing.T) {
	for _, path := range []string{"/etc", "../x", "a/../../x", "a//b", "-x", "a\nb"} {
		p := poller.New(new(recorder))
		err := p.Watch("web", poller.GitPath("/srv/repo", "main", path))
		require.ErrorIsf(t, err, dedup.ErrInvalid, "Watch(GitPath(%q))", path)
	}
}

// TestGitPathPoller: two stacks of one repository, one ls-refs per round
// for both; a commit to one changes only that one.
func TestGitPathPoller(t *testing.T) {
	dir := stacksRepo(t)
	s := newGitServer(t, dir, serverOpts{})
	cache := filepath.Join(t.TempDir(), "cache")
	h := newHarness(t, nil, poller.WithHTTPClient(s.Client()))
	for _, stack := range []string{"a", "b"} {
		src := poller.GitPath(s.url, "main", "stacks/"+stack)
		src.CacheDir = cache
		h.watch(stack, src, poller.Every(time.Minute), poller.Jitter(0))
	}
	h.run()
	kinds := func() map[string]poller.EventKind {
		out := map[string]poller.EventKind{}
		for range 2 {
			e := h.event()
			require.NoError(t, e.Err)
			out[e.Key] = e.Kind
		}
		return out
	}
	h.fireNext(1, 0)
	require.Equal(t, map[string]poller.EventKind{"a": poller.EventChanged, "b": poller.EventChanged}, kinds())
	require.Equal(t, 1, s.count("POST ls-refs"))
	require.Equal(t, 1, s.count("POST fetch"), "one fetch of the new commit for both stacks")
	s.take()

	writeFile(t, filepath.Join(dir, "stacks/a/compose.yaml"), "second\n")
	git(t, dir, "commit", "-q", "-am", "change a")
	h.fireNext(1, time.Minute)
	require.Equal(t, map[string]poller.EventKind{"a": poller.EventChanged, "b": poller.EventPolled}, kinds())
	require.Equal(t, 1, s.count("POST ls-refs"))
	s.take()

	h.fireNext(1, time.Minute)
	require.Equal(t, map[string]poller.EventKind{"a": poller.EventPolled, "b": poller.EventPolled}, kinds())
	require.Equal(t, []string{"GET refs", "POST ls-refs"}, s.take(), "no fetch for a commit seen before")
}
