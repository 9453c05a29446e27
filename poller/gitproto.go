package poller

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// This file speaks the part of git's smart HTTP protocol that a poll needs:
// which object a few refs point to. With protocol version 2 that is one GET
// of the capability advertisement and one POST of an ls-refs command that
// names the refs by prefix, so the answer has a few lines however many refs
// the repository has (pull-request refs run into the tens of thousands).
// Servers without version 2 answer the GET with their whole ref
// advertisement (version 0), which is read and filtered. The protocol is
// described in gitprotocol-http(5), gitprotocol-v2(5) and
// gitprotocol-common(5). go-git speaks version 0 only, and running git costs
// a process and a TLS handshake per poll: that is why it is written here.

// Limits on what a server may send: a v0 advertisement lists every ref
// (about 60 bytes each), an ls-refs answer only the refs asked for.
const (
	maxAdvertisement = 64 << 20
	maxLsRefs        = 16 << 20
	maxPktLine       = 65520 // LARGE_PACKET_MAX of git
)

// errMalformed is wrapped by the error of an answer that is not what the
// protocol allows.
var errMalformed = errors.New("malformed git protocol response")

// pktKind is what a pkt-line is.
type pktKind uint8

const (
	pktData  pktKind = iota
	pktFlush         // 0000: end of a message
	pktDelim         // 0001: end of a section
	pktEnd           // 0002: end of a stateless response
)

// pktReader reads pkt-lines: four hexadecimal digits of length (including
// themselves), then the data.
type pktReader struct {
	r   *bufio.Reader
	buf []byte // grown to the longest line read
}

func newPktReader(r io.Reader) *pktReader {
	return &pktReader{r: bufio.NewReaderSize(r, 4<<10)}
}

// next returns the next pkt-line. The data, without a trailing newline, is
// valid until the next call. A stream that ends before a flush is
// io.ErrUnexpectedEOF.
func (p *pktReader) next() (pktKind, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	n := 0
	for _, c := range hdr {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, nil, fmt.Errorf("%w: pkt-line length %q", errMalformed, hdr[:])
		}
		n = n<<4 | int(v)
	}
	switch {
	case n == 0:
		return pktFlush, nil, nil
	case n == 1:
		return pktDelim, nil, nil
	case n == 2:
		return pktEnd, nil, nil
	case n < 4 || n > maxPktLine:
		return 0, nil, fmt.Errorf("%w: pkt-line length %d", errMalformed, n)
	}
	if cap(p.buf) < n-4 {
		p.buf = make([]byte, n-4, max(n-4, 2*cap(p.buf)))
	}
	data := p.buf[:n-4]
	if _, err := io.ReadFull(p.r, data); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return pktData, bytes.TrimSuffix(data, []byte("\n")), nil
}

// appendPkt appends s as a pkt-line.
func appendPkt(b []byte, s string) []byte {
	return append(fmt.Appendf(b, "%04x", len(s)+4), s...)
}

// advertisement is what a server says to GET info/refs.
type advertisement struct {
	v2   bool
	caps map[string]string // v2 capabilities: name -> value ("" if none)
	refs map[string]string // v0: the refs asked for that exist -> object, peeled
}

// readAdvertisement reads the answer to GET info/refs?service=git-upload-pack.
// With version 0 it keeps the refs in want (and their peeled objects).
func readAdvertisement(r io.Reader, want map[string]bool) (*advertisement, error) {
	p := newPktReader(r)
	kind, line, err := p.next()
	if err != nil {
		return nil, err
	}
	if kind == pktData && bytes.HasPrefix(line, []byte("# service=")) {
		// Servers speaking v0 (and some speaking v2) open with the
		// service name and a flush.
		if string(line) != "# service=git-upload-pack" {
			return nil, fmt.Errorf("%w: service %q", errMalformed, line)
		}
		if kind, _, err = p.next(); err != nil {
			return nil, err
		} else if kind != pktFlush {
			return nil, fmt.Errorf("%w: no flush after the service line", errMalformed)
		}
		if kind, line, err = p.next(); err != nil {
			return nil, err
		}
	}
	if kind == pktData && string(line) == "version 2" {
		ad := &advertisement{v2: true, caps: make(map[string]string)}
		for {
			kind, line, err := p.next()
			switch {
			case err != nil:
				return nil, err
			case kind == pktFlush:
				return ad, nil
			case kind != pktData:
				return nil, fmt.Errorf("%w: packet kind %d in capabilities", errMalformed, kind)
			}
			k, v, _ := strings.Cut(string(line), "=")
			ad.caps[k] = v
		}
	}
	if kind == pktData && string(line) == "version 1" {
		if kind, line, err = p.next(); err != nil {
			return nil, err
		}
	}
	ad := &advertisement{refs: make(map[string]string)}
	peel := make(map[string]string)
	for first := true; ; first = false {
		switch {
		case kind == pktFlush:
			for name, obj := range peel {
				if _, ok := ad.refs[name]; ok {
					ad.refs[name] = obj
				}
			}
			return ad, nil
		case kind != pktData:
			return nil, fmt.Errorf("%w: packet kind %d in ref advertisement", errMalformed, kind)
		}
		if first {
			line, _, _ = bytes.Cut(line, []byte{0}) // capabilities follow the first ref
		}
		obj, name, ok := strings.Cut(string(line), " ")
		if !ok || !isObjectName(obj) {
			return nil, fmt.Errorf("%w: ref line %q", errMalformed, line)
		}
		if base, ok := strings.CutSuffix(name, peeled); ok && want[base] {
			peel[base] = obj
		} else if want[name] {
			ad.refs[name] = obj
		}
		if kind, line, err = p.next(); err != nil {
			return nil, err
		}
	}
}

// lsRefsRequest is the body of an ls-refs command for refs.
func lsRefsRequest(refs []string, objectFormat string) []byte {
	b := appendPkt(nil, "command=ls-refs\n")
	if objectFormat != "" && objectFormat != "sha1" {
		b = appendPkt(b, "object-format="+objectFormat+"\n")
	}
	b = append(b, "0001"...)
	b = appendPkt(b, "peel\n")
	for _, r := range refs {
		b = appendPkt(b, "ref-prefix "+r+"\n")
	}
	return append(b, "0000"...)
}

// readLsRefs reads the answer to ls-refs, keeping the refs in want: lines of
// "<object> <name>" with attributes such as "peeled:<object>", up to a flush.
func readLsRefs(r io.Reader, want map[string]bool) (map[string]string, error) {
	p := newPktReader(r)
	found := make(map[string]string)
	for {
		kind, line, err := p.next()
		switch {
		case err != nil:
			return nil, err
		case kind == pktFlush:
			return found, nil
		case kind != pktData:
			return nil, fmt.Errorf("%w: packet kind %d in ls-refs", errMalformed, kind)
		}
		fields := strings.Split(string(line), " ")
		if len(fields) < 2 {
			return nil, fmt.Errorf("%w: ls-refs line %q", errMalformed, line)
		}
		obj, name := fields[0], fields[1]
		if obj == "unborn" {
			continue // HEAD of an empty repository
		}
		if !isObjectName(obj) {
			return nil, fmt.Errorf("%w: ls-refs line %q", errMalformed, line)
		}
		for _, attr := range fields[2:] {
			if po, ok := strings.CutPrefix(attr, "peeled:"); ok {
				if !isObjectName(po) {
					return nil, fmt.Errorf("%w: ls-refs line %q", errMalformed, line)
				}
				obj = po
			}
		}
		if want[name] {
			found[name] = obj
		}
	}
}

// userAgent starts with "git/", as some hosts require of a client before
// they speak protocol version 2 to it.
const userAgent = "git/2 (dedupdeploy)"

// defaultClient is the client of git sources that have none, neither of
// their own nor from their Poller: keep-alive connections, enough of them
// per host for many keys polling one server.
var defaultClient = &http.Client{Transport: func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	return t
}()}

// httpRemote is a remote reached over smart HTTP.
type httpRemote struct {
	base   *url.URL // without user info, without a trailing slash
	user   *url.Userinfo
	header http.Header
	client *http.Client
	what   string // for errors: the URL, password redacted
}

func newHTTPRemote(remote string, header http.Header, client *http.Client) (*httpRemote, error) {
	u, err := url.Parse(remote)
	if err != nil {
		return nil, err
	}
	h := &httpRemote{user: u.User, header: header, client: client, what: redactURL(u)}
	u.User = nil
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	h.base = u
	return h, nil
}

func (h *httpRemote) request(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	u := *h.base
	u.Path += path
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, err
	}
	if h.header != nil {
		req.Header = h.header.Clone()
	}
	if a := basicAuth(h.user, req.Header); a != "" {
		req.Header.Set("Authorization", a)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
	req.Header.Set("Git-Protocol", "version=2")
	return req, nil
}

// do sends req and checks the answer's status and type. The caller must
// close the body.
func (h *httpRemote) do(req *http.Request, contentType string) (*http.Response, error) {
	resp, err := h.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its URL is ours, without the password
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, h.what, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if msg := strings.TrimSpace(strings.ToValidUTF8(string(body), "?")); msg != "" {
			return nil, fmt.Errorf("%s %s: %s: %q", req.Method, h.what, resp.Status, msg)
		}
		return nil, fmt.Errorf("%s %s: %s", req.Method, h.what, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != contentType {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: Content-Type %q, not %q: not a smart git HTTP server", req.Method, h.what, ct, contentType)
	}
	return resp, nil
}

// lsRefs returns the objects that refs point to (peeled), leaving out the
// refs that do not exist.
func (h *httpRemote) lsRefs(ctx context.Context, refs []string) (map[string]string, error) {
	want := make(map[string]bool, len(refs))
	for _, r := range refs {
		want[r] = true
	}
	req, err := h.request(ctx, http.MethodGet, "/info/refs", nil)
	if err != nil {
		return nil, err
	}
	req.URL.RawQuery = "service=git-upload-pack"
	req.Header.Set("Pragma", "no-cache")
	resp, err := h.do(req, "application/x-git-upload-pack-advertisement")
	if err != nil {
		return nil, err
	}
	ad, err := readBody(resp, maxAdvertisement, func(r io.Reader) (*advertisement, error) { return readAdvertisement(r, want) })
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", h.what, err)
	}
	if !ad.v2 {
		return ad.refs, nil
	}
	if _, ok := ad.caps["ls-refs"]; !ok {
		return nil, fmt.Errorf("GET %s: %w: protocol version 2 without ls-refs", h.what, errMalformed)
	}
	base := h
	if u := resp.Request.URL; u.Path != h.base.Path+"/info/refs" {
		// Redirected: git sends the command where the advertisement came
		// from.
		b := *h
		b.base = &url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/info/refs")}
		base = &b
	}
	req, err = base.request(ctx, http.MethodPost, "/git-upload-pack", lsRefsRequest(refs, ad.caps["object-format"]))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	req.Header.Set("Accept", "application/x-git-upload-pack-result")
	resp, err = base.do(req, "application/x-git-upload-pack-result")
	if err != nil {
		return nil, err
	}
	found, err := readBody(resp, maxLsRefs, func(r io.Reader) (map[string]string, error) { return readLsRefs(r, want) })
	if err != nil {
		return nil, fmt.Errorf("POST %s: ls-refs: %w", h.what, err)
	}
	return found, nil
}

// readBody parses the body of resp, read through a limit, and closes it
// after reading what remains of a short one, so that the connection is
// reused.
func readBody[T any](resp *http.Response, limit int64, parse func(io.Reader) (T, error)) (T, error) {
	defer resp.Body.Close()
	lr := &io.LimitedReader{R: resp.Body, N: limit + 1}
	v, err := parse(lr)
	if lr.N <= 0 {
		var zero T
		return zero, fmt.Errorf("response longer than %d bytes", limit)
	}
	if err != nil {
		var zero T
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: truncated: %w", errMalformed, err)
		}
		return zero, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return v, nil
}
