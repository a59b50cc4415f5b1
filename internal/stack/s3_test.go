package stack_test

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The artifact store answers S3's PutObject as S3 does, so `aws s3api put-object` (path-style,
// the endpoint ending in /artifacts) reports success and the object's ETag, and the object is
// stored.
func TestPutObjectThroughAWSCLI(t *testing.T) {
	s := startStack(t)
	body := filepath.Join(t.TempDir(), "core-2.0.0.tar.gz")
	require.NoError(t, os.WriteFile(body, []byte("not really a tarball"), 0o644))
	out, stderr, err := awsCLI(t, s.JobsURL+"/artifacts", "s3api", "put-object", "--bucket", "releases", "--key", "core/2.0.0.tar.gz", "--body", body)
	require.NoError(t, err, "aws s3api put-object: %s", stderr)
	require.Contains(t, string(out), `"ETag"`, "S3 answers the object's ETag")
	p, err := s.Jobs.ArtifactPath("releases", "core/2.0.0.tar.gz")
	require.NoError(t, err)
	stored, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "not really a tarball", string(stored))

	// ListObjectsV2 (a page of one at a time: the continuation tokens), GetObject with the
	// REST key, DeleteObject.
	out, stderr, err = awsCLI(t, s.JobsURL+"/artifacts", "s3api", "put-object", "--bucket", "releases", "--key", "core/2.1.0.tar.gz", "--body", body)
	require.NoError(t, err, "aws s3api put-object: %s", stderr)
	out, stderr, err = awsCLI(t, s.JobsURL+"/artifacts", "s3api", "list-objects-v2", "--bucket", "releases", "--prefix", "core/", "--page-size", "1")
	require.NoError(t, err, "aws s3api list-objects-v2: %s", stderr)
	var listed struct {
		Contents []struct {
			Key  string
			Size int64
			ETag string
		}
	}
	require.NoError(t, json.Unmarshal(out, &listed), string(out))
	require.Len(t, listed.Contents, 2, string(out))
	require.Equal(t, "core/2.0.0.tar.gz", listed.Contents[0].Key)
	require.Equal(t, "core/2.1.0.tar.gz", listed.Contents[1].Key)
	require.Equal(t, int64(len("not really a tarball")), listed.Contents[0].Size)
	sum := md5.Sum([]byte("not really a tarball"))
	require.Equal(t, `"`+hex.EncodeToString(sum[:])+`"`, listed.Contents[0].ETag, "the MD5 of the content, as S3 gives it")
	got := filepath.Join(t.TempDir(), "got")
	_, stderr, err = awsCLI(t, s.JobsURL+"/artifacts", "s3api", "get-object", "--bucket", "releases", "--key", "core/2.0.0.tar.gz", got)
	require.NoError(t, err, "aws s3api get-object: %s", stderr)
	b, err := os.ReadFile(got)
	require.NoError(t, err)
	require.Equal(t, "not really a tarball", string(b))
	_, stderr, err = awsCLI(t, s.JobsURL+"/artifacts", "s3api", "delete-object", "--bucket", "releases", "--key", "core/2.0.0.tar.gz")
	require.NoError(t, err, "aws s3api delete-object: %s", stderr)
	out, _, err = awsCLI(t, s.JobsURL+"/artifacts", "s3api", "list-objects-v2", "--bucket", "releases")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(out, &listed))
	require.Len(t, listed.Contents, 1)
	require.Equal(t, "core/2.1.0.tar.gz", listed.Contents[0].Key)
	_, stderr, err = awsCLI(t, s.JobsURL+"/artifacts", "s3api", "delete-object", "--bucket", "releases", "--key", "tuf/root.json")
	require.Error(t, err, "release metadata is never deleted")
	require.Contains(t, string(stderr), "release metadata")
}
