package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/pgdedup/internal/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(replicaEnv) != "" {
		os.Exit(replica()) // the test binary as a replica process
	}
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	srv, err := pgtest.Start() // skips without PostgreSQL, fails with CI=true
	srv = pgtest.Need(t, srv, err)
	defer srv.Stop()
	var out strings.Builder
	if err := run(&out, srv.URL, 6, 6, time.Second, 150*time.Millisecond, 60*time.Millisecond); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"most deploys of one key at once: 1", "killed (SIGKILL) mid-deploy", "stale writes rejected by the target: 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
