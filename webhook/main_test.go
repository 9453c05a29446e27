package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/webhook"
)

func TestMain(m *testing.M) {
	if os.Getenv(sendHookEnv) != "" {
		// A git post-receive hook runs this binary (see e2e_test.go).
		os.Exit(sendHook(os.Stdin, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// pollRecorder is a webhook.Poller that records the keys asked to poll;
// fail makes PollNow refuse a key.
type pollRecorder struct {
	mu   sync.Mutex
	keys []string
	fail map[string]error
}

func (p *pollRecorder) PollNow(key string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.fail[key]; err != nil {
		return err
	}
	p.keys = append(p.keys, key)
	return nil
}

func (p *pollRecorder) polled() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.keys)
}

func payload(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	require.NoError(t, err)
	return b
}

func hexHMAC(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// standardSignature returns "v1,<base64>" for a Standard Webhooks secret.
func standardSignature(t testing.TB, secret, id string, ts int64, body []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	require.NoError(t, err)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// deliver serves one request with h and decodes its Reply.
func deliver(t testing.TB, h http.Handler, target string, header http.Header, body []byte) (int, webhook.Reply) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(string(body)))
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var reply webhook.Reply
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &reply), "body %s", rec.Body)
	return rec.Code, reply
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func sha1HMAC(secret string, body []byte) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// testTimeout bounds every wait, so that a bug fails a test instead of
// hanging it.
const testTimeout = 30 * time.Second

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// closeNow closes m, canceling what still runs.
func closeNow(m *dedup.Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = m.Close(ctx)
}
