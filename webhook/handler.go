package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// Poller is what the default mode needs: *poller.Poller has it. PollNow
// must not block on the poll (the Poller's does not).
type Poller interface {
	PollNow(key string) error
}

// Notifier is what direct mode needs: *dedup.Manager has it, and so does
// any Manager the poller accepts. If it is also a Submitter (as
// *dedup.Manager and *pgdedup.Manager are), the Handler calls Submit
// instead and says in its reply what each trigger did.
type Notifier interface {
	Notify(key string, rev dedup.Revision, opts ...dedup.TriggerOption) error
}

// Submitter is a Notifier that also says what a trigger did, without a
// ticket that nobody would wait for.
type Submitter interface {
	Submit(key string, rev dedup.Revision, opts ...dedup.TriggerOption) (dedup.Action, dedup.Revision, error)
}

// Defaults of the options.
const (
	// DefaultMaxBody bounds a body: GitHub caps its payloads at 25 MB,
	// but a push of twenty commits is tens of kilobytes.
	DefaultMaxBody = 4 << 20
	// DefaultDeliveryMemory is how many delivery IDs a Handler
	// remembers.
	DefaultDeliveryMemory = 4096
	// DefaultTolerance is how far a Standard Webhooks timestamp may be
	// from the clock, either way: the specification's suggestion.
	DefaultTolerance = 5 * time.Minute
)

// An Option configures a Handler.
type Option func(*config)

type config struct {
	maxBody   int64
	memory    int
	tolerance time.Duration
	clock     dedup.Clock
	log       *slog.Logger
}

// WithMaxBody bounds the body: a longer one is answered 413 after reading
// at most n bytes of it. Default DefaultMaxBody; n must be positive.
func WithMaxBody(n int64) Option { return func(c *config) { c.maxBody = n } }

// WithDeliveryMemory sets how many recent delivery IDs the Handler
// remembers; a delivery whose ID it remembers is answered 200 and does
// nothing. The memory is fixed: n hashes of 16 bytes, in a ring and a
// map. Zero remembers nothing; default DefaultDeliveryMemory.
func WithDeliveryMemory(n int) Option { return func(c *config) { c.memory = n } }

// WithTolerance sets how far a Standard Webhooks timestamp may be from the
// clock, in either direction. Default DefaultTolerance; at least a second.
func WithTolerance(d time.Duration) Option { return func(c *config) { c.tolerance = d } }

// WithClock sets the clock timestamps are checked against, such as the
// deduptest.Clock of a test. Default the real clock.
func WithClock(c dedup.Clock) Option { return func(cfg *config) { cfg.clock = c } }

// WithLogger logs every delivery: what it did at Info, what it ignored at
// Debug, what was refused at Warn. Logs carry the provider, event,
// delivery ID, status, result and keys, never a secret, a signature or a token.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// Handler is an http.Handler that receives one provider's deliveries. It
// is safe for concurrent use and starts no goroutine.
type Handler struct {
	p      *provider
	router Router
	poll   Poller
	notify Notifier
	trig   Submitter
	config
	seen *seen
}

// New returns a Handler that verifies p's deliveries, routes their pushes
// with r and asks target to poll each routed key now. The poll, not the
// delivery, decides the revision: a late, reordered or replayed delivery
// never rolls a key back. It returns an error wrapping dedup.ErrInvalid
// for a bad secret, a nil Router or target, or a bad option value.
func New(p Provider, r Router, target Poller, opts ...Option) (*Handler, error) {
	if target == nil {
		return nil, fmt.Errorf("webhook: nil Poller: %w", dedup.ErrInvalid)
	}
	return newHandler(p, r, opts, func(h *Handler) { h.poll = target })
}

// NewDirect returns a Handler that triggers each pushed revision (a
// commit, an image digest) of a routed key on target, for users without
// a poller. It trusts delivery order: providers retry and may deliver out
// of order, and a late delivery of an older commit deploys that older
// commit (a rollback, as far as the Manager can tell). Prefer New with a
// poller where the source can be polled. Pushes without a revision
// (deletions, Docker Hub's) trigger nothing. Errors as New.
func NewDirect(p Provider, r Router, target Notifier, opts ...Option) (*Handler, error) {
	if target == nil {
		return nil, fmt.Errorf("webhook: nil Notifier: %w", dedup.ErrInvalid)
	}
	return newHandler(p, r, opts, func(h *Handler) {
		h.notify = target
		h.trig, _ = target.(Submitter)
	})
}

func newHandler(p Provider, r Router, opts []Option, set func(*Handler)) (*Handler, error) {
	switch {
	case p.p == nil:
		return nil, fmt.Errorf("%w: %w", errNoProvider, dedup.ErrInvalid)
	case p.p.err != nil:
		return nil, p.p.err
	case r == nil:
		return nil, fmt.Errorf("webhook: nil Router: %w", dedup.ErrInvalid)
	}
	h := &Handler{p: p.p, router: r, config: config{
		maxBody: DefaultMaxBody, memory: DefaultDeliveryMemory, tolerance: DefaultTolerance, clock: dedup.SystemClock{},
	}}
	for _, o := range opts {
		o(&h.config)
	}
	switch {
	case h.maxBody <= 0:
		return nil, fmt.Errorf("webhook: max body %d not positive: %w", h.maxBody, dedup.ErrInvalid)
	case h.memory < 0:
		return nil, fmt.Errorf("webhook: delivery memory %d negative: %w", h.memory, dedup.ErrInvalid)
	case h.tolerance < time.Second:
		return nil, fmt.Errorf("webhook: tolerance %v under a second: %w", h.tolerance, dedup.ErrInvalid)
	case h.clock == nil:
		return nil, fmt.Errorf("webhook: nil Clock: %w", dedup.ErrInvalid)
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.seen = newSeen(h.memory)
	set(h)
	return h, nil
}

// The results a Reply reports.
const (
	ResultPolled    = "polled"    // the routed keys were asked to poll
	ResultTriggered = "triggered" // direct mode: the pushed revisions were triggered
	ResultIgnored   = "ignored"   // nothing to do; Reason says why
	ResultDuplicate = "duplicate" // a delivery ID seen recently
	ResultRejected  = "rejected"  // 4xx: Reason says what was wrong
	ResultFailed    = "failed"    // a key's poll or trigger failed; see Keys
)

// Reply is the JSON body of every answer.
type Reply struct {
	// Provider is the Provider's Name.
	Provider string `json:"provider"`
	// Event is the event the delivery names, such as "push".
	Event string `json:"event,omitempty"`
	// Delivery is the delivery ID (at most its first 128 bytes).
	Delivery string `json:"delivery,omitempty"`
	// Result is one of the Result constants.
	Result string `json:"result"`
	// Reason says why nothing or not everything was done.
	Reason string `json:"reason,omitempty"`
	// Keys are the routed keys and what was done to each.
	Keys []KeyReply `json:"keys,omitempty"`
}

// KeyReply is what a delivery did to one key.
type KeyReply struct {
	// Key is the routed key.
	Key string `json:"key"`
	// Repository and Ref are the push's that routed to Key.
	Repository string `json:"repository"`
	Ref        string `json:"ref,omitempty"`
	// Revision is what the push names: in the default mode only
	// information, since the poll decides.
	Revision string `json:"revision,omitempty"`
	// Action is "poll" (default mode), "notified" (direct mode) or, when
	// the target is a Submitter, what the trigger did: "started", "queued",
	// "joined-running", "joined-pending" or "unchanged".
	Action string `json:"action,omitempty"`
	// Replaced is the pending revision the trigger superseded, if any.
	Replaced string `json:"replaced,omitempty"`
	// Error is why the poll or trigger was refused.
	Error string `json:"error,omitempty"`
}

// ServeHTTP verifies, parses and acts on one delivery, and answers with a
// Reply:
//
//	202 the routed keys were polled or triggered; also an event that is not
//	    a push, or a push that routes to no key (Reason says which)
//	200 a ping, a deletion, or a delivery ID seen recently: nothing done
//	400 a malformed body (in direct mode also a revision the Manager
//	    refuses); 401 a missing or wrong signature or token, or a
//	    timestamp outside the tolerance; 405 not a POST; 413 a body over
//	    the limit (read no further than the limit)
//	500 a poll or trigger was refused (503 if the Manager is closed): the
//	    delivery ID is forgotten, so the provider's retry acts again
//
// It blocks only to read the body; polls and deploys happen elsewhere.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reply := Reply{Provider: h.p.kind.String()}
	status := h.serve(w, r, &reply)
	h.logReply(r.Context(), status, &reply)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(reply) // an error means the client went away
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, reply *Reply) int {
	reject := func(status int, err error) int {
		reply.Result, reply.Reason = ResultRejected, err.Error()
		return status
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return reject(http.StatusMethodNotAllowed, fmt.Errorf("method %s: deliveries are POSTs", r.Method))
	}
	if r.ContentLength > h.maxBody {
		return reject(http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes over the limit of %d", r.ContentLength, h.maxBody))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return reject(http.StatusRequestEntityTooLarge, fmt.Errorf("body over the limit of %d bytes", h.maxBody))
		}
		return reject(http.StatusBadRequest, fmt.Errorf("reading the body: %w", err))
	}
	if err := h.p.verify(r, body, h.clock.Now(), h.tolerance); err != nil {
		return reject(http.StatusUnauthorized, err)
	}

	reply.Event = h.p.event(r.Header)
	id := h.p.delivery(r.Header)
	reply.Delivery = truncate(id, 128)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		// GitHub's default content type, which Gitea and Forgejo offer
		// too: the JSON is the payload field of a form. The signature
		// covers the form, checked above.
		form, err := url.ParseQuery(string(body))
		if err != nil || !form.Has("payload") {
			return reject(http.StatusBadRequest, errors.New("bad payload: a form without a payload field"))
		}
		body = []byte(form.Get("payload"))
	}
	in, err := h.p.parse(reply.Event, body)
	if err != nil {
		return reject(http.StatusBadRequest, err)
	}
	if reply.Event == "" {
		reply.Event = in.event
	}
	switch in.kind {
	case eventPing:
		reply.Result, reply.Reason = ResultIgnored, "ping"
		return http.StatusOK
	case eventOther:
		reply.Result, reply.Reason = ResultIgnored, in.reason
		if in.reason == "" {
			reply.Reason = fmt.Sprintf("event %q is not a push", reply.Event)
		}
		return http.StatusAccepted
	}

	// Claim the delivery IDs: the whole delivery's, or each registry
	// event's.
	pushes := in.pushes
	var claimed []string
	if id != "" {
		if !h.seen.claim(id) {
			reply.Result, reply.Reason = ResultDuplicate, "delivery seen recently"
			return http.StatusOK
		}
		claimed = append(claimed, id)
	}
	if in.ids != nil {
		pushes = pushes[:0:0]
		for i, p := range in.pushes {
			if in.ids[i] == "" || h.seen.claim(in.ids[i]) {
				pushes = append(pushes, p)
				if in.ids[i] != "" {
					claimed = append(claimed, in.ids[i])
				}
			}
		}
		if len(pushes) == 0 {
			reply.Result, reply.Reason = ResultDuplicate, "every event seen recently"
			return http.StatusOK
		}
	}

	status := h.act(pushes, reply)
	if status >= 500 {
		for _, id := range claimed {
			h.seen.release(id)
		}
	}
	return status
}

// act polls or triggers the keys pushes route to.
func (h *Handler) act(pushes []Push, reply *Reply) int {
	var reasons []string
	deletions := 0
	var failed error
	for _, p := range pushes {
		where := p.Repository
		if p.Ref != "" {
			where += " " + p.Ref
		}
		if p.Deleted {
			deletions++
			reasons = append(reasons, where+" deleted")
			continue
		}
		keys := h.router.Route(p)
		if len(keys) == 0 {
			reasons = append(reasons, "no route for "+where)
			continue
		}
		if h.poll == nil && p.Revision == "" {
			reasons = append(reasons, "no revision in the push of "+where+" (Docker Hub sends none); direct mode needs one")
			continue
		}
		for _, key := range keys {
			if h.poll != nil && slices.ContainsFunc(reply.Keys, func(k KeyReply) bool { return k.Key == key }) {
				continue // polled already
			}
			kr := KeyReply{Key: key, Repository: p.Repository, Ref: p.Ref, Revision: string(p.Revision)}
			var err error
			switch {
			case h.poll != nil:
				kr.Action = "poll"
				err = h.poll.PollNow(key)
			case h.trig != nil:
				var action dedup.Action
				var replaced dedup.Revision
				if action, replaced, err = h.trig.Submit(key, p.Revision); err == nil {
					kr.Action, kr.Replaced = action.String(), string(replaced)
				}
			default:
				kr.Action = "notified"
				err = h.notify.Notify(key, p.Revision)
			}
			if err != nil {
				kr.Action, kr.Error = "", err.Error()
				if failed == nil || errors.Is(err, dedup.ErrClosed) {
					failed = err
				}
			}
			reply.Keys = append(reply.Keys, kr)
		}
	}
	reply.Reason = strings.Join(reasons, "; ")
	switch {
	case failed != nil:
		reply.Result = ResultFailed
		switch {
		case errors.Is(failed, dedup.ErrClosed):
			return http.StatusServiceUnavailable
		case errors.Is(failed, dedup.ErrInvalid) && h.poll == nil:
			// The pushed revision is not one a Manager takes (a control
			// character, say): the body is at fault, and a retry would
			// not help.
			reply.Result = ResultRejected
			return http.StatusBadRequest
		}
		return http.StatusInternalServerError
	case len(reply.Keys) > 0:
		reply.Result = ResultTriggered
		if h.poll != nil {
			reply.Result = ResultPolled
		}
		return http.StatusAccepted
	}
	reply.Result = ResultIgnored
	if deletions == len(pushes) {
		return http.StatusOK
	}
	return http.StatusAccepted
}

func (h *Handler) logReply(ctx context.Context, status int, reply *Reply) {
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	case len(reply.Keys) == 0:
		level = slog.LevelDebug
	}
	if !h.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("provider", reply.Provider), slog.Int("status", status), slog.String("result", reply.Result),
	}
	if reply.Event != "" {
		attrs = append(attrs, slog.String("event", reply.Event))
	}
	if reply.Delivery != "" {
		attrs = append(attrs, slog.String("delivery", reply.Delivery))
	}
	if reply.Reason != "" {
		attrs = append(attrs, slog.String("reason", reply.Reason))
	}
	for _, k := range reply.Keys {
		v := k.Action
		if k.Error != "" {
			v = "error: " + k.Error
		}
		attrs = append(attrs, slog.String("key."+k.Key, v))
	}
	h.log.LogAttrs(ctx, level, "webhook delivery", attrs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

var _ Submitter = (*dedup.Manager)(nil)
