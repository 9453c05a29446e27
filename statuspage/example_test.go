package statuspage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/dedupdeploy/dedupdeploy/dedup"
	"github.com/dedupdeploy/dedupdeploy/statuspage"
)

func ExampleHandler() {
	m, err := dedup.New(dedup.DeployFunc(func(context.Context, string, dedup.Revision) error { return nil }))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(context.Background())
	_, _ = m.Deploy(context.Background(), "web", "4f2a9c1")

	mux := http.NewServeMux()
	mux.Handle("GET /status/", statuspage.Handler("/status/", m))

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/status/web", nil))
	var st struct {
		Key, Live string
		Deployed  int
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &st)
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"), st.Key, st.Live, st.Deployed)
	// Output:
	// 200 application/json web 4f2a9c1 1
}
