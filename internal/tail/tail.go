// Package tail keeps bounded amounts of output: the last bytes written to a
// Buffer, or the first bytes read by Head. Memory never exceeds the bound,
// whatever the size of the output.
package tail

import (
	"io"
	"sync"
)

// Buffer is an io.Writer that keeps the last n bytes written to it and
// counts the bytes it dropped. It is safe for concurrent use; each Write is
// kept or dropped as one piece relative to other Writes. Its memory grows
// with what is written, up to n bytes.
type Buffer struct {
	mu      sync.Mutex
	n       int
	buf     []byte // len(buf) < n: not wrapped yet; len(buf) == n: a ring starting at head
	head    int
	dropped int64
}

// New returns a Buffer that keeps the last n bytes written. n <= 0 keeps
// nothing and only counts.
func New(n int) *Buffer {
	return &Buffer{n: max(n, 0)}
}

// Write keeps the end of p, dropping the oldest bytes beyond the bound. It
// never fails and never blocks on anything but other calls of the Buffer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	written := len(p)
	if len(p) >= b.n {
		b.dropped += int64(len(b.buf) + len(p) - b.n)
		b.buf = append(b.buf[:0], p[len(p)-b.n:]...)
		b.head = 0
		return written, nil
	}
	if free := b.n - len(b.buf); free > 0 {
		k := min(free, len(p))
		b.buf = append(b.buf, p[:k]...)
		p = p[k:]
	}
	// The ring is full: overwrite the oldest bytes, which start at head.
	for len(p) > 0 {
		k := copy(b.buf[b.head:], p)
		b.dropped += int64(k)
		b.head = (b.head + k) % b.n
		p = p[k:]
	}
	return written, nil
}

// Bytes returns a copy of the kept bytes, oldest first.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]byte, 0, len(b.buf))
	out = append(out, b.buf[b.head:]...)
	return append(out, b.buf[:b.head]...)
}

// Dropped returns how many bytes written so far are not kept.
func (b *Buffer) Dropped() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// Head reads from r until EOF or until it has more than n bytes, and returns
// at most the first n of them; more reports whether r had bytes beyond n.
// It blocks while r does. An error other than io.EOF is returned with the
// bytes read before it.
func Head(r io.Reader, n int64) (b []byte, more bool, err error) {
	n = max(n, 0)
	b, err = io.ReadAll(io.LimitReader(r, n+1))
	if int64(len(b)) > n {
		return b[:n], true, err
	}
	return b, false, err
}
