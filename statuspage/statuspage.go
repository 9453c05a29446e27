package statuspage

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// Source is what the page reads. *dedup.Manager satisfies it, and so may
// any Manager that reports dedup.Status values. Both methods must be safe
// for concurrent use and must not block for long: every request calls
// one of them.
type Source interface {
	Statuses() []dedup.Status
	Status(key string) (dedup.Status, bool)
}

var _ Source = (*dedup.Manager)(nil)

// An Option configures a Handler.
type Option func(*page)

// WithClock sets the clock that "running for" is measured with; it should
// be the Manager's. The default is the time package.
func WithClock(c dedup.Clock) Option {
	return func(p *page) {
		if c == nil {
			panic("statuspage: nil Clock")
		}
		p.clock = c
	}
}

// Handler returns a read-only http.Handler that shows the state of the
// keys of src. Mount it at prefix, which must start and end with "/"
// (Handler panics otherwise):
//
//	GET prefix           every key, sorted by key
//	GET prefix{key}      one key (a key may hold "/"); 404 if src has none
//	GET prefix?key={key} the same, for any key (http.ServeMux redirects
//	                     paths that are not clean, such as "a//b")
//
// Each answers in JSON or as an HTML table: ?format=json or ?format=html
// decides, else the Accept header (HTML when it names text/html, as
// browsers' does; JSON otherwise, as for curl). Other methods than GET and
// HEAD get 405. The handler is safe for concurrent use and calls src once
// per request.
func Handler(prefix string, src Source, opts ...Option) http.Handler {
	if !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") {
		panic("statuspage: prefix " + prefix + " does not start and end with /")
	}
	if src == nil {
		panic("statuspage: nil Source")
	}
	p := &page{prefix: prefix, src: src, clock: dedup.SystemClock{}}
	for _, o := range opts {
		o(p)
	}
	return p
}

type page struct {
	prefix string
	src    Source
	clock  dedup.Clock
}

func (p *page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Add("Vary", "Accept")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "statuspage: read-only: use GET", http.StatusMethodNotAllowed)
		return
	}
	asJSON := !strings.Contains(r.Header.Get("Accept"), "text/html")
	switch f := r.URL.Query().Get("format"); f {
	case "":
	case "json":
		asJSON = true
	case "html":
		asJSON = false
	default:
		http.Error(w, "statuspage: format must be json or html", http.StatusBadRequest)
		return
	}
	key, ok := strings.CutPrefix(r.URL.Path, p.prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if q := r.URL.Query(); key == "" && q.Has("key") {
		key = q.Get("key")
		if key == "" {
			http.Error(w, "statuspage: empty key", http.StatusBadRequest)
			return
		}
	}
	now := p.clock.Now()
	var sts []dedup.Status
	if key == "" {
		sts = p.src.Statuses()
	} else {
		st, found := p.src.Status(key)
		if !found {
			if asJSON {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "no key " + strconv.Quote(key)})
			} else {
				http.Error(w, "statuspage: no key "+strconv.Quote(key), http.StatusNotFound)
			}
			return
		}
		sts = []dedup.Status{st}
	}
	if asJSON {
		// dedup.Status marshals itself: a client decodes it back into a
		// dedup.Status.
		if key == "" {
			if sts == nil {
				sts = []dedup.Status{} // [], not null
			}
			writeJSON(w, http.StatusOK, listJSON{Time: now, Keys: sts})
		} else {
			writeJSON(w, http.StatusOK, sts[0])
		}
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	view := htmlView{Prefix: p.prefix, Time: now.Format(timeLayout), One: key != ""}
	for _, k := range sts {
		view.Rows = append(view.Rows, p.row(k, now))
	}
	if err := pageTemplate.Execute(w, view); err != nil {
		// The header is gone: all that is left is to stop writing.
		return
	}
}

// listJSON is the JSON answer for every key.
type listJSON struct {
	Time time.Time      `json:"time"` // when the page was made, by its clock
	Keys []dedup.Status `json:"keys"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // a failed write means the client went away
}

// row is one key as the HTML table shows it.
type row struct {
	Key, Href                 string
	Live, Running, Pending    string
	RunningNote, PendingNote  string
	Slow                      bool
	Runs                      string
	Mean, P90                 string
	Samples                   int
	LastStarted, LastFinished string
	ErrLine, ErrFull          string // first line of the last error (or the Store's), and all of it when longer
}

func (p *page) row(k dedup.Status, now time.Time) row {
	r := row{
		Key: k.Key, Href: p.href(k.Key),
		Live: string(k.Live), Running: string(k.Running), Pending: string(k.Pending), Slow: k.Slow,
		Runs:        itoa(k.Deployed) + " ok, " + itoa(k.Failures) + " failed, " + itoa(k.Superseded) + " superseded",
		Samples:     k.Baseline.Samples,
		LastStarted: formatTime(k.LastStarted), LastFinished: formatTime(k.LastFinished),
	}
	if k.Baseline.Samples > 0 {
		r.Mean = formatDuration(k.Baseline.Mean)
		r.P90 = formatDuration(k.Baseline.P90)
	}
	if k.Running != "" && !k.LastStarted.IsZero() {
		r.RunningNote = "attempt " + itoa(k.Attempt) + ", for " + formatDuration(max(now.Sub(k.LastStarted), 0))
	}
	switch {
	case k.Pending == "":
	case k.Queued:
		r.PendingNote = "waits for a slot"
	case !k.NextStart.IsZero():
		r.PendingNote = "not before " + formatTime(k.NextStart)
		if k.Running == "" && k.Attempt > 0 {
			r.PendingNote = "retry " + itoa(k.Attempt+1) + ", " + r.PendingNote
		}
	}
	var errText string
	switch {
	case k.LastErr != nil:
		errText = fmt.Sprint(k.LastErr) // fmt survives an Error method that panics
	case k.StoreErr != nil:
		errText = "store: " + fmt.Sprint(k.StoreErr)
	}
	r.ErrLine, _, _ = strings.Cut(errText, "\n")
	if len(r.ErrLine) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(r.ErrLine[cut]) {
			cut--
		}
		r.ErrLine = r.ErrLine[:cut] + "…"
	}
	if r.ErrLine != errText {
		r.ErrFull = errText
	}
	return r
}

// href is the link to the page of key: prefix + key, each "/"-separated
// segment escaped so that a key with "?", "#" or "%" links to itself. A
// key that is not a clean path ("a//b", "../x", "x/") would be cleaned
// and redirected by http.ServeMux, so it goes in the query instead.
func (p *page) href(key string) string {
	if path.Clean("/"+key) != "/"+key {
		return p.prefix + "?key=" + url.QueryEscape(key)
	}
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return p.prefix + strings.Join(segs, "/")
}

const timeLayout = "2006-01-02 15:04:05 MST"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(timeLayout)
}

// formatDuration shows a duration to the second, or to the millisecond
// below one second.
func formatDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func itoa(n int) string { return strconv.Itoa(n) }

type htmlView struct {
	Prefix string
	Time   string
	One    bool
	Rows   []row
}

//go:embed page.html
var files embed.FS

var pageTemplate = template.Must(template.ParseFS(files, "page.html"))
