package rolloutops_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// The update document names the package and its bucket's chunk store as presigned-URL
// placeholders, and carries the download cap; --no-delta leaves the chunk store out.
func TestUpdateDocument(t *testing.T) {
	req := contract.RolloutRequest{RolloutID: "r1", SoftwareToUpdate: "core", Version: "1.2.0",
		Artifact: &contract.Artifact{URL: "s3://releases/core/1.2.0.tar.gz"}, DownloadBytesPerSecond: 65536}
	doc := rolloutops.UpdateDocument(req)
	require.Equal(t, "${aws:iot:s3-presigned-url:s3://releases/core/1.2.0.tar.gz}", doc.Artifact.URL)
	require.Equal(t, "${aws:iot:s3-presigned-url:s3://releases/delta/}", doc.Artifact.Chunks)
	require.Equal(t, int64(65536), doc.DownloadBytesPerSecond)
	raw, err := doc.Marshal()
	require.NoError(t, err)
	back, err := jobdoc.Parse([]byte(raw))
	require.NoError(t, err, "the agent reads it")
	require.Equal(t, doc.Artifact.Chunks, back.Artifact.Chunks)

	req.NoDelta = true
	require.Empty(t, rolloutops.UpdateDocument(req).Artifact.Chunks)
	req.Artifact.URL = "https://s3.amazonaws.com/releases/core/1.2.0.tar.gz"
	req.NoDelta = false
	require.Equal(t, "${aws:iot:s3-presigned-url:s3://releases/delta/}", rolloutops.UpdateDocument(req).Artifact.Chunks, "path-style S3 URLs too")
}
