// Package artifact downloads update artifacts the way a device must: resumably (HTTP Range,
// so a flaky link never restarts a large download from zero), in constant memory, with the
// length and SHA-256 that the release's signed TUF metadata gives checked as the bytes stream
// in, before anything is installed.
package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Spec is the artifact to fetch: where (the job document) and what it must be (the signed
// TUF target).
type Spec struct {
	URL    string
	Size   int64
	SHA256 string // hex
}

// Options bound a download.
type Options struct {
	// MaxSize refuses artifacts larger than this (0: 4 GiB).
	MaxSize int64
	// BytesPerSecond caps the bandwidth (0: no cap).
	BytesPerSecond int64
	// Attempts is how many times a broken transfer is resumed (0: 5).
	Attempts int
	Client   *http.Client
	// Progress, when set, is called as bytes arrive with the total so far.
	Progress func(done, total int64)
}

// ErrVerify marks an artifact that arrived but is not what the document promised: fatal,
// never retried.
var ErrVerify = errors.New("artifact verification failed")

// Download fetches spec into path (resuming a partial file left by an earlier attempt) and
// verifies it. On a verification failure the file is removed.
func Download(ctx context.Context, spec Spec, path string, o Options) error {
	if o.MaxSize == 0 {
		o.MaxSize = 4 << 30
	}
	if o.Attempts == 0 {
		o.Attempts = 5
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 0}
	}
	if spec.Size <= 0 || spec.Size > o.MaxSize {
		return fmt.Errorf("%w: size %d is outside 1..%d bytes", ErrVerify, spec.Size, o.MaxSize)
	}
	want, err := hex.DecodeString(spec.SHA256)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("%w: sha256 %q is not a hex SHA-256 digest", ErrVerify, spec.SHA256)
	}

	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	// Hash what an earlier attempt left, then resume after it.
	have, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("read partial download: %w", err)
	}
	resumed := have
	if have > spec.Size {
		have, resumed = 0, 0
		h.Reset()
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	var lastErr error
	for attempt := 0; have < spec.Size && attempt < o.Attempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
			}
		}
		n, err := fetch(ctx, o, spec, have, f, h)
		have += n
		lastErr = err
		if errors.Is(err, ErrVerify) {
			break
		}
	}
	if have < spec.Size {
		if errors.Is(lastErr, syscall.ENOSPC) {
			return fmt.Errorf("download %s: got %d of %d bytes: %w (the disk holding %s is full: the artifact needs %d bytes there; free space, then retry the job)",
				spec.URL, have, spec.Size, lastErr, filepath.Dir(path), spec.Size)
		}
		return fmt.Errorf("download %s: got %d of %d bytes: %w", spec.URL, have, spec.Size, lastErr)
	}
	// No fsync: the file is checked against its digest every time it is used (a restarted
	// agent hashes what it finds before resuming or installing), so a file torn by a power cut
	// is found and fetched again, never installed; and syncing 500 MB cost the download two
	// thirds of its speed beside curl.
	if got := h.Sum(nil); hex.EncodeToString(got) != hex.EncodeToString(want) {
		f.Close()
		os.Remove(path)
		if resumed > 0 {
			// The bytes an earlier attempt left (or a power cut tore) were not the artifact's:
			// once more, from nothing.
			return Download(ctx, spec, path, o)
		}
		return fmt.Errorf("%w: sha256 is %x, the job document says %s", ErrVerify, got, spec.SHA256)
	}
	return nil
}

// fetch copies from offset to the end (or until the connection breaks) into f and h.
func fetch(ctx context.Context, o Options, spec Spec, offset int64, f *os.File, h hash.Hash) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, spec.URL, nil)
	if err != nil {
		return 0, err
	}
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch {
	case offset > 0 && resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusOK:
		if offset > 0 { // the server ignores Range: start over
			if err := f.Truncate(0); err != nil {
				return 0, err
			}
			h.Reset()
			offset = 0
		}
	case resp.StatusCode == http.StatusForbidden:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("artifact URL refused (%s): %s; the presigned URL may have expired", resp.Status, body)
	default:
		return 0, fmt.Errorf("artifact download: %s", resp.Status)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, err
	}
	var r io.Reader = io.LimitReader(resp.Body, spec.Size-offset+1)
	r = NewPacer(o.BytesPerSecond).Reader(r)
	var progress func(int64)
	if o.Progress != nil {
		progress = func(n int64) { o.Progress(offset+n, spec.Size) }
	}
	n, err := copyHashed(f, h, r, progress)
	if offset+n > spec.Size {
		return n, fmt.Errorf("%w: the server sent more than the %d bytes the document promised", ErrVerify, spec.Size)
	}
	return n, err
}

// copyBufferSize is copyHashed's read size: with 32 KiB reads the download ran at half the
// speed of curl.
const copyBufferSize = 1 << 20

// copyHashed copies r into w in reads of up to 1 MiB and hashes what was written. When it
// returns, h holds exactly the n bytes written to w, error or not, so an attempt resumes right
// behind them. (Hashing through io.MultiWriter left the bytes of a write that failed part way,
// on a full disk, out of the hash: an attempt that finished after space came free then failed
// verification, which is never retried.) progress, when set, gets the running total after each
// write.
//
// The hash runs in line. Hashing on a goroutine of its own overlaps it with the next read and
// write, but costs context switches, and on 2 cores, where the server and the loopback take
// the other core, it gained nothing beyond the run-to-run spread (docs/benchmarks.md).
func copyHashed(w io.Writer, h hash.Hash, r io.Reader, progress func(int64)) (n int64, err error) {
	buf := make([]byte, copyBufferSize)
	for {
		nr, rerr := r.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			if nw > 0 {
				h.Write(buf[:nw])
				n += int64(nw)
				if progress != nil {
					progress(n)
				}
			}
			if werr == nil && nw < nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// Pacer keeps downloads under a byte rate: every reader it wraps shares the one budget, so a
// download made of many requests (a delta's chunks) is paced as one.
type Pacer struct {
	Rate  int64 // bytes per second; 0 is no cap
	start time.Time
	n     int64
}

// NewPacer paces at rate bytes per second from now (0: no cap).
func NewPacer(rate int64) *Pacer { return &Pacer{Rate: rate, start: time.Now()} }

// Reader wraps r so its reads keep to the pacer's rate.
func (p *Pacer) Reader(r io.Reader) io.Reader {
	if p == nil || p.Rate <= 0 {
		return r
	}
	return &paced{r: r, p: p}
}

type paced struct {
	r io.Reader
	p *Pacer
}

func (t *paced) Read(b []byte) (int, error) {
	if len(b) > int(t.p.Rate) {
		b = b[:t.p.Rate]
	}
	n, err := t.r.Read(b)
	t.p.n += int64(n)
	if due := time.Duration(float64(t.p.n) / float64(t.p.Rate) * float64(time.Second)); due > time.Since(t.p.start) {
		time.Sleep(due - time.Since(t.p.start))
	}
	return n, err
}
