package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds every provider's parser arbitrary events and bodies,
// seeded with the documented payloads:
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 60s ./webhook/
//
// A parse never panics, and what it accepts is well formed: every push
// names its repository; a deletion has no revision; a git push that is no
// deletion has one.
func FuzzParse(f *testing.F) {
	seeds := []struct {
		k     kind
		event string
		file  string
	}{
		{kindGitHub, "push", "github-push.json"},
		{kindGitHub, "push", "github-push-delete-tag.json"},
		{kindGitHub, "ping", "github-ping.json"},
		{kindGitLab, "Push Hook", "gitlab-push.json"},
		{kindGitLab, "Tag Push Hook", "gitlab-tag-push.json"},
		{kindGitea, "push", "gitea-push.json"},
		{kindForgejo, "push", "gitea-push.json"},
		{kindBitbucket, "repo:push", "bitbucket-push.json"},
		{kindDockerHub, "", "dockerhub-push.json"},
		{kindRegistry, "", "registry-events.json"},
	}
	for _, s := range seeds {
		b, err := os.ReadFile("testdata/" + s.file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(s.k), s.event, b)
	}
	f.Add(uint8(kindStandard), "", []byte(`{"type":"push","data":{"repository":"acme/web","ref":"refs/heads/main","revision":"abc"}}`))
	f.Add(uint8(kindGitLab), "System Hook", []byte(`{"object_kind":"push","ref":"r","after":"0000000000000000000000000000000000000000","project":{"path_with_namespace":"a/b"}}`))
	f.Fuzz(func(t *testing.T, k uint8, event string, body []byte) {
		p := &provider{kind: kind(k%uint8(kindRegistry)) + 1}
		in, err := p.parse(event, body)
		if err != nil {
			if _, ok := err.(*badPayload); !ok {
				t.Fatalf("%s: error %v is no badPayload", p.kind, err)
			}
			return
		}
		if in.ids != nil && len(in.ids) != len(in.pushes) {
			t.Fatalf("%s: %d ids for %d pushes", p.kind, len(in.ids), len(in.pushes))
		}
		if in.kind != eventPush && len(in.pushes) > 0 {
			t.Fatalf("%s: pushes in a %v delivery", p.kind, in.kind)
		}
		for _, push := range in.pushes {
			switch {
			case push.Repository == "":
				t.Fatalf("%s: push without repository: %+v", p.kind, push)
			case push.Deleted && push.Revision != "":
				t.Fatalf("%s: deletion with a revision: %+v", p.kind, push)
			case !push.Deleted && push.Revision == "" && p.kind != kindDockerHub && p.kind != kindStandard:
				t.Fatalf("%s: push without a revision: %+v", p.kind, push)
			case push.Provider != p.kind.String():
				t.Fatalf("%s: push of provider %q", p.kind, push.Provider)
			}
		}
	})
}

// FuzzStandardVerify feeds the Standard Webhooks check arbitrary headers
// and bodies, seeded with the specification's test vector:
//
//	go test -run '^$' -fuzz FuzzStandardVerify -fuzztime 60s ./webhook/
//
// It never panics, and it accepts only a timestamp within the tolerance
// and a list that holds the right v1 signature.
func FuzzStandardVerify(f *testing.F) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`))
	f.Add("id", "-9223372036854775808", "v1,", []byte{})
	f.Add("id", "9223372036854775807", "v1a,AAAA v1,AAAA", []byte("x"))
	key, err := standardKey(kindStandard, secret)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1614265330, 0)
	f.Fuzz(func(t *testing.T, id, ts, sigs string, body []byte) {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", sigs)
		if verifyStandard(key, h, body, now, DefaultTolerance) != nil {
			return
		}
		// Accepted: check what was accepted (the header values as Get
		// returns them).
		sec, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
		if err != nil || sec < now.Unix()-300 || sec > now.Unix()+300 {
			t.Fatalf("accepted timestamp %q", h.Get("webhook-timestamp"))
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "."))
		mac.Write(body)
		if !holdsSignature(h.Get("webhook-signature"), mac.Sum(nil)) {
			t.Fatalf("accepted %q without the signature", h.Get("webhook-signature"))
		}
	})
}

// holdsSignature reports whether list has a v1 entry whose base64 decodes
// to want.
func holdsSignature(list string, want []byte) bool {
	for _, f := range strings.Fields(list) {
		if sig, ok := strings.CutPrefix(f, "v1,"); ok {
			if got, err := base64.StdEncoding.DecodeString(sig); err == nil && bytes.Equal(got, want) {
				return true
			}
		}
	}
	return false
}
