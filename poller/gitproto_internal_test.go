package poller

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

var fuzzWant = map[string]bool{"refs/heads/main": true, "refs/tags/v1": true, "HEAD": true}

// FuzzGitResponses: whatever a server sends, the parsers return an answer
// or an error, never panic, and never report an object that is not an
// object name.
func FuzzGitResponses(f *testing.F) {
	const a, b = "0123456789abcdef0123456789abcdef01234567", "89abcdef0123456789abcdef0123456789abcdef"
	pkt := func(s string) string { return string(appendPkt(nil, s)) }
	f.Add([]byte(pkt("# service=git-upload-pack\n") + "0000" + pkt("version 2\n") + pkt("ls-refs=unborn\n") + pkt("object-format=sha1\n") + "0000"))
	f.Add([]byte(pkt("# service=git-upload-pack\n") + "0000" + pkt(a+" HEAD\x00multi_ack symref=HEAD:refs/heads/main\n") +
		pkt(a+" refs/heads/main\n") + pkt(b+" refs/tags/v1\n") + pkt(a+" refs/tags/v1^{}\n") + "0000"))
	f.Add([]byte(pkt(a+" refs/heads/main symref-target:x\n") + pkt(b+" refs/tags/v1 peeled:"+a+"\n") + pkt("unborn HEAD\n") + "0000"))
	f.Add([]byte("0004000100020000"))
	f.Add([]byte("fff0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(refs map[string]string) {
			for name, obj := range refs {
				if !fuzzWant[name] || !isObjectName(obj) {
					t.Fatalf("reported %q -> %q", name, obj)
				}
			}
		}
		if ad, err := readAdvertisement(bytes.NewReader(data), fuzzWant); err == nil && !ad.v2 {
			check(ad.refs)
		}
		if refs, err := readLsRefs(bytes.NewReader(data), fuzzWant); err == nil {
			check(refs)
		}
	})
}

func TestPktLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind pktKind
		data string
		err  error
	}{
		{"0000", pktFlush, "", nil},
		{"0001", pktDelim, "", nil},
		{"0002", pktEnd, "", nil},
		{"0009hello", pktData, "hello", nil},
		{"000ahello\n", pktData, "hello", nil},
		{"0004", pktData, "", nil},
		{"0003", 0, "", errMalformed},
		{"fff1", 0, "", errMalformed},
		{"00zz", 0, "", errMalformed},
		{"000ahel", 0, "", io.ErrUnexpectedEOF},
		{"00", 0, "", io.ErrUnexpectedEOF},
		{"", 0, "", io.ErrUnexpectedEOF},
	} {
		kind, data, err := newPktReader(strings.NewReader(tc.in)).next()
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("next(%q) = %v; want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || kind != tc.kind || string(data) != tc.data {
			t.Errorf("next(%q) = %v, %q, %v; want %v, %q", tc.in, kind, data, err, tc.kind, tc.data)
		}
	}
}

// TestLsRefsRequest: the command as gitprotocol-v2(5) spells it.
func TestLsRefsRequest(t *testing.T) {
	got := string(lsRefsRequest([]string{"refs/heads/main"}, "sha1"))
	want := "0014command=ls-refs\n0001" + "0009peel\n" + "001fref-prefix refs/heads/main\n" + "0000"
	if got != want {
		t.Errorf("lsRefsRequest = %q; want %q", got, want)
	}
}
