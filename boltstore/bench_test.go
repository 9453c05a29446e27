package boltstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/dedupdeploy/dedupdeploy/boltstore"
	"github.com/dedupdeploy/dedupdeploy/dedup"
)

// rev40 is a revision as long as a git commit SHA.
const rev40 = dedup.Revision("4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39")

// openBench opens a bbolt database in a temporary directory, as Open does,
// with the batch delay given.
func openBench(b *testing.B, delay time.Duration) *bbolt.DB {
	b.Helper()
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "bench.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	db.MaxBatchDelay, db.MaxBatchSize = delay, boltstore.DefaultMaxBatchSize
	b.Cleanup(func() { db.Close() })
	return db
}

// saveAll makes b.N saves of distinct keys from savers goroutines with save,
// and reports saves per second and per commit.
func saveAll(b *testing.B, db *bbolt.DB, savers int, save func(key string) error) {
	b.Helper()
	var next atomic.Int64
	commits := lastTx(b, db)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range savers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := save(fmt.Sprintf("stack-%09d", i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "saves/s")
	if n := lastTx(b, db) - commits; n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "saves/commit")
	}
}

// lastTx returns the id of db's last commit: ids count commits.
func lastTx(b *testing.B, db *bbolt.DB) int {
	var id int
	if err := db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		b.Fatal(err)
	}
	return id
}

// BenchmarkSave compares Save (bbolt's Batch, the default delay) with one
// plain bbolt Update per save, with 1, 16 and 256 concurrent savers. ns/op
// is per save; with one saver it is a Save's latency.
func BenchmarkSave(b *testing.B) {
	ctx := context.Background()
	for _, savers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch/%d", savers), func(b *testing.B) {
			db := openBench(b, boltstore.DefaultMaxBatchDelay)
			s, err := boltstore.New(db, boltstore.DefaultBucket)
			if err != nil {
				b.Fatal(err)
			}
			saveAll(b, db, savers, func(key string) error { return s.Save(ctx, key, rev40) })
		})
		b.Run(fmt.Sprintf("update/%d", savers), func(b *testing.B) {
			db := openBench(b, boltstore.DefaultMaxBatchDelay)
			bucket := []byte(boltstore.DefaultBucket)
			saveAll(b, db, savers, func(key string) error {
				return db.Update(func(tx *bbolt.Tx) error {
					bk, err := tx.CreateBucketIfNotExists(bucket)
					if err != nil {
						return err
					}
					return bk.Put([]byte(key), append([]byte{1}, rev40...))
				})
			})
		})
	}
}

// BenchmarkBatchDelay is how DefaultMaxBatchDelay was chosen: Save with
// several batch delays and 16 and 256 savers. (A lone saver commits at
// once, whatever the delay.)
func BenchmarkBatchDelay(b *testing.B) {
	ctx := context.Background()
	for _, delay := range []time.Duration{0, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond} {
		for _, savers := range []int{16, 256} {
			b.Run(fmt.Sprintf("%v/%d", delay, savers), func(b *testing.B) {
				db := openBench(b, delay)
				s, err := boltstore.New(db, boltstore.DefaultBucket)
				if err != nil {
					b.Fatal(err)
				}
				saveAll(b, db, savers, func(key string) error { return s.Save(ctx, key, rev40) })
			})
		}
	}
}

// fill saves keys stack-000000... with 40-character revisions from 256
// concurrent savers, as a Manager deploying many keys at once would.
func fill(b *testing.B, s *boltstore.Store, keys int) {
	b.Helper()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(keys) {
					return
				}
				if err := s.Save(ctx, fmt.Sprintf("stack-%06d", i), dedup.Revision(fmt.Sprintf("%040x", i))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkLoad is a Load of one of 10k keys.
func BenchmarkLoad(b *testing.B) {
	const keys = 10_000
	db := openBench(b, boltstore.DefaultMaxBatchDelay)
	s, err := boltstore.New(db, boltstore.DefaultBucket)
	if err != nil {
		b.Fatal(err)
	}
	fill(b, s, keys)
	ctx := context.Background()
	names := make([]string, 1024)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range names {
		names[i] = fmt.Sprintf("stack-%06d", rnd.IntN(keys))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, ok, err := s.Load(ctx, names[i%len(names)]); err != nil || !ok {
			b.Fatalf("Load = %v, %v", ok, err)
		}
	}
}

// BenchmarkDiskPerKey reports the file's size per key at 100k keys (40-byte
// revisions, 12-byte keys) saved by 256 concurrent savers, and the part of
// it that holds data rather than free pages. Run it with -benchtime=1x.
func BenchmarkDiskPerKey(b *testing.B) {
	const keys = 100_000
	b.ReportAllocs()
	for range b.N {
		path := filepath.Join(b.TempDir(), "state.db")
		s, err := boltstore.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		fill(b, s, keys)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true})
		if err != nil {
			b.Fatal(err)
		}
		free := int64(db.Stats().FreePageN) * int64(db.Info().PageSize)
		db.Close()
		b.ReportMetric(float64(fi.Size())/keys, "file-B/key")
		b.ReportMetric(float64(fi.Size()-free)/keys, "used-B/key")

		start := time.Now()
		s, err = boltstore.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Microseconds()), "open-µs")
		s.Close()
	}
}
