package tuf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// MaxMetadataBytes bounds one metadata file the store accepts.
const MaxMetadataBytes = 4 << 20

var uploadRE = regexp.MustCompile(`^(?:([1-9][0-9]{0,8})\.)?(root|targets|snapshot|timestamp)\.json$`)

// IsMetadataFile reports whether name is a file of the repository's metadata (N.root.json,
// root.json, targets.json, snapshot.json, timestamp.json).
func IsMetadataFile(name string) bool { return uploadRE.MatchString(name) }

// CheckUpload decides whether the store may replace (or create) the metadata file with raw,
// given what it holds (stored returns a file's bytes, or nil). Only what `starter release`
// produces passes: a file signed by the threshold of its role's keys in the stored root (a
// new root by the previous root's keys and its own, each root version one more than the
// last), never older than the stored one, and never different at the same version. So the
// REST key alone cannot re-sign anything, and a stolen targets key cannot replace a
// targets.json the fleet has already been told about.
func CheckUpload(file string, raw []byte, stored func(file string) []byte) error {
	m := uploadRE.FindStringSubmatch(file)
	if m == nil {
		return fmt.Errorf("%s is not a TUF metadata file (N.root.json, root.json, targets.json, snapshot.json, timestamp.json)", file)
	}
	if len(raw) > MaxMetadataBytes {
		return fmt.Errorf("%s is larger than %d bytes", file, MaxMetadataBytes)
	}
	role := m[2]
	var probe struct {
		Signed struct {
			Type    string `json:"_type"`
			Version int64  `json:"version"`
		} `json:"signed"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil || probe.Signed.Type != role {
		return fmt.Errorf("%s is not %s metadata", file, role)
	}
	if m[1] != "" && strconv.FormatInt(probe.Signed.Version, 10) != m[1] {
		return fmt.Errorf("%s holds root version %d", file, probe.Signed.Version)
	}
	// The same file again (a retried publish) is always fine; a different one at the same
	// version or an older one never is.
	if old := stored(file); old != nil {
		if bytes.Equal(old, raw) {
			return nil
		}
		var was struct {
			Signed struct {
				Version int64 `json:"version"`
			} `json:"signed"`
		}
		json.Unmarshal(old, &was)
		if probe.Signed.Version <= was.Signed.Version {
			return fmt.Errorf("%s version %d is already published with other content (or a newer version is): metadata devices may have seen is never replaced; publish a new version with `starter release`", file, probe.Signed.Version)
		}
	}
	if role == RoleRoot {
		return checkRoot(file, m[1] != "", probe.Signed.Version, raw, stored)
	}
	current := stored("root.json")
	if current == nil {
		return fmt.Errorf("upload the root metadata (1.root.json, root.json) before %s", file)
	}
	root, err := metadata.Root().FromBytes(current)
	if err != nil {
		return fmt.Errorf("the stored root.json is unreadable: %w", err)
	}
	var verr error
	switch role {
	case RoleTargets:
		md, err := metadata.Targets().FromBytes(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		verr = root.VerifyDelegate(role, md)
	case RoleSnapshot:
		md, err := metadata.Snapshot().FromBytes(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		verr = root.VerifyDelegate(role, md)
	case RoleTimestamp:
		md, err := metadata.Timestamp().FromBytes(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		verr = root.VerifyDelegate(role, md)
	}
	if verr != nil {
		return fmt.Errorf("%s is not signed by the %s keys of the published root (version %d): %v", file, role, root.Signed.Version, verr)
	}
	return nil
}

// checkRoot admits root version N when N-1 is stored and both its keys and N's own sign it;
// the first root of an empty store is trusted as given (the store holds nothing to check it
// against; devices check it against the root they were provisioned with). root.json must be
// the newest N.root.json.
func checkRoot(file string, numbered bool, version int64, raw []byte, stored func(string) []byte) error {
	if !numbered {
		if n := stored(strconv.FormatInt(version, 10) + ".root.json"); !bytes.Equal(n, raw) {
			return fmt.Errorf("root.json must be the root version %d already uploaded as %d.root.json: upload that first", version, version)
		}
		return nil
	}
	next, err := metadata.Root().FromBytes(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := next.VerifyDelegate(RoleRoot, next); err != nil {
		return fmt.Errorf("%s is not signed by its own root keys: %v", file, err)
	}
	prevRaw := stored(strconv.FormatInt(version-1, 10) + ".root.json")
	if prevRaw == nil {
		if version == 1 && stored("root.json") == nil {
			return nil
		}
		return fmt.Errorf("%s needs root version %d published first (roots are uploaded in order)", file, version-1)
	}
	prev, err := metadata.Root().FromBytes(prevRaw)
	if err != nil {
		return fmt.Errorf("the stored root version %d is unreadable: %w", version-1, err)
	}
	if err := prev.VerifyDelegate(RoleRoot, next); err != nil {
		return fmt.Errorf("%s is not signed by the root keys of version %d: %v", file, version-1, err)
	}
	return nil
}
