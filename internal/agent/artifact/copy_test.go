package artifact

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// failingWriter takes limit bytes, then writes short and fails.
type failingWriter struct {
	bytes.Buffer
	limit int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if room := w.limit - w.Len(); len(p) > room {
		w.Buffer.Write(p[:room])
		return room, errors.New("no space left on device")
	}
	return w.Buffer.Write(p)
}

// copyHashed leaves the hash holding exactly what was written, whatever ends the copy: all of
// it, or a write that fails part way through a buffer (a resumed attempt continues behind
// those bytes with the same hash, so one byte too many or too few would fail a good download).
func TestCopyHashedHashesWhatWasWritten(t *testing.T) {
	data := make([]byte, 5*copyBufferSize+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	for name, tc := range map[string]struct {
		r     io.Reader
		limit int
		fails bool
	}{
		"whole, large reads":       {bytes.NewReader(data), len(data), false},
		"whole, one-byte reads":    {iotest.OneByteReader(bytes.NewReader(data[:100_000])), 100_000, false},
		"whole, half reads":        {iotest.HalfReader(bytes.NewReader(data)), len(data), false},
		"write fails mid-buffer":   {bytes.NewReader(data), 3*copyBufferSize + 777, true},
		"write fails on the first": {bytes.NewReader(data), 10, true},
	} {
		t.Run(name, func(t *testing.T) {
			w := &failingWriter{limit: tc.limit}
			h := sha256.New()
			var reported int64
			n, err := copyHashed(w, h, tc.r, func(done int64) {
				require.Greater(t, done, reported)
				reported = done
			})
			require.Equal(t, int64(w.Len()), n, "n is what was written")
			require.Equal(t, n, reported, "the last progress is the total")
			want := sha256.Sum256(w.Bytes())
			require.Equal(t, want[:], h.Sum(nil), "the hash is of exactly what was written")
			require.Equal(t, data[:w.Len()], w.Bytes())
			if tc.fails {
				require.ErrorContains(t, err, "no space left")
			} else {
				require.NoError(t, err)
				require.Equal(t, tc.limit, w.Len())
			}
		})
	}

	// A read error ends the copy with what came before it hashed.
	h := sha256.New()
	var w bytes.Buffer
	n, err := copyHashed(&w, h, io.MultiReader(bytes.NewReader(data[:1000]), iotest.ErrReader(io.ErrUnexpectedEOF)), nil)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.EqualValues(t, 1000, n)
	want := sha256.Sum256(data[:1000])
	require.Equal(t, want[:], h.Sum(nil))
}
