package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/internal/tail"
)

// The environment variables that hold the key and the revision of a deploy.
// They are set last, so they win over a variable of the same name in the
// parent environment or in Cmd.Env.
const (
	EnvKey      = "DEDUP_KEY"
	EnvRevision = "DEDUP_REVISION"
)

// Defaults of a Cmd whose fields are zero.
const (
	DefaultGrace     = 10 * time.Second
	DefaultTailBytes = 8 << 10
)

// Cmd is a Deployer that runs a program per deploy, directly (never through
// a shell), as a process in a process group of its own, with an empty
// standard input. Command makes one; a Cmd literal works as well. Set the
// fields before the first Deploy and do not change them after: Deploy is
// then safe for concurrent use, for example by a Manager deploying several
// keys at once.
type Cmd struct {
	// Name is the program to run: a path (relative to Dir if relative), or
	// a name without a slash, looked up in the PATH of the current process
	// (not in Env). Required.
	Name string
	// Args are the arguments after the program name. In Name and Args,
	// "{key}" and "{revision}" are replaced by the key and the revision
	// being deployed, in one pass: a key that contains "{revision}" is
	// not expanded again.
	Args []string
	// Dir is the working directory; empty means the current one.
	Dir string
	// Env holds extra "NAME=value" entries, added to the environment of
	// the current process; a later entry wins over an earlier one of the
	// same name. They are passed as is, without placeholder replacement.
	// EnvKey and EnvRevision are always set, after these.
	Env []string
	// Stdout and Stderr, if set, receive a live copy of the output as the
	// process writes it. When they are the same writer (or both nil), the
	// process gets one pipe for both streams, so that the writer and the
	// tail of ExitError see the output in the order it was written.
	// Within one Deploy they are never written concurrently; a Cmd
	// deploying several keys at once writes to them from each Deploy, so
	// they must then be safe for concurrent use. A slow writer slows the
	// process down, as its output is not read meanwhile. After a write
	// error the writer gets no more output, and the deploy does not fail
	// for it.
	Stdout, Stderr io.Writer
	// Logger, if set, receives each line of output, stdout and stderr
	// alike, at level Info with the attributes key, revision and line.
	// Lines longer than 4 KiB are split; empty lines are skipped.
	Logger *slog.Logger
	// Grace is how long the processes get to exit after SIGTERM before
	// they get SIGKILL (see Deploy). Zero means DefaultGrace; negative is
	// invalid.
	Grace time.Duration
	// TailBytes is how much of the end of the output (stdout and stderr
	// together) a failed run's ExitError carries. Zero means
	// DefaultTailBytes; negative is invalid.
	TailBytes int
}

// Command returns a Cmd that runs the program name with args. It does not
// look the program up or check anything: Deploy does, every time.
func Command(name string, args ...string) *Cmd {
	return &Cmd{Name: name, Args: slices.Clone(args)}
}

var _ dedup.Deployer = (*Cmd)(nil)

// Deploy runs the program once for key and rev and blocks until it is over:
// the process has exited, every other process of its group has exited or
// been killed, and the output has been read to its end. It returns nil if the
// process exited with status 0, an *ExitError if it exited otherwise or was
// stopped, and another error if it could not be started or the Cmd, key or
// rev is invalid (wrapping dedup.ErrInvalid). If ctx is done before the
// start, nothing runs.
//
// Stopping. When ctx ends first, every process of the group gets SIGTERM;
// once the process has exited and the output pipes are closed, or Grace has
// passed, whatever is left of the group gets SIGKILL. The error then wraps
// ctx.Err() as well, even if the process exited with status 0 on SIGTERM:
// the deploy was interrupted.
//
// Leftovers. A process of the group that is still there after the process
// exits normally, such as a background child a script forgot, is stopped
// the same way: SIGTERM, then SIGKILL once the output pipes are closed or
// Grace has passed. This does not change the result of the run. Something
// meant to outlive a deploy belongs to a service manager (systemd, docker),
// not to the deploy's process group.
//
// So after ctx ends, Deploy returns within about Grace, or twice Grace when
// a process that left the group holds the output (see Limits).
//
// Limits. A process that leaves the group (setsid, setpgid) escapes all of
// this. If such a process still holds the output pipes Grace after the rest
// is gone, Deploy closes its end of them and returns; a run that otherwise
// succeeded then returns an error wrapping exec.ErrWaitDelay. If the process
// calling Deploy dies without running it to its end (SIGKILL), the group
// lives on. On systems without process groups (Windows, Plan 9), Deploy
// kills only the process itself, at once, when ctx ends.
func (c *Cmd) Deploy(ctx context.Context, key string, rev dedup.Revision) error {
	if err := c.check(key, rev); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deployer: %s not started: %w", c.Name, stopCause(ctx))
	}
	if c.Dir != "" {
		// Checked here, as exec would blame the program for a missing
		// directory when Name is relative to it.
		if fi, err := os.Stat(c.Dir); err != nil {
			return fmt.Errorf("deployer: %s not started: directory: %w", c.Name, err)
		} else if !fi.IsDir() {
			return fmt.Errorf("deployer: %s not started: directory %s is not a directory", c.Name, c.Dir)
		}
	}

	expand := strings.NewReplacer("{key}", key, "{revision}", string(rev)).Replace
	name := expand(c.Name)
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expand(a)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = c.Dir
	cmd.Env = slices.Concat(os.Environ(), c.Env, []string{EnvKey + "=" + key, EnvRevision + "=" + string(rev)})
	ownGroup(cmd)

	// Pipes of our own, rather than exec's, so that waiting for the process
	// and waiting for its output are separate: a leftover child that holds
	// the output must not keep Wait from telling us the process exited.
	// One pipe for both streams where they go to the same place, as that
	// keeps their order.
	shared := sameWriter(c.Stdout, c.Stderr)
	var readers, writers []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	pipes := 2
	if shared {
		pipes = 1
	}
	for range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(readers)
			closeAll(writers)
			return fmt.Errorf("deployer: start %s: %w", name, err)
		}
		readers, writers = append(readers, r), append(writers, w)
	}
	cmd.Stdout, cmd.Stderr = writers[0], writers[len(writers)-1]
	err := cmd.Start()
	closeAll(writers) // the process has its copies
	closeReaders := func() { closeAll(readers) }
	if err != nil {
		closeReaders()
		return fmt.Errorf("deployer: start %s: %w", name, err)
	}

	out := &output{tail: tail.New(c.tailBytes())}
	logCtx := context.WithoutCancel(ctx)
	streams := []*stream{out.stream(c.Stdout, c.lines(logCtx, key, rev))}
	if !shared {
		streams = append(streams, out.stream(c.Stderr, c.lines(logCtx, key, rev)))
	}
	drained := make(chan struct{})
	var copying atomic.Int32
	copying.Store(int32(len(readers)))
	for i, r := range readers {
		go func() {
			// The only error is a read error, which ends the output as
			// EOF does; the process gets EPIPE if it writes on.
			_, _ = io.Copy(streams[i], r)
			if copying.Add(-1) == 0 {
				close(drained)
			}
		}()
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()

	stopped := false
	select {
	case <-exited:
	case <-ctx.Done():
		select {
		case <-exited: // it finished on its own; that result stands
		default:
			stopped = true
		}
	}
	if stopped || groupAlive(cmd.Process) {
		terminateGroup(cmd.Process)
		grace := time.NewTimer(c.grace())
		waitAll(grace.C, exited, drained)
		grace.Stop()
		killGroup(cmd.Process)
		<-exited
	}

	// What can still hold the output open now: unread bytes, processes
	// dying of SIGKILL, and processes that left the group, which we cannot
	// kill; for those, there is a bound.
	escaped := false
	select {
	case <-drained:
	default:
		grace := time.NewTimer(c.grace())
		escaped = !waitAll(grace.C, drained)
		grace.Stop()
		closeReaders()
		<-drained
	}
	closeReaders()
	for _, s := range streams {
		s.flush()
	}

	var exitErr *exec.ExitError
	switch {
	case stopped:
		errors.As(waitErr, &exitErr)
		return out.exitError(name, exitErr, stopCause(ctx))
	case errors.As(waitErr, &exitErr):
		return out.exitError(name, exitErr, nil)
	case waitErr != nil:
		return fmt.Errorf("deployer: %s: %w", name, waitErr)
	case escaped:
		return fmt.Errorf("deployer: %s exited, but a process that left its process group kept its output open: %w", name, exec.ErrWaitDelay)
	}
	return nil
}

func (c *Cmd) check(key string, rev dedup.Revision) error {
	switch {
	case c.Name == "":
		return fmt.Errorf("deployer: %w: Cmd has no Name", dedup.ErrInvalid)
	case c.Grace < 0:
		return fmt.Errorf("deployer: %w: negative Grace %v", dedup.ErrInvalid, c.Grace)
	case c.TailBytes < 0:
		return fmt.Errorf("deployer: %w: negative TailBytes %d", dedup.ErrInvalid, c.TailBytes)
	}
	if err := dedup.ValidKey(key); err != nil {
		return fmt.Errorf("deployer: %w", err)
	}
	if err := dedup.ValidRevision(rev); err != nil {
		return fmt.Errorf("deployer: %w", err)
	}
	return nil
}

func (c *Cmd) grace() time.Duration {
	if c.Grace == 0 {
		return DefaultGrace
	}
	return c.Grace
}

func (c *Cmd) tailBytes() int {
	if c.TailBytes == 0 {
		return DefaultTailBytes
	}
	return c.TailBytes
}

func (c *Cmd) lines(ctx context.Context, key string, rev dedup.Revision) *lineLogger {
	if c.Logger == nil {
		return nil
	}
	return &lineLogger{ctx: ctx, log: c.Logger, attrs: []slog.Attr{
		slog.String("key", key), slog.String("revision", string(rev)),
	}}
}

// sameWriter reports whether a and b are the same writer, like os/exec
// does: values of a type that cannot be compared are never the same.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() { _ = recover() }()
	return a == b
}

// waitAll waits until every channel in chans is closed, and reports true,
// or until timeout fires, and reports false.
func waitAll(timeout <-chan time.Time, chans ...<-chan struct{}) bool {
	for _, ch := range chans {
		select {
		case <-ch:
		case <-timeout:
			return false
		}
	}
	return true
}

// stopCause is ctx.Err(), also wrapping ctx's cause when that says more.
func stopCause(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause == nil || cause == err {
		return err
	}
	return fmt.Errorf("%w: %w", err, cause)
}

// ExitError is the error of a run of a Cmd that did not succeed: its
// process exited with a status other than 0, was killed by a signal, or
// was stopped because the context of Deploy ended. errors.As finds the
// *exec.ExitError in it; errors.Is finds context.Canceled or
// context.DeadlineExceeded in a stopped run's error.
type ExitError struct {
	// Name is the program that ran, after placeholder replacement.
	Name string
	// Err holds the exit status. It is nil only for a stopped process
	// that exited with status 0.
	Err *exec.ExitError
	// Stopped is nil unless Deploy stopped the process because its
	// context ended; then it is ctx.Err(), wrapping context.Cause(ctx)
	// too if that differs.
	Stopped error
	// Output is the end of what the process wrote to stdout and stderr,
	// at most Cmd.TailBytes long, in the order of writing if Cmd.Stdout
	// and Cmd.Stderr are the same writer (or both nil). Otherwise the
	// streams have a pipe each: each is in order, and the two are
	// interleaved as they were read, close to the order of writing.
	Output []byte
	// Dropped counts the bytes of output written before Output that were
	// not kept.
	Dropped int64
}

func (o *output) exitError(name string, err *exec.ExitError, stopped error) *ExitError {
	return &ExitError{Name: name, Err: err, Stopped: stopped, Output: o.tail.Bytes(), Dropped: o.tail.Dropped()}
}

// Error reports the program, why it ended and the output tail, on lines
// after the first.
func (e *ExitError) Error() string {
	var b strings.Builder
	b.WriteString("deployer: ")
	b.WriteString(e.Name)
	b.WriteString(": ")
	if e.Stopped != nil {
		b.WriteString("stopped: ")
		b.WriteString(e.Stopped.Error())
		b.WriteString("; ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("exit status 0")
	}
	out := e.Output
	if e.Dropped > 0 {
		// The cut may have split a character.
		for len(out) > 0 && !utf8.RuneStart(out[0]) {
			out = out[1:]
		}
		fmt.Fprintf(&b, "\noutput, last %d bytes:\n", len(out))
	} else if len(out) > 0 {
		b.WriteString("\noutput:\n")
	}
	b.Write(trimNewline(out))
	return b.String()
}

// Unwrap returns Err and Stopped, those that are not nil.
func (e *ExitError) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Stopped != nil {
		errs = append(errs, e.Stopped)
	}
	return errs
}

// ExitCode returns the exit status of the process, or -1 if a signal
// killed it.
func (e *ExitError) ExitCode() int {
	if e.Err == nil {
		return 0
	}
	return e.Err.ExitCode()
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// output collects the output of one run: the tail for the error, and the
// live copies. Its lock keeps the copies of stdout and stderr from writing
// to the user's writers at the same time.
type output struct {
	mu   sync.Mutex
	tail *tail.Buffer
}

func (o *output) stream(w io.Writer, lines *lineLogger) *stream {
	return &stream{o: o, w: w, lines: lines}
}

// stream is where one of the pipes is copied to. Its Write never fails, so
// that the pipe is drained whatever the user's writers do.
type stream struct {
	o     *output
	w     io.Writer // nil after its first error
	lines *lineLogger
}

func (s *stream) Write(p []byte) (int, error) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	_, _ = s.o.tail.Write(p)
	if s.w != nil {
		if _, err := s.w.Write(p); err != nil {
			s.w = nil
		}
	}
	if s.lines != nil {
		s.lines.write(p)
	}
	return len(p), nil
}

func (s *stream) flush() {
	if s.lines == nil {
		return
	}
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.lines.flush()
}

const maxLine = 4 << 10

// lineLogger logs output line by line.
type lineLogger struct {
	ctx     context.Context
	log     *slog.Logger
	attrs   []slog.Attr
	partial []byte
}

func (l *lineLogger) write(p []byte) {
	for len(p) > 0 {
		line, rest, complete := cutLine(p)
		if room := maxLine - len(l.partial); len(line) > room {
			l.partial = append(l.partial, line[:room]...)
			l.flush()
			p = p[room:]
			continue
		}
		l.partial = append(l.partial, line...)
		if complete {
			l.flush()
		}
		p = rest
	}
}

func cutLine(p []byte) (line, rest []byte, complete bool) {
	for i, c := range p {
		if c == '\n' {
			return p[:i], p[i+1:], true
		}
	}
	return p, nil, false
}

func (l *lineLogger) flush() {
	line := strings.TrimSuffix(string(l.partial), "\r")
	l.partial = l.partial[:0]
	if line == "" {
		return
	}
	attrs := append(l.attrs[:len(l.attrs):len(l.attrs)], slog.String("line", line))
	l.log.LogAttrs(l.ctx, slog.LevelInfo, "deploy output", attrs...)
}
