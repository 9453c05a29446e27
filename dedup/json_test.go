package dedup_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

func TestEnumsMarshalToTheirNames(t *testing.T) {
	type enum interface {
		MarshalText() ([]byte, error)
		String() string
	}
	var all []enum
	for o := dedup.Deployed; o <= dedup.Aborted; o++ {
		all = append(all, o)
	}
	for a := dedup.ActionStarted; a <= dedup.ActionUnchanged; a++ {
		all = append(all, a)
	}
	for k := dedup.EventQueued; k <= dedup.EventSlow; k++ {
		all = append(all, k)
	}
	for _, v := range all {
		b, err := v.MarshalText()
		require.NoErrorf(t, err, "%T(%v).MarshalText", v, v)
		require.Equalf(t, v.String(), string(b), "%T.MarshalText", v)
		var back any
		switch v.(type) {
		case dedup.Outcome:
			var o dedup.Outcome
			err, back = o.UnmarshalText(b), &o
		case dedup.Action:
			var a dedup.Action
			err, back = a.UnmarshalText(b), &a
		case dedup.EventKind:
			var k dedup.EventKind
			err, back = k.UnmarshalText(b), &k
		}
		require.NoErrorf(t, err, "UnmarshalText(%q)", b)
		require.Equalf(t, fmt.Sprint(v), fmt.Sprint(back), "UnmarshalText(%q)", b)
	}
	var o dedup.Outcome
	if err := o.UnmarshalText([]byte("exploded")); !errors.Is(err, dedup.ErrInvalid) {
		t.Errorf("Outcome.UnmarshalText(exploded) = %v; want ErrInvalid", err)
	}
	if _, err := dedup.Outcome(0).MarshalText(); err == nil {
		t.Error("Outcome(0).MarshalText() = nil error; want an error")
	}
}

func TestJSONReadsLikeAPerson(t *testing.T) {
	at := time.Date(2026, 11, 29, 13, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"Status", dedup.Status{Key: "web", Live: "v1", Pending: "v2", LastErr: errBoom, Runs: 2, Deployed: 1, Failures: 1, LastStarted: at},
			`{"key":"web","live":"v1","pending":"v2","last_error":"boom","runs":2,"deployed":1,"failures":1,"superseded":0,"last_started":"2026-11-29T13:00:00Z"}`},
		{"Status with a baseline", dedup.Status{Key: "web", Running: "v2", Runs: 1, Deployed: 1, Slow: true,
			Baseline: dedup.Baseline{Samples: 1, Mean: 90 * time.Second, P90: 90 * time.Second}},
			`{"key":"web","running":"v2","runs":1,"deployed":1,"failures":0,"superseded":0,"baseline":{"samples":1,"mean":"1m30s","p90":"1m30s"},"slow":true}`},
		{"Result", dedup.Result{Key: "web", Requested: "v1", Revision: "v2", Outcome: dedup.Superseded, Attempts: 1, Started: at, Finished: at.Add(time.Second)},
			`{"key":"web","requested":"v1","revision":"v2","outcome":"superseded","attempts":1,"started":"2026-11-29T13:00:00Z","finished":"2026-11-29T13:00:01Z"}`},
		{"Event", dedup.Event{Seq: 7, Time: at, Kind: dedup.EventRetrying, Key: "web", Revision: "v1", Attempt: 1, Err: errBoom, Duration: 1500 * time.Millisecond, Delay: 2 * time.Second},
			`{"seq":7,"time":"2026-11-29T13:00:00Z","kind":"retrying","key":"web","revision":"v1","attempt":1,"error":"boom","duration":"1.5s","delay":"2s"}`},
		{"Event of a trigger", dedup.Event{Seq: 8, Time: at, Kind: dedup.EventQueued, Key: "web", Revision: "v2", Action: dedup.ActionQueued},
			`{"seq":8,"time":"2026-11-29T13:00:00Z","kind":"queued","key":"web","revision":"v2","action":"queued"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.v)
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(b))
			// It reads back to the same JSON.
			var back any
			switch tc.v.(type) {
			case dedup.Status:
				back = new(dedup.Status)
			case dedup.Result:
				back = new(dedup.Result)
			case dedup.Event:
				back = new(dedup.Event)
			}
			require.NoError(t, json.Unmarshal(b, back))
			again, err := json.Marshal(back)
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(again))
		})
	}
	var e dedup.Event
	if err := json.Unmarshal([]byte(`{"kind":"exploded"}`), &e); err == nil {
		t.Error("Unmarshal of an unknown event kind succeeded; want an error")
	}
}

// A status endpoint is one line: the JSON of Statuses.
func ExampleStatus_MarshalJSON() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clock := new(deduptest.Clock) // times start at deduptest.Epoch
	m, err := dedup.New(dedup.DeployFunc(func(ctx context.Context, key string, rev dedup.Revision) error {
		if rev == "bad" {
			return errors.New("compose up: exit status 1")
		}
		clock.Advance(90 * time.Second) // the deploy takes a minute and a half
		return nil
	}), dedup.WithClock(clock))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(ctx)
	m.Deploy(ctx, "api", "4f2a9c1")
	m.Deploy(ctx, "web", "bad")

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(m.Statuses())
	// Output:
	// [
	//   {
	//     "key": "api",
	//     "live": "4f2a9c1",
	//     "runs": 1,
	//     "deployed": 1,
	//     "failures": 0,
	//     "superseded": 0,
	//     "last_started": "2000-01-01T00:00:00Z",
	//     "last_finished": "2000-01-01T00:01:30Z",
	//     "baseline": {
	//       "samples": 1,
	//       "mean": "1m30s",
	//       "p90": "1m30s"
	//     }
	//   },
	//   {
	//     "key": "web",
	//     "last_error": "compose up: exit status 1",
	//     "runs": 1,
	//     "deployed": 0,
	//     "failures": 1,
	//     "superseded": 0,
	//     "last_started": "2000-01-01T00:01:30Z",
	//     "last_finished": "2000-01-01T00:01:30Z"
	//   }
	// ]
}

// Status, Result and Event read back from their JSON with every field:
// each field is set to a distinct non-zero value, so a field that
// MarshalJSON or UnmarshalJSON forgets (a new one, say) fails here.
func TestJSONRoundTripsEveryField(t *testing.T) {
	for _, v := range []any{new(dedup.Status), new(dedup.Result), new(dedup.Event)} {
		t.Run(fmt.Sprintf("%T", v), func(t *testing.T) {
			fill(t, reflect.ValueOf(v).Elem(), 1)
			b, err := json.Marshal(reflect.ValueOf(v).Elem().Interface())
			require.NoError(t, err)
			back := reflect.New(reflect.TypeOf(v).Elem())
			require.NoError(t, json.Unmarshal(b, back.Interface()), "%s", b)
			want, got := reflect.ValueOf(v).Elem(), back.Elem()
			for i := range want.NumField() {
				f := want.Type().Field(i)
				w, g := want.Field(i).Interface(), got.Field(i).Interface()
				if we, ok := w.(error); ok { // errors come back as their text
					ge, _ := g.(error)
					if ge == nil || ge.Error() != we.Error() {
						t.Errorf("%s: %v after the round trip; want %v (JSON %s)", f.Name, g, w, b)
					}
					continue
				}
				if !reflect.DeepEqual(w, g) {
					t.Errorf("%s: %v after the round trip; want %v (JSON %s)", f.Name, g, w, b)
				}
			}
		})
	}
}

// fill sets every field of v to a distinct non-zero value, numbered from n.
func fill(t *testing.T, v reflect.Value, n int) int {
	t.Helper()
	at := time.Date(2026, 11, 29, 13, 0, 0, 0, time.UTC)
	for i := range v.NumField() {
		f := v.Field(i)
		n++
		switch {
		case f.Type() == reflect.TypeOf(time.Time{}):
			f.Set(reflect.ValueOf(at.Add(time.Duration(n) * time.Second)))
		case f.Type() == reflect.TypeOf((*error)(nil)).Elem():
			f.Set(reflect.ValueOf(fmt.Errorf("error %d", n)))
		case f.Kind() == reflect.Struct:
			n = fill(t, f, n)
		case f.Kind() == reflect.String:
			f.SetString(fmt.Sprint("s", n))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.Type() == reflect.TypeOf(dedup.Outcome(0)):
			f.SetUint(uint64(dedup.Failed))
		case f.Type() == reflect.TypeOf(dedup.Action(0)):
			f.SetUint(uint64(dedup.ActionQueued))
		case f.Type() == reflect.TypeOf(dedup.EventKind(0)):
			f.SetUint(uint64(dedup.EventRetrying))
		case f.Type() == reflect.TypeOf(time.Duration(0)):
			f.SetInt(int64(time.Duration(n) * time.Second))
		case f.CanInt():
			f.SetInt(int64(n))
		case f.CanUint():
			f.SetUint(uint64(n))
		default:
			t.Fatalf("fill: field %s of kind %s", v.Type().Field(i).Name, f.Kind())
		}
	}
	return n
}
