package poller_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dedupdeploy/dedupdeploy/poller"
)

func TestFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "release.txt")
	src := poller.File(path)
	ctx := testContext(t)

	_, err := src.Latest(ctx)
	require.ErrorIs(t, err, fs.ErrNotExist, "missing file")

	write := func(content string) {
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	write("")
	empty, err := src.Latest(ctx)
	require.NoError(t, err)
	require.Equal(t, bodyHash(""), empty, "an empty file has a revision")

	write("v1")
	rev1, err := src.Latest(ctx)
	require.NoError(t, err)
	require.Equal(t, bodyHash("v1"), rev1)

	write("v2")
	rev2, err := src.Latest(ctx)
	require.NoError(t, err)
	require.Equal(t, bodyHash("v2"), rev2)

	// Touching the file without changing it is no change.
	later := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(path, later, later))
	again, err := src.Latest(ctx)
	require.NoError(t, err)
	require.Equal(t, rev2, again)

	require.NoError(t, os.Remove(path))
	rev, err := src.Latest(ctx)
	require.ErrorIs(t, err, fs.ErrNotExist, "removed file")
	require.Empty(t, rev)
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(path, []byte("x"), 0o644))
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		src  *poller.FileSource
		is   error
	}{
		{"directory", context.Background(), poller.File(dir), nil},
		{"canceled", canceled, poller.File(path), context.Canceled},
		{"empty path", context.Background(), poller.File(""), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rev, err := tc.src.Latest(tc.ctx)
			require.Errorf(t, err, "Latest = %q", rev)
			require.Empty(t, rev)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
		})
	}
}
