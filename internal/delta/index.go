// Package delta lets a device build a new release from the version it already runs plus the
// parts it lacks, instead of downloading the whole artifact.
//
// Publishing (package cut) reads a release's .tar.gz as the uncompressed tar stream it is and cuts
// every regular file's content into content-defined chunks (Rabin fingerprints, 16 KiB to
// 256 KiB, 64 KiB on average; github.com/restic/chunker): an edit moves only the chunk
// boundaries near it, so a new version that changes a few files shares every other chunk with
// the old one. Each chunk is stored once, zstd-compressed and named by the SHA-256 of its
// content, under the bucket's chunk store (delta/chunks/); the index lists, in stream order,
// the tar's own bytes (headers, padding, end of archive: carried in the index) and each file's
// chunks. The release's signed TUF target names the index with its length and digest and the
// tar's length and digest, so every byte a device uses is bound to the signed metadata.
//
// A device (Apply) checks the files of the version it runs against that version's index
// (OpenBase: a modified base is refused, and the device downloads the full artifact), copies
// the chunks it has from them, fetches the others (kept in a cache directory as they arrive,
// so an interrupted delta resumes where it stopped), checks each against its digest, and
// writes the tar, whose length and digest must be the signed ones before it is unpacked.
// Memory stays bounded by one chunk, whatever the artifact's size.
package delta

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/otaflow/otaflow/internal/s3url"

	"github.com/klauspost/compress/zstd"
)

// Format names the index format; a device refuses (and downloads the full artifact for) any
// other.
const Format = "otaflow-chunks-v1"

// Prefix is the chunk store's place in a release bucket: indexes under Prefix+"index/",
// chunks under Prefix+"chunks/".
const Prefix = "delta/"

// Chunk sizes: small enough that an edit costs little beyond itself, large enough that a
// 1 GiB artifact's index stays near a megabyte.
const (
	MinChunk = 16 << 10
	AvgBits  = 16 // 64 KiB
	MaxChunk = 256 << 10
)

// MaxIndex bounds a decoded index (a 1 GiB artifact's is about 2 MiB).
const MaxIndex = 64 << 20

// Index is a release's uncompressed tar as a sequence of segments.
type Index struct {
	Format string `json:"format"`
	// Length and SHA256 are the tar's.
	Length   int64     `json:"length"`
	SHA256   string    `json:"sha256"`
	Segments []Segment `json:"segments"`
}

// Segment is the tar's bytes that precede a file's content (the previous entry's padding,
// this entry's headers), carried in the index, then that content as chunks. The last segment
// is the end of the archive, a literal only.
type Segment struct {
	Literal []byte  `json:"literal,omitempty"`
	File    string  `json:"file,omitempty"`
	Chunks  []Chunk `json:"chunks,omitempty"`
}

// Chunk is one piece of a file's content: its SHA-256 and size, and the size of its stored
// (compressed) form, which is what a device downloads.
type Chunk struct {
	SHA256 Digest `json:"sha256"`
	Size   int64  `json:"size"`
	Stored int64  `json:"stored"`
}

// Digest is a SHA-256, hex in the index's JSON and 32 bytes in memory: a 1 GiB release's
// index holds some 16,000 of them, on devices that count their megabytes.
type Digest [32]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText writes the digest as lowercase hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads 64 lowercase hex digits.
func (d *Digest) UnmarshalText(b []byte) error {
	if !isSHA256(string(b)) {
		return fmt.Errorf("%q is not a SHA-256 in lowercase hex", b)
	}
	_, err := hex.Decode(d[:], b)
	return err
}

// ChunkKey is where a chunk lives in the bucket.
func ChunkKey(d Digest) string {
	h := d.String()
	return Prefix + "chunks/" + h[:2] + "/" + h
}

// IndexKey is where the index of software at version lives in the bucket.
func IndexKey(software, version string) string {
	return Prefix + "index/" + software + "/" + version + ".json.zst"
}

// StoreURL is the chunk store of the bucket an artifact's S3 URL names (any form s3url reads), as
// an s3:// URL for a presigned-URL placeholder.
func StoreURL(artifactURL string) (string, bool) {
	bucket, _, ok := s3url.Parse(artifactURL)
	if !ok {
		return "", false
	}
	return "s3://" + bucket + "/" + Prefix, true
}

// ErrFormat is an index this device cannot read: it downloads the full artifact instead.
var ErrFormat = errors.New("unknown chunk index format")

// Decode reads a stored index and checks that it is whole: segments that add up to its
// length, digests that are digests, sizes within the chunk bounds.
func Decode(stored []byte) (*Index, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxMemory(MaxIndex))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	// One allocation of the size the frame states (bounded by MaxIndex), not a growing buffer.
	raw, err := dec.DecodeAll(stored, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	var x Index
	if err := json.Unmarshal(raw, &x); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if x.Format != Format {
		return nil, fmt.Errorf("%w %q (this agent reads %s)", ErrFormat, x.Format, Format)
	}
	var total int64
	for _, s := range x.Segments {
		total += int64(len(s.Literal))
		for _, c := range s.Chunks {
			if c.Size <= 0 || c.Size > MaxChunk || c.Stored <= 0 || c.Stored > MaxChunk+MaxChunk/8 {
				return nil, fmt.Errorf("%w: chunk %q of %s is malformed", ErrFormat, c.SHA256, s.File)
			}
			total += c.Size
		}
	}
	if total != x.Length || !isSHA256(x.SHA256) {
		return nil, fmt.Errorf("%w: its segments add up to %d bytes, it says %d", ErrFormat, total, x.Length)
	}
	return &x, nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}
