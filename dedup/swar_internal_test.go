package dedup

import "testing"

func TestPrintableASCIIExhaustive(t *testing.T) {
	for pos := 0; pos < 9; pos++ {
		for c := 0; c < 256; c++ {
			b := []byte("abcdefghijklmnop")
			b[pos] = byte(c)
			want := c >= 0x20 && c < 0x7f
			if got := printableASCII(string(b)); got != want {
				t.Fatalf("pos %d byte %#x: got %v want %v", pos, c, got, want)
			}
		}
	}
}
