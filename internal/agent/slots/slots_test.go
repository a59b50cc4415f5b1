package slots_test

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent/slots"
)

type entry struct {
	name, body string
	typ        byte
	link       string
}

func tarball(t *testing.T, entries ...entry) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "a.tar.gz")
	f, err := os.Create(p)
	require.NoError(t, err)
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o755, Size: int64(len(e.body)), Typeflag: typ, Linkname: e.link}))
		tw.Write([]byte(e.body))
	}
	require.NoError(t, tw.Close())
	require.NoError(t, gz.Close())
	require.NoError(t, f.Close())
	return p
}

func TestInstallSwitchRollback(t *testing.T) {
	s := slots.Slots{Root: t.TempDir()}
	require.NoError(t, s.Install("1.0.0", tarball(t, entry{name: "bin/core", body: "v1"})))
	require.NoError(t, s.Switch("1.0.0"))
	require.NoError(t, s.Install("2.0.0", tarball(t, entry{name: "bin/core", body: "v2"})))
	require.Equal(t, "1.0.0", s.Current(), "installing does not switch")
	require.NoError(t, s.Switch("2.0.0"))
	require.Equal(t, "2.0.0", s.Current())
	require.Equal(t, "1.0.0", s.Previous())
	body, err := os.ReadFile(filepath.Join(s.Root, "current", "bin", "core"))
	require.NoError(t, err)
	require.Equal(t, "v2", string(body))

	prev, err := s.Rollback()
	require.NoError(t, err)
	require.Equal(t, "1.0.0", prev)
	body, err = os.ReadFile(filepath.Join(s.Root, "current", "bin", "core"))
	require.NoError(t, err)
	require.Equal(t, "v1", string(body))
	require.Error(t, s.Install("1.0.0", tarball(t, entry{name: "x", body: "y"})), "the running version is not overwritten")
	require.ErrorContains(t, s.Switch("3.0.0"), "not installed")
}

// TestRollbackOfFirstInstall: before the first install the software came from outside the
// slots; rolling back removes the current link, restoring exactly that.
func TestRollbackOfFirstInstall(t *testing.T) {
	s := slots.Slots{Root: t.TempDir()}
	_, err := s.Rollback()
	require.ErrorContains(t, err, "no previous version")
	require.NoError(t, s.Install("1.0.0", tarball(t, entry{name: "bin/core", body: "v1"})))
	require.NoError(t, s.Switch("1.0.0"))
	prev, err := s.Rollback()
	require.NoError(t, err)
	require.Equal(t, "", prev)
	require.Equal(t, "", s.Current())
	_, err = os.Lstat(filepath.Join(s.Root, "current"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestInstallRefusesHostileArchives(t *testing.T) {
	root := t.TempDir()
	s := slots.Slots{Root: filepath.Join(root, "core")}
	for name, e := range map[string]entry{
		"dot-dot":  {name: "../../etc/passwd", body: "x"},
		"absolute": {name: "/etc/passwd", body: "x"},
		"symlink":  {name: "bin/sh", typ: tar.TypeSymlink, link: "/bin/sh"},
		"device":   {name: "dev/null", typ: tar.TypeChar},
	} {
		t.Run(name, func(t *testing.T) {
			err := s.Install("1.0.0", tarball(t, e))
			require.Error(t, err)
			require.False(t, s.Installed("1.0.0"), "nothing half-installed remains")
			_, statErr := os.Stat(filepath.Join(root, "etc", "passwd"))
			require.True(t, os.IsNotExist(statErr))
		})
	}
	require.Error(t, s.Install("../x", tarball(t, entry{name: "a", body: "b"})), "a version cannot name a path")
}

func TestPruneKeepsCurrentAndPrevious(t *testing.T) {
	s := slots.Slots{Root: t.TempDir()}
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0", "1.3.0"} {
		require.NoError(t, os.MkdirAll(s.Dir(v), 0o755))
	}
	require.NoError(t, s.Switch("1.1.0"))
	require.NoError(t, s.Switch("1.2.0"))
	removed, err := s.Prune()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"1.0.0", "1.3.0"}, removed)
	require.True(t, s.Installed("1.1.0"))
	require.True(t, s.Installed("1.2.0"))
	_, err = s.Rollback()
	require.NoError(t, err)
	require.Equal(t, "1.1.0", s.Current(), "what it can roll back to is still there")
}
