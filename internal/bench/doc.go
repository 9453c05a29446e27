// Package bench compares dedup with what Go services use instead:
// singleflight and client-go's workqueue. It is a module of its own so that
// the library's go.mod never pulls client-go. Run it with
//
//	cd internal/bench && go test -run '^$' -bench . -benchmem
package bench
