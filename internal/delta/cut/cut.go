// Package cut is the publishing side of delta updates: it cuts a release into the chunks and
// the index that package delta rebuilds it from on a device. Apart from delta, so that the agent
// links neither the chunker nor the zstd encoder.
package cut

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/restic/chunker"

	"github.com/otaflow/otaflow/internal/delta"
)

// pol is the Rabin polynomial every release is cut with: fixed, or no two releases would
// share a chunk.
const pol = chunker.Pol(0x3DA3358B4DC173)

// Stats is what Build stored.
type Stats struct {
	Chunks       int   // chunks in the index
	UniqueChunks int   // distinct chunks
	Put          int   // chunks Put was asked to store
	StoredBytes  int64 // their compressed bytes
}

// Build cuts the release in tarGz (a .tar.gz) into chunks, hands each distinct chunk to put
// under its key (ChunkKey; put may find it stored already: chunks are named by content), and
// returns the index.
func Build(tarGz io.Reader, put func(key string, stored []byte) error) (*delta.Index, Stats, error) {
	var st Stats
	gz, err := gzip.NewReader(tarGz)
	if err != nil {
		return nil, st, fmt.Errorf("the release is not a .tar.gz: %w", err)
	}
	sum := sha256.New()
	cr := &capture{r: io.TeeReader(gz, sum)}
	tr := tar.NewReader(cr)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, st, err
	}
	defer enc.Close()
	x := &delta.Index{Format: delta.Format}
	seen := map[delta.Digest]bool{}
	buf := make([]byte, delta.MaxChunk)
	var ch *chunker.Chunker
	for {
		cr.on = true
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, st, fmt.Errorf("the release is not a valid tar: %w", err)
		}
		cr.on = false
		seg := delta.Segment{Literal: cr.take()}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			seg.File = h.Name
			if ch == nil {
				ch = chunker.NewWithBoundaries(tr, pol, delta.MinChunk, delta.MaxChunk)
			} else {
				ch.ResetWithBoundaries(tr, pol, delta.MinChunk, delta.MaxChunk)
			}
			ch.SetAverageBits(delta.AvgBits)
			for {
				c, err := ch.Next(buf)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return nil, st, fmt.Errorf("read %s: %w", h.Name, err)
				}
				id := delta.Digest(sha256.Sum256(c.Data))
				z := enc.EncodeAll(c.Data, nil)
				seg.Chunks = append(seg.Chunks, delta.Chunk{SHA256: id, Size: int64(c.Length), Stored: int64(len(z))})
				st.Chunks++
				if !seen[id] {
					seen[id] = true
					st.UniqueChunks++
					st.Put++
					st.StoredBytes += int64(len(z))
					if err := put(delta.ChunkKey(id), z); err != nil {
						return nil, st, fmt.Errorf("store chunk %s: %w", id, err)
					}
				}
			}
		}
		x.Segments = append(x.Segments, seg)
	}
	// The end of the archive, and whatever padding follows it, is the last literal.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, st, fmt.Errorf("the release is not a valid .tar.gz: %w", err)
	}
	x.Segments = append(x.Segments, delta.Segment{Literal: cr.take()})
	x.Length, x.SHA256 = cr.n, hex.EncodeToString(sum.Sum(nil))
	return x, st, nil
}

// capture counts what is read through it and, while on, keeps it: the tar's own bytes
// between files' contents.
type capture struct {
	r   io.Reader
	on  bool
	buf []byte
	n   int64
}

func (c *capture) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.on {
		c.buf = append(c.buf, p[:n]...)
	}
	return n, err
}

func (c *capture) take() []byte {
	b := c.buf
	c.buf = nil
	return b
}

// Encode is the index as stored: JSON, zstd-compressed with a small window (the decoder on the
// device allocates the window the encoder used).
func Encode(x *delta.Index) ([]byte, error) {
	raw, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithWindowSize(1<<20))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil), nil
}
