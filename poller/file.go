package poller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// FileSource reports the content of a file as "sha256:" and the hexadecimal
// SHA-256 of its bytes: the revision changes exactly when the content does,
// not when only the modification time does. A missing or unreadable file is
// an error (wrapping fs.ErrNotExist when missing), never an empty revision;
// so is anything but a regular file (a directory, a named pipe, a device, a
// socket), which could block a read forever or never end. Make one with
// File. It is safe for concurrent use.
//
// The whole file is read at every poll; for large files choose Every
// accordingly.
type FileSource struct {
	// Path is the file; symbolic links are followed.
	Path string
}

// File returns a FileSource for path. Watch rejects an empty path, with an
// error wrapping dedup.ErrInvalid.
func File(path string) *FileSource {
	return &FileSource{Path: path}
}

// Latest reads the file and returns the hash of its content. It blocks
// until the file is read, and stops early with ctx.Err() when ctx is done.
// It never opens anything but a regular file for reading: the path is
// checked before it is opened, opened without blocking (so that a named pipe
// put there meanwhile does not wait for a writer), and checked again once
// open.
func (f *FileSource) Latest(ctx context.Context) (dedup.Revision, error) {
	if err := f.check(); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	info, err := os.Stat(f.Path)
	if err != nil {
		return "", err // a *fs.PathError naming the path
	}
	if err := regular(f.Path, info); err != nil {
		return "", err
	}
	file, err := openNonblock(f.Path)
	if err != nil {
		return "", err
	}
	defer file.Close()
	if info, err = file.Stat(); err != nil {
		return "", err
	}
	if err := regular(f.Path, info); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, file}); err != nil {
		return "", fmt.Errorf("read %s: %w", f.Path, err)
	}
	return dedup.Revision("sha256:" + hex.EncodeToString(h.Sum(nil))), nil
}

// regular returns an error naming what path is unless it is a regular file.
func regular(path string, info fs.FileInfo) error {
	mode := info.Mode()
	if mode.IsRegular() {
		return nil
	}
	what := "not a regular file"
	switch {
	case mode.IsDir():
		what = "a directory"
	case mode&fs.ModeNamedPipe != 0:
		what = "a named pipe"
	case mode&fs.ModeCharDevice != 0:
		what = "a character device"
	case mode&fs.ModeDevice != 0:
		what = "a device"
	case mode&fs.ModeSocket != 0:
		what = "a socket"
	}
	return fmt.Errorf("file source %s is %s, not a regular file", path, what)
}

func (f *FileSource) check() error {
	if f.Path == "" {
		return fmt.Errorf("%w: empty file source path", dedup.ErrInvalid)
	}
	return nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

var _ Source = (*FileSource)(nil)
