package poller_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/poller"
)

// gitRepo is a repository made for a test, with the commits its refs point
// to.
type gitRepo struct {
	dir    string
	c1, c2 string // commits on main: c1, then c2
	tagObj string // the object of the annotated tag v1 (not a commit)
}

// git runs git in dir and returns its trimmed output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@example.com",
		"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
	out, err := cmd.CombinedOutput()
	require.NoErrorf(t, err, "git %s: %s", strings.Join(args, " "), out)
	return strings.TrimSpace(string(out))
}

// newGitRepo makes a repository with:
//
//	main, feature/x, HEAD -> c2
//	v1 (annotated tag), light (lightweight tag), tag both -> c1
//	branch both -> c2
//
// refCase is a ref of a gitRepo and the commit it must resolve to.
type refCase struct {
	ref  string
	want string
}

// refCases are the refs of r and their commits: every way of reaching
// them (git itself, the in-process client over v2 and v0) must agree.
func (r gitRepo) refCases() []refCase {
	return []refCase{
		{"main", r.c2},
		{"refs/heads/main", r.c2},
		{"feature/x", r.c2},
		{"HEAD", r.c2},
		{"v1", r.c1}, // the commit, not the tag object
		{"refs/tags/v1", r.c1},
		{"light", r.c1},
		{"both", r.c2}, // a branch wins over a tag of the same name
		{"refs/tags/both", r.c1},
	}
}

func newGitRepo(t *testing.T) gitRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git not installed: scripts/test.sh installs it")
		}
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("one\n"), 0o644))
	git(t, dir, "add", "f")
	git(t, dir, "commit", "-q", "-m", "one")
	r := gitRepo{dir: dir, c1: git(t, dir, "rev-parse", "HEAD")}
	git(t, dir, "tag", "-a", "-m", "release 1", "v1")
	git(t, dir, "tag", "light")
	git(t, dir, "tag", "both")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("two\n"), 0o644))
	git(t, dir, "commit", "-q", "-am", "two")
	r.c2 = git(t, dir, "rev-parse", "HEAD")
	git(t, dir, "branch", "feature/x")
	git(t, dir, "branch", "both")
	r.tagObj = git(t, dir, "rev-parse", "refs/tags/v1")
	require.NotEqual(t, r.c1, r.tagObj, "an annotated tag is an object of its own")
	return r
}

func TestGitRefs(t *testing.T) {
	r := newGitRepo(t)
	for _, remote := range []string{r.dir, "file://" + r.dir} {
		for _, tc := range r.refCases() {
			rev, err := poller.Git(remote, tc.ref).Latest(testContext(t))
			require.NoErrorf(t, err, "Git(%q, %q).Latest", remote, tc.ref)
			require.Equalf(t, dedup.Revision(tc.want), rev, "Git(%q, %q).Latest", remote, tc.ref)
		}
	}
}

// TestGitNewCommit: a new commit on the branch is a new revision.
func TestGitNewCommit(t *testing.T) {
	r := newGitRepo(t)
	src := poller.Git(r.dir, "main")
	rev1, err := src.Latest(testContext(t))
	require.NoError(t, err)
	git(t, r.dir, "commit", "-q", "--allow-empty", "-m", "three")
	rev2, err := src.Latest(testContext(t))
	require.NoError(t, err)
	require.NotEqual(t, rev1, rev2)
	require.Equal(t, dedup.Revision(git(t, r.dir, "rev-parse", "HEAD")), rev2)
}

func TestGitErrors(t *testing.T) {
	r := newGitRepo(t)
	ctx := testContext(t)
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		src   *poller.GitSource
		check func(t *testing.T, err error)
	}{
		{"unknown ref", ctx, poller.Git(r.dir, "nosuch"),
			func(t *testing.T, err error) { require.ErrorIs(t, err, poller.ErrUnknownRef) }},
		{"unknown full ref", ctx, poller.Git(r.dir, "refs/heads/v1"),
			func(t *testing.T, err error) { require.ErrorIs(t, err, poller.ErrUnknownRef) }},
		{"unreachable remote", ctx, poller.Git(filepath.Join(t.TempDir(), "none"), "main"),
			func(t *testing.T, err error) {
				var exit *exec.ExitError
				require.ErrorAs(t, err, &exit)
				require.ErrorContains(t, err, "does not appear to be a git repository", "git's own message")
			}},
		{"missing git executable", ctx, &poller.GitSource{Remote: r.dir, Ref: "main", Git: filepath.Join(t.TempDir(), "git")},
			func(t *testing.T, err error) { require.ErrorIs(t, err, fs.ErrNotExist) }},
		{"canceled", canceled, poller.Git(r.dir, "main"),
			func(t *testing.T, err error) { require.ErrorIs(t, err, context.Canceled) }},
		{"remote option", ctx, poller.Git("--upload-pack=touch /tmp/pwned", "main"),
			func(t *testing.T, err error) { require.ErrorIs(t, err, dedup.ErrInvalid) }},
		{"ref option", ctx, poller.Git(r.dir, "--exit-code"),
			func(t *testing.T, err error) { require.ErrorIs(t, err, dedup.ErrInvalid) }},
		{"ref with a newline", ctx, poller.Git(r.dir, "main\nmain"),
			func(t *testing.T, err error) { require.ErrorIs(t, err, dedup.ErrInvalid) }},
		{"ref with ..", ctx, poller.Git(r.dir, "a..b"),
			func(t *testing.T, err error) { require.ErrorIs(t, err, dedup.ErrInvalid) }},
		{"empty remote", ctx, poller.Git("", "main"),
			func(t *testing.T, err error) { require.ErrorIs(t, err, dedup.ErrInvalid) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rev, err := tc.src.Latest(tc.ctx)
			require.Errorf(t, err, "Latest = %q", rev)
			require.Empty(t, rev)
			tc.check(t, err)
		})
	}
}

// TestGitNotInPath: git missing from PATH is exec.ErrNotFound.
func TestGitNotInPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := poller.Git("/srv/repo", "main").Latest(testContext(t))
	require.ErrorIs(t, err, exec.ErrNotFound)
}

// TestGitRedactsPassword: a password in the remote URL stays out of errors.
func TestGitRedactsPassword(t *testing.T) {
	_, err := (&poller.GitSource{Remote: "https://user:s3cret@127.0.0.1:1/repo.git", Ref: "main", Git: filepath.Join(t.TempDir(), "git")}).
		Latest(testContext(t))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
}

// TestGitWithPoller: a Poller on a real repository hands over the commit at
// every poll, and reports each new one as a change.
func TestGitWithPoller(t *testing.T) {
	r := newGitRepo(t)
	h := newHarness(t, nil)
	h.watch("web", poller.Git(r.dir, "main"), poller.Every(time.Minute), poller.Jitter(0))
	h.run()
	h.advance()
	require.Equal(t, poller.EventChanged, h.event().Kind)
	h.advance()
	require.Equal(t, poller.EventPolled, h.event().Kind)
	git(t, r.dir, "commit", "-q", "--allow-empty", "-m", "three")
	h.advance()
	e := h.event()
	require.Equal(t, poller.EventChanged, e.Kind)
	require.Equal(t, dedup.Revision(r.c2), e.Previous)
	require.Equal(t, []dedup.Revision{dedup.Revision(r.c2), dedup.Revision(r.c2), e.Revision}, h.trig.revs("web"),
		"every poll's revision is handed over")

	git(t, r.dir, "branch", "-m", "main", "renamed")
	h.advance()
	e = h.event()
	require.Equal(t, poller.EventError, e.Kind)
	require.True(t, errors.Is(e.Err, poller.ErrUnknownRef), "error %v", e.Err)
}
