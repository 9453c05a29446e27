package deployer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/dedupdeploy/dedupdeploy/deployer"
)

func ExampleHTTP() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("%s %s %s %s\n", r.Method, r.URL.Path, r.Header.Get("Authorization"), body)
		if r.Header.Get("Authorization") == "" {
			http.Error(w, "who are you?", http.StatusUnauthorized)
		}
	}))
	defer srv.Close()

	hook := deployer.HTTP(srv.URL + "/hooks/deploy")
	hook.Client = srv.Client()
	err := hook.Deploy(context.Background(), "web", "4f2a9c1")
	var se *deployer.StatusError
	if errors.As(err, &se) {
		fmt.Printf("status %d, body %q\n", se.Code, se.Body)
	}

	hook.Header = http.Header{"Authorization": {"Bearer s3cret"}}
	err = hook.Deploy(context.Background(), "web", "4f2a9c1")
	fmt.Println("error:", err)
	// Output:
	// POST /hooks/deploy  {"key":"web","revision":"4f2a9c1"}
	// status 401, body "who are you?\n"
	// POST /hooks/deploy Bearer s3cret {"key":"web","revision":"4f2a9c1"}
	// error: <nil>
}
