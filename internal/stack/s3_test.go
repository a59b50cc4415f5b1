package stack_test

import (
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
}
