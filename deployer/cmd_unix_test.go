//go:build unix

package deployer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/deployer"
)

func TestCmdPlaceholdersEnvAndDir(t *testing.T) {
	t.Setenv("DEPLOYER_TEST_VAR", "parent")
	dir := t.TempDir()
	realDir, err := filepath.EvalSymlinks(dir)
	require.NoError(t, err)
	script := filepath.Join(dir, "deploy-web.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\nprintf 'script %s' \"$1\"\n"), 0o755))

	tests := []struct {
		name string
		cmd  *deployer.Cmd
		key  string
		rev  dedup.Revision
		want string
	}{
		{
			name: "placeholders in args",
			cmd:  deployer.Command("printf", "%s|%s|%s", "{key}", "{revision}", "k={key},r={revision},{other}"),
			key:  "web", rev: "v1",
			want: "web|v1|k=web,r=v1,{other}",
		},
		{
			name: "placeholder in name",
			cmd:  deployer.Command(filepath.Join(dir, "deploy-{key}.sh"), "{revision}"),
			key:  "web", rev: "v2",
			want: "script v2",
		},
		{
			name: "replaced in one pass",
			cmd:  deployer.Command("printf", "%s|%s", "{key}", "{revision}"),
			key:  "{revision}", rev: "{key}",
			want: "{revision}|{key}",
		},
		{
			name: "revision is one argument, never shell syntax",
			cmd:  deployer.Command("printf", "%s|", "{revision}"),
			key:  "web", rev: `$(echo pwned) "a b" *; exit 1`,
			want: `$(echo pwned) "a b" *; exit 1|`,
		},
		{
			name: "key and revision in the environment",
			cmd:  deployer.Command("sh", "-c", `printf '%s|%s' "$DEDUP_KEY" "$DEDUP_REVISION"`),
			key:  "web", rev: "v3 with spaces",
			want: "web|v3 with spaces",
		},
		{
			name: "extra env wins over the parent's",
			cmd: &deployer.Cmd{
				Name: "sh", Args: []string{"-c", `printf '%s|%s|%s' "$DEPLOYER_TEST_VAR" "$EXTRA" "$PATH_SEEN"`},
				Env: []string{"DEPLOYER_TEST_VAR=child", "EXTRA=first", "EXTRA=last", "PATH_SEEN=yes"},
			},
			key: "web", rev: "v1",
			want: "child|last|yes",
		},
		{
			name: "parent env kept",
			cmd:  deployer.Command("sh", "-c", `printf '%s' "$DEPLOYER_TEST_VAR"`),
			key:  "web", rev: "v1",
			want: "parent",
		},
		{
			name: "env cannot forge key or revision, and is not expanded",
			cmd: &deployer.Cmd{
				Name: "sh", Args: []string{"-c", `printf '%s|%s|%s' "$DEDUP_KEY" "$DEDUP_REVISION" "$TAG"`},
				Env: []string{"DEDUP_KEY=forged", "DEDUP_REVISION=forged", "TAG={revision}"},
			},
			key: "web", rev: "v4",
			want: "web|v4|{revision}",
		},
		{
			name: "dir",
			cmd:  &deployer.Cmd{Name: "pwd", Dir: dir},
			key:  "web", rev: "v1",
			want: realDir + "\n",
		},
		{
			name: "stdin is empty",
			cmd:  deployer.Command("sh", "-c", `cat; printf 'eof'`),
			key:  "web", rev: "v1",
			want: "eof",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			tt.cmd.Stdout = &out
			err := tt.cmd.Deploy(testContext(t), tt.key, tt.rev)
			require.NoError(t, err, "Deploy(%q, %q)", tt.key, tt.rev)
			assert.Equal(t, tt.want, out.String(), "output of Deploy(%q, %q)", tt.key, tt.rev)
		})
	}
}

func TestCmdFailure(t *testing.T) {
	tests := []struct {
		name      string
		script    string
		tailBytes int
		code      int
		status    string   // in Error()
		output    []string // in Output and Error(), in this order
		dropped   bool
	}{
		{
			name:   "exit status and both streams",
			script: `echo out-1; echo err-1 >&2; echo out-2; exit 3`,
			code:   3, status: "exit status 3",
			output: []string{"out-1", "err-1", "out-2"},
		},
		{
			name:   "no output",
			script: `exit 1`,
			code:   1, status: "exit status 1",
		},
		{
			name:   "killed by a signal of its own",
			script: `echo dying; kill -KILL $$`,
			code:   -1, status: "signal: killed",
			output: []string{"dying"},
		},
		{
			name:      "tail is bounded and keeps the end",
			script:    `i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; echo END; exit 2`,
			tailBytes: 64,
			code:      2, status: "exit status 2",
			output:  []string{"line 1999", "END"},
			dropped: true,
		},
		{
			name:      "tail cut inside a character",
			script:    `printf 'ééééé'; exit 1`,
			tailBytes: 5,
			code:      1, status: "exit status 1",
			output:  []string{"éé"},
			dropped: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &deployer.Cmd{Name: "sh", Args: []string{"-c", tt.script}, TailBytes: tt.tailBytes}
			err := c.Deploy(testContext(t), "web", "v1")
			require.Error(t, err)

			var ee *deployer.ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, "sh", ee.Name)
			assert.Equal(t, tt.code, ee.ExitCode())
			assert.NoError(t, ee.Stopped)
			var xe *exec.ExitError
			require.ErrorAs(t, err, &xe, "errors.As(%v, *exec.ExitError)", err)
			assert.Equal(t, tt.code, xe.ExitCode())
			assert.NotErrorIs(t, err, context.Canceled)

			msg := err.Error()
			assert.True(t, utf8.ValidString(msg), "Error() = %q; want valid UTF-8", msg)
			assert.True(t, strings.HasPrefix(msg, "deployer: sh"), "Error() = %q; want the program name first", msg)
			assert.Contains(t, msg, tt.status)
			last := -1
			for _, o := range tt.output {
				assert.Contains(t, string(ee.Output), o)
				i := strings.Index(msg, o)
				assert.Greater(t, i, last, "Error() = %q; want %q after the earlier output", msg, o)
				last = i
			}
			if tt.dropped {
				assert.LessOrEqual(t, len(ee.Output), tt.tailBytes)
				assert.Positive(t, ee.Dropped)
				assert.NotContains(t, string(ee.Output), "line 0\n")
				assert.Contains(t, msg, "output, last")
			} else {
				assert.Zero(t, ee.Dropped)
			}
		})
	}
}

func TestCmdLiveOutput(t *testing.T) {
	// More output than the tail keeps, on both streams at once.
	script := `i=0; while [ $i -lt 500 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`
	want := func(prefix string) string {
		var b strings.Builder
		for i := range 500 {
			fmt.Fprintf(&b, "%s %d\n", prefix, i)
		}
		return b.String()
	}

	t.Run("separate writers get their stream in full", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		c := &deployer.Cmd{Name: "sh", Args: []string{"-c", script}, Stdout: &stdout, Stderr: &stderr, TailBytes: 16}
		require.NoError(t, c.Deploy(testContext(t), "web", "v1"))
		assert.Equal(t, want("out"), stdout.String())
		assert.Equal(t, want("err"), stderr.String())
	})

	t.Run("one writer for both gets the output in order", func(t *testing.T) {
		var both bytes.Buffer
		c := &deployer.Cmd{Name: "sh", Args: []string{"-c", script}, Stdout: &both, Stderr: &both}
		require.NoError(t, c.Deploy(testContext(t), "web", "v1"))
		var want strings.Builder
		for i := range 500 {
			fmt.Fprintf(&want, "out %d\nerr %d\n", i, i)
		}
		assert.Equal(t, want.String(), both.String())
	})

	t.Run("two writers are never written concurrently", func(t *testing.T) {
		w := &exclusiveWriter{t: t}
		c := &deployer.Cmd{Name: "sh", Args: []string{"-c", script}, Stdout: w.view(), Stderr: w.view()}
		require.NoError(t, c.Deploy(testContext(t), "web", "v1"))
		assert.Equal(t, len(want("out"))+len(want("err")), w.n)
	})

	t.Run("a failing writer does not fail the deploy nor stall the process", func(t *testing.T) {
		var stderr bytes.Buffer
		c := &deployer.Cmd{Name: "sh", Args: []string{"-c", script}, Stdout: failWriter{}, Stderr: &stderr}
		require.NoError(t, c.Deploy(testContext(t), "web", "v1"))
		assert.Equal(t, want("err"), stderr.String())
	})
}

// exclusiveWriter fails the test if two Writes to its views overlap.
type exclusiveWriter struct {
	t    *testing.T
	busy atomic.Bool
	n    int
}

// view returns a distinct writer that writes to w.
func (w *exclusiveWriter) view() io.Writer { return &exclusiveView{w} }

type exclusiveView struct{ w *exclusiveWriter }

func (v *exclusiveView) Write(p []byte) (int, error) {
	w := v.w
	if !w.busy.CompareAndSwap(false, true) {
		w.t.Error("concurrent Write")
		return len(p), nil
	}
	defer w.busy.Store(false)
	w.n += len(p)
	return len(p), nil
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestCmdLogger(t *testing.T) {
	h := &recordHandler{}
	long := strings.Repeat("x", 10000)
	c := &deployer.Cmd{
		Name:   "sh",
		Args:   []string{"-c", `printf 'a\n\nb\r\nno newline at the end'; printf '%s\n' "$LONG"`},
		Env:    []string{"LONG=" + long},
		Logger: slog.New(h),
	}
	require.NoError(t, c.Deploy(testContext(t), "web", "v1"))

	var got []string
	for _, r := range h.records() {
		assert.Equal(t, slog.LevelInfo, r.level)
		assert.Equal(t, map[string]string{"key": "web", "revision": "v1", "line": r.attrs["line"]}, r.attrs)
		got = append(got, r.attrs["line"])
	}
	const partial = "no newline at the end"
	assert.Equal(t, []string{"a", "b", partial + long[:4096-len(partial)], long[:4096], long[:10000-2*4096+len(partial)]}, got)

	t.Run("separate streams", func(t *testing.T) {
		h := &recordHandler{}
		c := &deployer.Cmd{
			Name:   "sh",
			Args:   []string{"-c", `printf 'out-'; printf 'err\n' >&2; printf 'line\n'`},
			Stdout: io.Discard,
			Logger: slog.New(h),
		}
		require.NoError(t, c.Deploy(testContext(t), "web", "v1"))
		var got []string
		for _, r := range h.records() {
			got = append(got, r.attrs["line"])
		}
		assert.ElementsMatch(t, []string{"out-line", "err"}, got, "lines of separate streams stay apart")
	})
}

type record struct {
	level slog.Level
	attrs map[string]string
}

type recordHandler struct {
	mu   sync.Mutex
	recs []record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, rec)
	return nil
}

func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) records() []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.recs
}

func TestCmdInvalid(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	run := []string{"-c", `touch "$1"`, "sh", marker}
	tests := []struct {
		name string
		cmd  *deployer.Cmd
		key  string
		rev  dedup.Revision
	}{
		{"no name", &deployer.Cmd{Args: run}, "web", "v1"},
		{"zero Cmd", &deployer.Cmd{}, "web", "v1"},
		{"negative grace", &deployer.Cmd{Name: "sh", Args: run, Grace: -time.Second}, "web", "v1"},
		{"negative tail", &deployer.Cmd{Name: "sh", Args: run, TailBytes: -1}, "web", "v1"},
		{"empty key", deployer.Command("sh", run...), "", "v1"},
		{"empty revision", deployer.Command("sh", run...), "web", ""},
		{"control character in revision", deployer.Command("sh", run...), "web", "v1\n; rm -rf /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cmd.Deploy(testContext(t), tt.key, tt.rev)
			require.ErrorIs(t, err, dedup.ErrInvalid, "Deploy(%q, %q)", tt.key, tt.rev)
			assert.NoFileExists(t, marker, "the program ran")
		})
	}
}

func TestCmdStartError(t *testing.T) {
	tests := []struct {
		name string
		cmd  *deployer.Cmd
		want error
	}{
		{"program not found", deployer.Command("deployer-test-no-such-program"), exec.ErrNotFound},
		{"path not found", deployer.Command("/nonexistent/deploy.sh"), fs.ErrNotExist},
		{"dir not found", &deployer.Cmd{Name: "true", Dir: "/nonexistent"}, fs.ErrNotExist},
		{"dir not found, relative program", &deployer.Cmd{Name: "./deploy.sh", Dir: "/nonexistent/stack"}, fs.ErrNotExist},
		{"dir is a file", &deployer.Cmd{Name: "true", Dir: "/etc/hostname"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cmd.Deploy(testContext(t), "web", "v1")
			require.Error(t, err)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want)
			}
			if tt.cmd.Dir != "" && !strings.Contains(err.Error(), tt.cmd.Dir) {
				t.Errorf("Deploy with Dir %q = %v; want an error that names the directory", tt.cmd.Dir, err)
			}
			var ee *deployer.ExitError
			assert.False(t, errors.As(err, &ee), "a start error is no *ExitError: %v", err)
		})
	}
}

func TestCmdContextDoneBeforeStart(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	err := deployer.Command("touch", marker).Deploy(ctx, "web", "v1")
	require.ErrorIs(t, err, context.Canceled)
	assert.NoFileExists(t, marker, "the program ran")
}

// TestCmdStopOnCancel cancels scripts that run a child. The ready line
// comes from the child once it runs a program of its own: before that, a
// forked shell still has its parent's TERM trap and would swallow the
// SIGTERM, leaving the child to the SIGKILL after the grace.
func TestCmdStopOnCancel(t *testing.T) {
	errSuperseded := errors.New("superseded")
	tests := []struct {
		name   string
		script string
		cause  error
		code   int            // exit code of the stopped process
		signal syscall.Signal // the signal that ended it, 0 for an exit
		output string
	}{
		{
			name:   "SIGTERM ends it",
			script: `sh -c 'echo ready; exec sleep 1000' & wait`,
			code:   -1, signal: syscall.SIGTERM,
		},
		{
			name:   "a clean exit on SIGTERM still reports the stop",
			script: `trap 'echo got TERM; exit 0' TERM; sh -c 'echo ready; exec sleep 1000' & wait`,
			code:   0,
			output: "got TERM",
		},
		{
			name:   "failing on SIGTERM",
			script: `trap 'echo got TERM; exit 7' TERM; sh -c 'echo ready; exec sleep 1000' & wait`,
			code:   7,
			output: "got TERM",
		},
		{
			name:   "the cause of the context",
			script: `sh -c 'echo ready; exec sleep 1000' & wait`,
			cause:  errSuperseded,
			code:   -1, signal: syscall.SIGTERM,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWatch("ready\n")
			// The grace is far longer than the test may take: the process
			// must end on SIGTERM, not on SIGKILL after the grace.
			c := &deployer.Cmd{Name: "sh", Args: []string{"-c", tt.script}, Stdout: w, Grace: time.Hour}
			ctx, cancel := context.WithCancelCause(testContext(t))
			defer cancel(nil)
			result := deployAsync(ctx, t, c, "web", "v1")
			await(t, w.seen, "the ready line")
			cancel(tt.cause)
			err := result()

			require.ErrorIs(t, err, context.Canceled)
			if tt.cause != nil {
				require.ErrorIs(t, err, tt.cause)
			}
			var ee *deployer.ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tt.code, ee.ExitCode())
			if tt.signal != 0 {
				ws := ee.Err.Sys().(syscall.WaitStatus)
				assert.Equal(t, tt.signal, ws.Signal(), "the process ended by %v", ws)
			}
			assert.Contains(t, string(ee.Output), tt.output)
			assert.Contains(t, err.Error(), "stopped")
		})
	}
}

func TestCmdConcurrentDeploys(t *testing.T) {
	c := deployer.Command("sh", "-c", `i=0; while [ $i -lt 200 ]; do echo "$DEDUP_KEY $i"; i=$((i+1)); done; [ "$1" = ok ] || exit 1`, "sh", "{revision}")
	c.TailBytes = 32
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		rev := dedup.Revision("ok")
		if i%2 == 1 {
			rev = "fail"
		}
		wg.Go(func() { errs[i] = c.Deploy(testContext(t), fmt.Sprint("key", i), rev) })
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 {
			assert.NoError(t, err, "Deploy(key%d, ok)", i)
			continue
		}
		var ee *deployer.ExitError
		require.ErrorAs(t, err, &ee, "Deploy(key%d, fail)", i)
		assert.Equal(t, fmt.Sprintf("key%d 199", i), lastLine(ee.Output), "the tail of key%d holds its own output", i)
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[len(lines)-1]
}

// A nil *Cmd is refused when the Manager is made, not at the first deploy.
func TestNewRefusesANilCmd(t *testing.T) {
	if _, err := dedup.New((*deployer.Cmd)(nil)); !errors.Is(err, dedup.ErrInvalid) {
		t.Errorf("dedup.New((*deployer.Cmd)(nil)) = %v; want ErrInvalid", err)
	}
	if _, err := dedup.New((*deployer.HTTPDeployer)(nil)); !errors.Is(err, dedup.ErrInvalid) {
		t.Errorf("dedup.New((*deployer.HTTPDeployer)(nil)) = %v; want ErrInvalid", err)
	}
}
