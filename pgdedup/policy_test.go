package pgdedup

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// TestPolicyCache: the cache holds at most maxInterned policies however
// many distinct ones the key policy returns, each key still gets its own,
// and a policy that spells out the retry defaults shares the entry of one
// that leaves them zero.
func TestPolicyCache(t *testing.T) {
	m := &Manager{policies: make(map[dedup.Policy]*policy)}
	m.cfg.keyPolicy = func(key string) dedup.Policy {
		var n int
		fmt.Sscanf(key, "k%d", &n)
		return dedup.Policy{Timeout: time.Duration(n+1) * time.Second}
	}
	for i := range 2 * maxInterned {
		key := fmt.Sprintf("k%d", i)
		p, err := m.policy(key)
		if err != nil {
			t.Fatalf("policy(%q) = %v", key, err)
		}
		if want := time.Duration(i+1) * time.Second; p.p.Timeout != want {
			t.Fatalf("policy(%q).Timeout = %v; want %v", key, p.p.Timeout, want)
		}
	}
	if len(m.policies) != maxInterned {
		t.Errorf("%d policies cached; want %d", len(m.policies), maxInterned)
	}

	m = &Manager{policies: make(map[dedup.Policy]*policy)}
	defaults := dedup.Policy{Retry: dedup.RetryPolicy{}.WithDefaults()}
	m.cfg.keyPolicy = func(key string) dedup.Policy {
		if key == "spelled" {
			return defaults
		}
		return dedup.Policy{}
	}
	a, _ := m.policy("zero")
	b, _ := m.policy("spelled")
	if a != b || len(m.policies) != 1 {
		t.Errorf("zero and spelled-out retry defaults: %d cache entries, same entry %v; want 1, true", len(m.policies), a == b)
	}
}

// Every field of the policy the rules read comes from the Policy: a field
// added to keyrules.Policy and forgotten here fails (dedup has the same
// test of its own mapping).
func TestPolicyMapsEveryRuleField(t *testing.T) {
	m := &Manager{policies: make(map[dedup.Policy]*policy)}
	m.cfg.policy = dedup.Policy{
		Quiet: time.Second, MaxDelay: time.Minute, MinInterval: time.Hour, Timeout: time.Hour,
		Retry:            dedup.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Minute, Multiplier: 3, Jitter: 0.5},
		CancelInProgress: true,
	}
	p, err := m.policy("k")
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(p.k)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("keyrules.Policy.%s is zero for a Policy with every field set", v.Type().Field(i).Name)
		}
	}
}
