package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// maxBody bounds a request body: a revision is at most dedup.MaxLen bytes.
const maxBody = 64 << 10

// newHandler returns the webhook's routes, triggering m:
//
//	POST /deploy/{key}  trigger a deploy; ?wait=1 waits for its result
//	GET  /status        m.Statuses()
func newHandler(m *dedup.Manager) http.Handler {
	h := &handler{m: m}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /deploy/{key}", h.deploy)
	mux.HandleFunc("GET /status", h.status)
	return mux
}

type handler struct {
	m *dedup.Manager
}

// triggered is the 202 answer to POST /deploy/{key}.
type triggered struct {
	Key       string `json:"key"`
	Requested string `json:"requested"`
	// Action is what the trigger did: started, queued, joined-running,
	// joined-pending, superseded (Replaced is the superseded revision) or
	// unchanged.
	Action   string `json:"action"`
	Replaced string `json:"replaced,omitempty"`
	Message  string `json:"message"`
	// The key's state right after the trigger.
	Live    string `json:"live,omitempty"`
	Running string `json:"running,omitempty"`
	Pending string `json:"pending,omitempty"`
}

// result is the answer to POST /deploy/{key}?wait=1.
type result struct {
	Key       string    `json:"key"`
	Requested string    `json:"requested"`
	Revision  string    `json:"revision"` // what the deploy that settled the request deployed
	Outcome   string    `json:"outcome"`  // deployed, superseded, unchanged, failed, aborted
	Error     string    `json:"error,omitempty"`
	Attempts  int       `json:"attempts"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
}

func (h *handler) deploy(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	rev, err := revisionOf(w, r)
	if err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, err)
		return
	}

	t, reply, err := h.trigger(key, rev)
	switch {
	case errors.Is(err, dedup.ErrInvalid):
		writeError(w, http.StatusBadRequest, err)
		return
	case errors.Is(err, dedup.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
		return
	}

	if !isTrue(r.URL.Query().Get("wait")) {
		writeJSON(w, http.StatusAccepted, reply)
		return
	}
	res, err := t.Wait(r.Context())
	if res.Outcome == 0 { // Wait's answer when the request's context ended first
		return // the client went away; the deploy goes on
	}
	out := result{
		Key: res.Key, Requested: string(res.Requested), Revision: string(res.Revision),
		Outcome: res.Outcome.String(), Attempts: res.Attempts, Started: res.Started, Finished: res.Finished,
	}
	status := http.StatusOK
	if err != nil {
		out.Error = err.Error()
		status = http.StatusBadGateway // the deploy failed
		if res.Outcome == dedup.Aborted {
			status = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, status, out)
}

// trigger triggers rev of key and describes what that did.
func (h *handler) trigger(key string, rev dedup.Revision) (*dedup.Ticket, triggered, error) {
	t, err := h.m.Trigger(key, rev)
	if err != nil {
		return nil, triggered{}, err
	}
	after, _ := h.m.Status(key) // deploys may have started or ended since
	reply := triggered{Key: key, Requested: string(rev), Replaced: string(t.Replaced()),
		Live: string(after.Live), Running: string(after.Running), Pending: string(after.Pending)}
	switch a := t.Action(); {
	case a == dedup.ActionUnchanged:
		reply.Action, reply.Message = "unchanged", fmt.Sprintf("%s is live already; nothing to do", rev)
	case t.Replaced() != "":
		reply.Action = "superseded"
		reply.Message = fmt.Sprintf("superseded pending %s; %s", t.Replaced(), when(a, rev, after))
	case a == dedup.ActionJoinedPending:
		reply.Action, reply.Message = a.String(), fmt.Sprintf("%s was queued already; joined it", rev)
	case a == dedup.ActionJoinedRunning:
		reply.Action, reply.Message = a.String(), fmt.Sprintf("%s is deploying already; joined that deploy", rev)
	case a == dedup.ActionStarted:
		reply.Action, reply.Message = a.String(), when(a, rev, after)
	default:
		reply.Action, reply.Message = a.String(), "queued; "+when(a, rev, after)
	}
	return t, reply, nil
}

// when says when rev, which the trigger started or queued (action a),
// deploys; st is the key's state just after the trigger.
func when(a dedup.Action, rev dedup.Revision, st dedup.Status) string {
	switch {
	case a == dedup.ActionStarted:
		return fmt.Sprintf("deploy of %s started", rev)
	case st.Running == "":
		return "deploys next"
	case st.Running == rev: // a rollback to the running revision
		return fmt.Sprintf("the running deploy of %s covers it, unless it fails", st.Running)
	}
	return fmt.Sprintf("deploys when the running deploy of %s ends", st.Running)
}

// revisionOf reads the requested revision from a JSON body
// {"revision":"..."}, a rev form field or a rev query parameter; body and
// query must not disagree. A body that starts with "{" is read as JSON
// whatever its Content-Type, since curl -d labels JSON as a form. An empty
// revision is left to the Manager to refuse.
func revisionOf(w http.ResponseWriter, r *http.Request) (dedup.Revision, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return "", err
	}
	fromQuery := r.URL.Query().Get("rev")
	fromBody, err := bodyRevision(r, body)
	if err != nil {
		return "", err
	}
	switch {
	case fromBody == nil:
		return dedup.Revision(fromQuery), nil
	case fromQuery != "" && fromQuery != *fromBody:
		return "", fmt.Errorf("revision %q in the body and %q in the query differ", *fromBody, fromQuery)
	}
	return dedup.Revision(*fromBody), nil
}

// bodyRevision returns the revision in body, nil if it has none.
func bodyRevision(r *http.Request, body []byte) (*string, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case mt == "application/json" || trimmed[0] == '{':
		var in struct {
			Revision *string `json:"revision"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, fmt.Errorf("bad JSON body: %w", err)
		}
		return in.Revision, nil
	case mt == "multipart/form-data":
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := r.ParseMultipartForm(maxBody); err != nil {
			return nil, fmt.Errorf("bad form: %w", err)
		}
		return formRevision(r.MultipartForm.Value)
	default:
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("bad form: %w", err)
		}
		return formRevision(vals)
	}
}

func formRevision(vals map[string][]string) (*string, error) {
	revs, ok := vals["rev"]
	if !ok {
		return nil, nil
	}
	if len(revs) > 1 {
		return nil, fmt.Errorf("%d revisions in the form; want one", len(revs))
	}
	return &revs[0], nil
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// statusJSON is dedup.Status with its errors as strings.
type statusJSON struct {
	Key          string    `json:"key"`
	Live         string    `json:"live,omitempty"`
	Running      string    `json:"running,omitempty"`
	Pending      string    `json:"pending,omitempty"`
	LastErr      string    `json:"last_error,omitempty"`
	Attempt      int       `json:"attempt,omitempty"`
	Queued       bool      `json:"queued,omitempty"`
	NextStart    time.Time `json:"next_start,omitzero"`
	Runs         int       `json:"runs"`
	Deployed     int       `json:"deployed"`
	Failures     int       `json:"failures"`
	Superseded   int       `json:"superseded"`
	StoreErr     string    `json:"store_error,omitempty"`
	LastStarted  time.Time `json:"last_started,omitzero"`
	LastFinished time.Time `json:"last_finished,omitzero"`
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	sts := h.m.Statuses()
	out := make([]statusJSON, len(sts))
	for i, s := range sts {
		out[i] = statusJSON{
			Key: s.Key, Live: string(s.Live), Running: string(s.Running), Pending: string(s.Pending),
			LastErr: errString(s.LastErr), Attempt: s.Attempt, Queued: s.Queued, NextStart: s.NextStart,
			Runs: s.Runs, Deployed: s.Deployed, Failures: s.Failures, Superseded: s.Superseded,
			StoreErr: errString(s.StoreErr), LastStarted: s.LastStarted, LastFinished: s.LastFinished,
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // an error means the client went away
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{err.Error()})
}
