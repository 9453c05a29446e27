package tail_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/internal/tail"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBuffer(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		writes  []string
		want    string
		dropped int64
	}{
		{"nothing written", 4, nil, "", 0},
		{"empty write", 4, []string{""}, "", 0},
		{"under the bound", 8, []string{"ab", "cd"}, "abcd", 0},
		{"exactly the bound", 4, []string{"ab", "cd"}, "abcd", 0},
		{"one write over the bound", 4, []string{"abcdef"}, "cdef", 2},
		{"fill then wrap", 4, []string{"abc", "de"}, "bcde", 1},
		{"wrap several times", 4, []string{"abc", "de", "fgh", "i"}, "fghi", 5},
		{"wrap in one write across the end", 5, []string{"abcd", "efg"}, "cdefg", 2},
		{"big write after a wrap", 3, []string{"ab", "cd", "efghij"}, "hij", 7},
		{"single bytes", 2, []string{"a", "b", "c", "d", "e"}, "de", 3},
		{"bound zero counts only", 0, []string{"abc", "d"}, "", 4},
		{"negative bound counts only", -1, []string{"abc"}, "", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tail.New(tt.n)
			for _, w := range tt.writes {
				n, err := b.Write([]byte(w))
				require.NoError(t, err)
				require.Equal(t, len(w), n, "Write(%q) count", w)
			}
			assert.Equal(t, tt.want, string(b.Bytes()), "Bytes() after %q", tt.writes)
			assert.Equal(t, tt.dropped, b.Dropped(), "Dropped() after %q", tt.writes)
		})
	}
}

// TestBufferMatchesNaive checks the ring against "keep the suffix of all
// that was written" for every split of a stream into writes of sizes 1..7.
func TestBufferMatchesNaive(t *testing.T) {
	stream := []byte("The quick brown fox jumps over the lazy dog, twice over.")
	for n := 0; n <= 12; n++ {
		for step := 1; step <= 7; step++ {
			b := tail.New(n)
			var all []byte
			for i := 0; i < len(stream); i += step {
				p := stream[i:min(i+step, len(stream))]
				_, _ = b.Write(p)
				all = append(all, p...)
				want := all[max(0, len(all)-n):]
				require.Equal(t, string(want), string(b.Bytes()), "n=%d step=%d after %d bytes", n, step, len(all))
				require.Equal(t, int64(len(all)-len(want)), b.Dropped(), "n=%d step=%d after %d bytes", n, step, len(all))
			}
		}
	}
}

func TestBufferBytesIsACopy(t *testing.T) {
	b := tail.New(4)
	_, _ = b.Write([]byte("abcd"))
	got := b.Bytes()
	got[0] = 'X'
	assert.Equal(t, "abcd", string(b.Bytes()))
}

// TestBufferConcurrentWrites writes equal-sized chunks from several
// goroutines; since each Write is atomic and the bound is a multiple of the
// chunk size, the kept bytes must be whole chunks.
func TestBufferConcurrentWrites(t *testing.T) {
	const (
		writers = 4
		chunk   = 8
		perW    = 500
	)
	b := tail.New(16 * chunk)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			p := bytes.Repeat([]byte{byte('a' + w)}, chunk)
			for range perW {
				_, _ = b.Write(p)
			}
		})
	}
	wg.Wait()

	got := b.Bytes()
	require.Len(t, got, 16*chunk)
	for i := 0; i < len(got); i += chunk {
		c := got[i : i+chunk]
		assert.Equal(t, strings.Repeat(string(c[:1]), chunk), string(c), "chunk at %d is torn", i)
	}
	assert.Equal(t, int64(writers*perW*chunk-16*chunk), b.Dropped())
}

func TestHead(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		r       io.Reader
		n       int64
		want    string
		more    bool
		wantErr error
	}{
		{"empty", strings.NewReader(""), 4, "", false, nil},
		{"shorter", strings.NewReader("ab"), 4, "ab", false, nil},
		{"exactly n", strings.NewReader("abcd"), 4, "abcd", false, nil},
		{"one more", strings.NewReader("abcde"), 4, "abcd", true, nil},
		{"much more", strings.NewReader(strings.Repeat("x", 1<<16)), 3, "xxx", true, nil},
		{"zero bound", strings.NewReader("a"), 0, "", true, nil},
		{"zero bound empty", strings.NewReader(""), 0, "", false, nil},
		{"one byte reads", iotest.OneByteReader(strings.NewReader("abcdef")), 5, "abcde", true, nil},
		{"error", io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(boom)), 4, "ab", false, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, more, err := tail.Head(tt.r, tt.n)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.want, string(got), "Head(%d) bytes", tt.n)
			assert.Equal(t, tt.more, more, "Head(%d) more", tt.n)
		})
	}
}

func BenchmarkBufferWrite(b *testing.B) {
	for _, size := range []int{64, 4096, 65536} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.ReportAllocs()
			buf := tail.New(8 << 10)
			p := bytes.Repeat([]byte("x"), size)
			b.SetBytes(int64(size))
			for b.Loop() {
				_, _ = buf.Write(p)
			}
		})
	}
}
