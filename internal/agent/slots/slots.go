// Package slots installs software versions side by side and switches between them
// atomically, so a device is always on exactly one complete version:
//
//	ROOT/versions/<version>/   one directory per installed version (the inactive slots)
//	ROOT/current  -> versions/<version>   the running version (a symlink, replaced by rename)
//	ROOT/previous -> versions/<version>   what to go back to
//
// Configuration, local state and logs live outside versions/, so they survive every update.
package slots

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Slots manages one piece of software under Root.
type Slots struct {
	Root string
}

func (s Slots) versionDir(v string) string { return filepath.Join(s.Root, "versions", v) }

// Dir is the directory a version is unpacked into.
func (s Slots) Dir(v string) string { return s.versionDir(v) }

// Current is the version the current link points at ("" when none).
func (s Slots) Current() string { return s.link("current") }

// Previous is the version the previous link points at ("" when none).
func (s Slots) Previous() string { return s.link("previous") }

func (s Slots) link(name string) string {
	target, err := os.Readlink(filepath.Join(s.Root, name))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

func validVersion(v string) error {
	if v == "" || v == "." || v == ".." || strings.ContainsAny(v, `/\`) {
		return fmt.Errorf("version %q cannot name a directory", v)
	}
	return nil
}

// Install unpacks a .tar.gz artifact (or the plain tar a delta rebuilt) into the version's slot. Nothing outside the slot can be
// written: absolute paths, "..", links and special files in the archive are refused. A slot
// that already holds the version is replaced only once the new one is complete.
func (s Slots) Install(version, tarGz string) error {
	if err := validVersion(version); err != nil {
		return err
	}
	f, err := os.Open(tarGz)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var r io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		if r, err = gzip.NewReader(br); err != nil {
			return fmt.Errorf("artifact is not gzip: %w", err)
		}
	}
	staging := s.versionDir(version) + ".staging"
	os.RemoveAll(staging)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("artifact is not a valid tar: %w", err)
		}
		name, ok := RelPath(h.Name)
		if !ok {
			return fmt.Errorf("artifact entry %q points outside the install directory; refusing the artifact", h.Name)
		}
		dest := filepath.Join(staging, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dest, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", h.Name, err)
			}
		default:
			return fmt.Errorf("artifact entry %q is a link or special file; only files and directories are installed", h.Name)
		}
	}
	final := s.versionDir(version)
	if s.Current() == version {
		return fmt.Errorf("version %s is running; it cannot be reinstalled in place", version)
	}
	os.RemoveAll(final)
	return os.Rename(staging, final)
}

// RelPath is an archive entry's name as a path inside the directory it is unpacked in; ok is
// false for one that would land outside it (absolute, or climbing out with "..").
func RelPath(name string) (string, bool) {
	p := filepath.Clean(filepath.FromSlash(name))
	return p, !filepath.IsAbs(p) && p != ".." && !strings.HasPrefix(p, ".."+string(filepath.Separator))
}

// Installed reports whether a version's slot exists.
func (s Slots) Installed(version string) bool {
	st, err := os.Stat(s.versionDir(version))
	return err == nil && st.IsDir()
}

// Switch makes version current (and the old current previous) by renaming symlinks, which is
// atomic: a crash leaves either the old or the new link.
func (s Slots) Switch(version string) error {
	if err := validVersion(version); err != nil {
		return err
	}
	if !s.Installed(version) {
		return fmt.Errorf("version %s is not installed", version)
	}
	if cur := s.Current(); cur != "" && cur != version {
		if err := s.setLink("previous", cur); err != nil {
			return err
		}
	}
	return s.setLink("current", version)
}

// Rollback switches back to the previous version. After the first install there is none: the
// current link is removed, which restores the tree as it was before (the software that was
// running came from outside the slots).
func (s Slots) Rollback() (string, error) {
	prev := s.Previous()
	if prev == "" {
		if s.Current() == "" {
			return "", errors.New("there is no previous version to roll back to")
		}
		if err := os.Remove(filepath.Join(s.Root, "current")); err != nil {
			return "", err
		}
		return "", syncDir(s.Root)
	}
	return prev, s.setLink("current", prev)
}

func (s Slots) setLink(name, version string) error {
	tmp := filepath.Join(s.Root, "."+name+".tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("versions", version), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.Root, name)); err != nil {
		return err
	}
	return syncDir(s.Root)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Prune removes every version's slot but the current and the previous one: a device keeps
// what it runs and what it can roll back to, and old versions do not fill its disk. It
// returns the versions it removed.
func (s Slots) Prune() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.Root, "versions"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{s.Current(): true, s.Previous(): true}
	var removed []string
	for _, e := range entries {
		if keep[e.Name()] || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := os.RemoveAll(s.versionDir(e.Name())); err != nil {
			return removed, err
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}
