package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/otaflow/otaflow/internal/agent/artifact"
	"github.com/otaflow/otaflow/internal/agent/slots"
)

// BaseError is a base that does not match its index: the device downloads the full artifact.
type BaseError struct{ Reason string }

func (e *BaseError) Error() string { return e.Reason }

// Base is the installed version's files, checked against its index: where each of its chunks
// can be read.
type Base struct {
	dir   string
	where map[Digest]place
}

type place struct {
	file      string
	off, size int64
}

// OpenBase reads every file the index of the installed version lists under dir and checks each
// chunk against its digest. A missing or changed file is a *BaseError: a device whose software
// was modified in place builds nothing from it.
func OpenBase(dir string, x *Index) (*Base, error) {
	b := &Base{dir: dir, where: map[Digest]place{}}
	buf := make([]byte, MaxChunk)
	for _, s := range x.Segments {
		if len(s.Chunks) == 0 {
			continue
		}
		name, ok := slots.RelPath(s.File)
		if !ok {
			return nil, &BaseError{fmt.Sprintf("index entry %q points outside the install directory", s.File)}
		}
		if err := b.check(filepath.Join(dir, name), s, buf); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *Base) check(path string, s Segment, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return &BaseError{fmt.Sprintf("the installed %s is missing (%v)", s.File, err)}
	}
	defer f.Close()
	var off int64
	for _, c := range s.Chunks {
		p := buf[:c.Size]
		if _, err := io.ReadFull(f, p); err != nil {
			return &BaseError{fmt.Sprintf("the installed %s is shorter than its release made it", s.File)}
		}
		if sha256.Sum256(p) != c.SHA256 {
			return &BaseError{fmt.Sprintf("the installed %s differs from what its release installed (changed at byte %d)", s.File, off)}
		}
		if _, ok := b.where[c.SHA256]; !ok {
			b.where[c.SHA256] = place{file: path, off: off, size: c.Size}
		}
		off += c.Size
	}
	if n, _ := f.Read(buf[:1]); n > 0 {
		return &BaseError{fmt.Sprintf("the installed %s is longer than its release made it", s.File)}
	}
	return nil
}

// place is where the base holds a chunk.
func (b *Base) place(d Digest) (place, bool) {
	if b == nil {
		return place{}, false
	}
	p, ok := b.where[d]
	return p, ok
}

// Result is what Apply did.
type Result struct {
	Chunks        int   // chunks in the new index
	FromBase      int64 // bytes copied from the installed version
	FromCache     int64 // bytes of chunks an interrupted attempt had fetched
	Fetched       int64 // bytes downloaded (stored, compressed form)
	ChunksFetched int
}

// Source is where missing chunks come from.
type Source struct {
	// Store is the chunk store's URL (the job document's artifact.chunks, presigned for
	// every key under it); a chunk's key is appended to its path.
	Store  string
	Client *http.Client
	// Pacer caps the download rate across all chunks (nil: no cap).
	Pacer *artifact.Pacer
	// Attempts is how often a chunk is fetched before Apply gives up (0: 3); a chunk that
	// arrives but fails its digest is fetched once more, then refused.
	Attempts int
}

// URL is where key (under Prefix) is found in the store.
func (s Source) URL(key string) (string, error) {
	u, err := url.Parse(s.Store)
	if err != nil {
		return "", fmt.Errorf("chunk store URL: %w", err)
	}
	rel, ok := strings.CutPrefix(key, Prefix)
	if !ok || rel == "" {
		return "", fmt.Errorf("%s is not in the chunk store", key)
	}
	u.Path += rel
	u.RawPath = ""
	return u.String(), nil
}

// ErrVerify is a chunk, or the rebuilt tar, that is not what the signed index says: the
// device downloads the full artifact instead.
var ErrVerify = errors.New("delta verification failed")

// Apply writes the release x describes to out, taking chunks from base, then from cache (the
// chunks an interrupted attempt fetched), then from src, and checks the result's length and
// digest against the index (which the signed target binds). Fetched chunks are kept in cache
// until the caller removes it, so an interrupted Apply resumes without fetching them again.
func Apply(ctx context.Context, x *Index, base *Base, cache string, src Source, out string) (Result, error) {
	var r Result
	if err := os.MkdirAll(cache, 0o700); err != nil {
		return r, err
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return r, err
	}
	defer f.Close()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxMemory(MaxChunk*2))
	if err != nil {
		return r, err
	}
	defer dec.Close()
	sum := sha256.New()
	w := io.MultiWriter(f, sum)
	buf := make([]byte, MaxChunk)
	zbuf := bytes.NewBuffer(make([]byte, 0, MaxChunk+MaxChunk/8))
	var open baseFile
	defer open.close()
	var n int64
	for _, s := range x.Segments {
		if _, err := w.Write(s.Literal); err != nil {
			return r, err
		}
		n += int64(len(s.Literal))
		for _, c := range s.Chunks {
			if err := ctx.Err(); err != nil {
				return r, err
			}
			r.Chunks++
			data, from, err := chunk(ctx, c, base, &open, cache, src, dec, buf, zbuf)
			if err != nil {
				return r, err
			}
			switch from {
			case fromBase:
				r.FromBase += c.Size
			case fromCache:
				r.FromCache += c.Size
			case fromStore:
				r.Fetched += c.Stored
				r.ChunksFetched++
			}
			if _, err := w.Write(data); err != nil {
				return r, err
			}
			n += c.Size
		}
	}
	if err := f.Sync(); err != nil {
		return r, err
	}
	if got := hex.EncodeToString(sum.Sum(nil)); n != x.Length || got != x.SHA256 {
		return r, fmt.Errorf("%w: the rebuilt release is %d bytes with sha256 %s; its signed index says %d bytes, %s", ErrVerify, n, got, x.Length, x.SHA256)
	}
	return r, nil
}

// baseFile keeps one file of the base open: chunks come mostly in file order, and a tree of
// thousands of files must not hold thousands of descriptors.
type baseFile struct {
	name string
	f    *os.File
}

func (b *baseFile) get(name string) (*os.File, error) {
	if b.f != nil && b.name == name {
		return b.f, nil
	}
	b.close()
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	b.name, b.f = name, f
	return f, nil
}

func (b *baseFile) close() {
	if b.f != nil {
		b.f.Close()
		b.f = nil
	}
}

type origin int

const (
	fromBase origin = iota
	fromCache
	fromStore
)

// chunk returns c's content from the first place that has it intact.
func chunk(ctx context.Context, c Chunk, base *Base, open *baseFile, cache string, src Source, dec *zstd.Decoder, buf []byte, zbuf *bytes.Buffer) ([]byte, origin, error) {
	p := buf[:c.Size]
	if pl, ok := base.place(c.SHA256); ok {
		bf, err := open.get(pl.file)
		if err != nil {
			return nil, 0, err
		}
		// Checked again: the base was verified, but it is the running software's directory.
		if _, err := bf.ReadAt(p, pl.off); err == nil && sha256.Sum256(p) == c.SHA256 {
			return p, fromBase, nil
		}
	}
	cached := filepath.Join(cache, c.SHA256.String())
	if z, err := os.ReadFile(cached); err == nil {
		if data, err := unpack(dec, z, c, buf); err == nil {
			return data, fromCache, nil
		}
		os.Remove(cached)
	}
	attempts := src.Attempts
	if attempts == 0 {
		attempts = 3
	}
	var lastErr error
	bad := 0
	for i := 0; i < attempts && bad < 2; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			case <-time.After(time.Duration(i) * 500 * time.Millisecond):
			}
		}
		z, err := fetch(ctx, src, c, zbuf)
		if errors.Is(err, ErrVerify) {
			bad++
		}
		if err != nil {
			lastErr = err
			continue
		}
		data, err := unpack(dec, z, c, buf)
		if err != nil {
			bad++
			lastErr = err
			continue
		}
		if err := writeAtomic(cached, z); err != nil {
			return nil, 0, err
		}
		return data, fromStore, nil
	}
	return nil, 0, lastErr
}

// unpack decompresses a stored chunk and checks it against its digest.
func unpack(dec *zstd.Decoder, z []byte, c Chunk, buf []byte) ([]byte, error) {
	data, err := dec.DecodeAll(z, buf[:0])
	if err != nil || int64(len(data)) != c.Size || sha256.Sum256(data) != c.SHA256 {
		return nil, fmt.Errorf("%w: chunk %s is not what the signed index says", ErrVerify, c.SHA256)
	}
	return data, nil
}

// fetch downloads one stored chunk into zbuf.
func fetch(ctx context.Context, src Source, c Chunk, zbuf *bytes.Buffer) ([]byte, error) {
	u, err := src.URL(ChunkKey(c.SHA256))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	hc := src.Client
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("chunk %s: %s: %s", c.SHA256, resp.Status, body)
	}
	// Never more than the index promises: a store that sends more is refused, not buffered.
	zbuf.Reset()
	if _, err := zbuf.ReadFrom(io.LimitReader(src.Pacer.Reader(resp.Body), c.Stored+1)); err != nil {
		return nil, err
	}
	z := zbuf.Bytes()
	if int64(len(z)) != c.Stored {
		return nil, fmt.Errorf("%w: chunk %s is %d bytes stored; its signed index says %d", ErrVerify, c.SHA256, len(z), c.Stored)
	}
	return z, nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".part"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
