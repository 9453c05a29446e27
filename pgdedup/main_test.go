package pgdedup_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/dedupdeploy/dedupdeploy/pgdedup/internal/pgtest"
)

var (
	srv    *pgtest.Server
	srvErr error
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain()) // the test binary re-executed as a replica process
	}
	srv, srvErr = pgtest.Start()
	if srvErr != nil {
		fmt.Fprintln(os.Stderr, "pgdedup tests: no PostgreSQL:", srvErr)
	}
	goleak.VerifyTestMain(stopAfter{m})
}

// stopAfter runs the tests, then stops the throwaway server, before goleak
// looks for goroutines left behind.
type stopAfter struct{ m *testing.M }

func (s stopAfter) Run() int {
	code := s.m.Run()
	if srv != nil {
		srv.Stop()
	}
	return code
}

func server(t testing.TB) *pgtest.Server {
	t.Helper()
	return pgtest.Need(t, srv, srvErr)
}
