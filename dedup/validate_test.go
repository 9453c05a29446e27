package dedup_test

import (
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/dedup/deduptest"
)

func TestNewRejectsBadOptions(t *testing.T) {
	d := instant()
	retry := func(p dedup.RetryPolicy) []dedup.Option { return []dedup.Option{dedup.WithRetry(p)} }
	tests := []struct {
		name string
		d    dedup.Deployer
		opts []dedup.Option
		want []string // substrings of the error message
	}{
		{"nil deployer", nil, nil, []string{"nil Deployer"}},
		{"nil DeployFunc", dedup.DeployFunc(nil), nil, []string{"nil Deployer"}},
		{"nil option", d, []dedup.Option{nil}, []string{"nil Option"}},
		{"nil clock", d, []dedup.Option{dedup.WithClock(nil)}, []string{"nil Clock"}},
		{"nil store", d, []dedup.Option{dedup.WithStore(nil)}, []string{"nil Store"}},
		{"nil observer", d, []dedup.Option{dedup.WithObserver(nil)}, []string{"nil observer"}},
		{"nil logger", d, []dedup.Option{dedup.WithLogger(nil)}, []string{"nil logger"}},
		{"nil key policy", d, []dedup.Option{dedup.WithKeyPolicy(nil)}, []string{"nil key policy"}},
		{"negative quiet", d, []dedup.Option{dedup.WithDebounce(-time.Second, 0)}, []string{"debounce quiet", "negative"}},
		{"negative max delay", d, []dedup.Option{dedup.WithDebounce(time.Second, -time.Second)}, []string{"debounce maxDelay", "negative"}},
		{"max delay below quiet", d, []dedup.Option{dedup.WithDebounce(2*time.Second, time.Second)}, []string{"maxDelay 1s is less than quiet 2s"}},
		{"negative min interval", d, []dedup.Option{dedup.WithMinInterval(-1)}, []string{"min interval", "negative"}},
		{"negative timeout", d, []dedup.Option{dedup.WithTimeout(-time.Minute)}, []string{"timeout", "negative"}},
		{"negative max concurrent", d, []dedup.Option{dedup.WithMaxConcurrent(-1)}, []string{"max concurrent -1"}},
		{"negative max attempts", d, retry(dedup.RetryPolicy{MaxAttempts: -1}), []string{"MaxAttempts -1"}},
		{"negative initial", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Initial: -time.Second}), []string{"Initial", "negative"}},
		{"negative max", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Max: -time.Second}), []string{"Max", "negative"}},
		{"max below initial", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Initial: 2 * time.Second, Max: time.Second}), []string{"Max 1s is less than Initial 2s"}},
		{"multiplier below 1", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Multiplier: 0.5}), []string{"Multiplier 0.5"}},
		{"negative multiplier", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Multiplier: -2}), []string{"Multiplier -2"}},
		{"NaN multiplier", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Multiplier: math.NaN()}), []string{"Multiplier NaN"}},
		{"infinite multiplier", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Multiplier: math.Inf(1)}), []string{"Multiplier +Inf"}},
		{"negative jitter", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Jitter: -0.1}), []string{"Jitter -0.1"}},
		{"jitter above 1", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Jitter: 1.5}), []string{"Jitter 1.5"}},
		{"NaN jitter", d, retry(dedup.RetryPolicy{MaxAttempts: 3, Jitter: math.NaN()}), []string{"Jitter NaN"}},
		{"several problems", nil, []dedup.Option{dedup.WithMaxConcurrent(-2), dedup.WithClock(nil)}, []string{"nil Deployer", "max concurrent -2", "nil Clock"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := dedup.New(tt.d, tt.opts...)
			require.Nil(t, m, "New returned a Manager with an error")
			require.Truef(t, errors.Is(err, dedup.ErrInvalid), "New() = %v; want an error wrapping ErrInvalid", err)
			for _, w := range tt.want {
				require.Containsf(t, err.Error(), w, "New() = %v; want the message to name the problem", err)
			}
		})
	}
}

func TestNewAcceptsGoodOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []dedup.Option
	}{
		{"none", nil},
		{"zero debounce", []dedup.Option{dedup.WithDebounce(0, 0)}},
		{"debounce without bound", []dedup.Option{dedup.WithDebounce(time.Second, 0)}},
		{"max delay equal to quiet", []dedup.Option{dedup.WithDebounce(time.Second, time.Second)}},
		{"zero retry policy", []dedup.Option{dedup.WithRetry(dedup.RetryPolicy{})}},
		{"retry defaults", []dedup.Option{dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 5})}},
		{"initial above default max", []dedup.Option{dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 5, Initial: time.Hour})}},
		{"multiplier 1, jitter bounds", []dedup.Option{dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 2, Multiplier: 1, Jitter: 1})}},
		{"max concurrent 0", []dedup.Option{dedup.WithMaxConcurrent(0)}},
		{"everything", []dedup.Option{
			dedup.WithClock(new(deduptest.Clock)), dedup.WithStore(new(dedup.MemoryStore)),
			dedup.WithDebounce(time.Second, time.Minute), dedup.WithMinInterval(time.Minute),
			dedup.WithRetry(dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2}),
			dedup.WithTimeout(time.Minute), dedup.WithCancelInProgress(), dedup.WithMaxConcurrent(4),
			dedup.WithKeyPolicy(func(string) dedup.Policy { return dedup.Policy{} }),
			dedup.WithObserver(func(dedup.Event) {}), dedup.WithLogger(slog.New(slog.DiscardHandler)),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := dedup.New(instant(), tt.opts...)
			require.NoError(t, err, "New")
			require.NoError(t, m.Close(testContext(t)), "Close")
		})
	}
}

func TestTriggerRejectsBadKeysAndRevisions(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  string
	}{
		{"empty", "", "empty"},
		{"too long", strings.Repeat("k", dedup.MaxLen+1), "1025 bytes, longer than 1024"},
		{"too long in multibyte runes", strings.Repeat("é", dedup.MaxLen/2) + "x", "longer than 1024"},
		{"newline", "a\nb", "control character"},
		{"carriage return", "a\rb", "control character"},
		{"tab", "a\tb", "control character"},
		{"NUL", "a\x00", "control character"},
		{"DEL", "a\x7f", "control character"},
		{"C1 control U+0085", "a\u0085b", "control character"},
		{"invalid UTF-8", "a\xffb", "not valid UTF-8"},
		{"truncated UTF-8", "caf\xc3", "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := new(deduptest.Deployer)
			m := newManager(t, d)
			check := func(call string, err error, what string) {
				t.Helper()
				require.Truef(t, errors.Is(err, dedup.ErrInvalid), "%s = %v; want an error wrapping ErrInvalid", call, err)
				require.Containsf(t, err.Error(), what, "%s = %v; want the message to name the %s", call, err, what)
				require.Containsf(t, err.Error(), tt.want, "%s = %v; want the message to name the problem", call, err)
			}
			require.NotPanics(t, func() {
				tk, err := m.Trigger(tt.value, "v1")
				require.Nilf(t, tk, "Trigger(%q, v1) ticket", tt.value)
				check("Trigger(bad key)", err, "key")

				tk, err = m.Trigger("web", dedup.Revision(tt.value))
				require.Nilf(t, tk, "Trigger(web, %q) ticket", tt.value)
				check("Trigger(bad revision)", err, "revision")

				check("Notify(bad key)", m.Notify(tt.value, "v1"), "key")
				check("Notify(bad revision)", m.Notify("web", dedup.Revision(tt.value)), "revision")

				_, err = m.Deploy(testContext(t), tt.value, "v1")
				check("Deploy(bad key)", err, "key")
				_, err = m.Deploy(testContext(t), "web", dedup.Revision(tt.value))
				check("Deploy(bad revision)", err, "revision")

				check("ValidKey", dedup.ValidKey(tt.value), "key")
				check("ValidRevision", dedup.ValidRevision(dedup.Revision(tt.value)), "revision")
			})
			require.Empty(t, m.Statuses(), "a rejected trigger created a key")
			require.Empty(t, d.Calls(), "a rejected trigger deployed")
		})
	}
}

func TestTriggerAcceptsGoodKeysAndRevisions(t *testing.T) {
	tests := []struct {
		name  string
		value string
	}{
		{"one byte", "a"},
		{"path-like", "stacks/web-01_prod:main"},
		{"space", "my stack"},
		{"unicode", "café/日本/🚀"},
		{"max length", strings.Repeat("k", dedup.MaxLen)},
		{"max length in multibyte runes", strings.Repeat("é", dedup.MaxLen/2)},
		{"shell metacharacters", "$(rm -rf /); `x` | y > z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			m := newManager(t, instant())
			require.NoError(t, dedup.ValidKey(tt.value), "ValidKey")
			require.NoError(t, dedup.ValidRevision(dedup.Revision(tt.value)), "ValidRevision")
			res := await(ctx, t, trigger(t, m, tt.value, dedup.Revision(tt.value)))
			requireResult(t, res, dedup.Revision(tt.value), dedup.Revision(tt.value), dedup.Deployed)
			require.Equal(t, tt.value, res.Key)
		})
	}
}

func TestKeyPolicyInvalid(t *testing.T) {
	tests := []struct {
		name   string
		policy dedup.Policy
		want   string
	}{
		{"negative quiet", dedup.Policy{Quiet: -1}, "debounce quiet"},
		{"max delay below quiet", dedup.Policy{Quiet: time.Minute, MaxDelay: time.Second}, "less than quiet"},
		{"negative min interval", dedup.Policy{MinInterval: -time.Second}, "min interval"},
		{"negative timeout", dedup.Policy{Timeout: -time.Second}, "timeout"},
		{"negative max attempts", dedup.Policy{Retry: dedup.RetryPolicy{MaxAttempts: -3}}, "MaxAttempts"},
		{"bad multiplier", dedup.Policy{Retry: dedup.RetryPolicy{MaxAttempts: 2, Multiplier: 0.9}}, "Multiplier"},
		{"bad jitter", dedup.Policy{Retry: dedup.RetryPolicy{MaxAttempts: 2, Jitter: 2}}, "Jitter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			m := newManager(t, instant(), dedup.WithKeyPolicy(func(key string) dedup.Policy {
				if key == "bad" {
					return tt.policy
				}
				return dedup.Policy{}
			}))
			tk, err := m.Trigger("bad", "v1")
			require.Nil(t, tk, "Trigger(bad) ticket")
			require.Truef(t, errors.Is(err, dedup.ErrInvalid), "Trigger(%q) = %v; want an error wrapping ErrInvalid", "bad", err)
			require.Containsf(t, err.Error(), `key "bad"`, "Trigger(%q) = %v; want the key named", "bad", err)
			require.Containsf(t, err.Error(), tt.want, "Trigger(%q) = %v; want the problem named", "bad", err)
			_, ok := m.Status("bad")
			require.False(t, ok, "Status(bad) after a rejected policy")

			res := await(ctx, t, trigger(t, m, "good", "v1"))
			requireResult(t, res, "v1", "v1", dedup.Deployed)
		})
	}
}

func TestPolicyValidateAndDefaults(t *testing.T) {
	for _, p := range []dedup.Policy{
		{Quiet: -time.Second},
		{Quiet: time.Minute, MaxDelay: time.Second},
		{Retry: dedup.RetryPolicy{MaxAttempts: 3, Multiplier: math.NaN()}},
		{Retry: dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Minute, Max: time.Second}},
	} {
		if err := p.Validate(); !errors.Is(err, dedup.ErrInvalid) {
			t.Errorf("%+v.Validate() = %v; want ErrInvalid", p, err)
		}
	}
	if err := (dedup.Policy{Quiet: time.Second, Retry: dedup.RetryPolicy{MaxAttempts: 3}}).Validate(); err != nil {
		t.Errorf("Validate of a good policy = %v", err)
	}
	for _, tc := range []struct{ in, want dedup.RetryPolicy }{
		{dedup.RetryPolicy{}, dedup.RetryPolicy{MaxAttempts: 1}},
		{dedup.RetryPolicy{MaxAttempts: 1, Initial: time.Hour}, dedup.RetryPolicy{MaxAttempts: 1}},
		{dedup.RetryPolicy{MaxAttempts: 3}, dedup.RetryPolicy{MaxAttempts: 3, Initial: dedup.DefaultRetryInitial, Max: dedup.DefaultRetryMax, Multiplier: dedup.DefaultRetryMultiplier}},
		{dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Hour}, dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Hour, Max: time.Hour, Multiplier: dedup.DefaultRetryMultiplier}},
	} {
		if got := tc.in.WithDefaults(); got != tc.want {
			t.Errorf("%+v.WithDefaults() = %+v; want %+v", tc.in, got, tc.want)
		}
	}
}
