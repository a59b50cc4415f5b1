package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"

	"github.com/otaflow/otaflow/internal/agent/artifact"
	"github.com/otaflow/otaflow/internal/delta"
	"github.com/otaflow/otaflow/internal/tuf"
)

// What the job's statusDetails say of the download (on SUCCEEDED and FAILED alike).
const (
	DetailDownload      = "download"      // "delta" or "full"
	DetailDownloadNote  = "downloadNote"  // why a full download, when a delta was offered
	DetailBytesFetched  = "bytesFetched"  // bytes over the wire for the release
	DetailArtifactBytes = "artifactBytes" // the full artifact's size
)

// rate is the download cap for u: the agent's own or the job's, whichever is lower.
func (in *SlotInstaller) rate(u *Update) int64 {
	r := in.DownloadBytesPerSecond
	if d := u.Doc.DownloadBytesPerSecond; d > 0 && (r == 0 || d < r) {
		r = d
	}
	return r
}

// tarPath is where a release rebuilt from chunks is written (an uncompressed tar).
func (in *SlotInstaller) tarPath(u *Update) string {
	return filepath.Join(in.Root, "downloads", u.Software()+"-"+u.Version()+".tar")
}

// indexPath is where the verified chunk index of software at version is kept, for the next
// update to build on.
func (in *SlotInstaller) indexPath(software, version string) string {
	return filepath.Join(in.Root, software, "signed", version+".index")
}

// fetchRelease gets what the update installs from: the release rebuilt from the running
// version and the chunks it lacks when the release offers that, the full artifact otherwise,
// saying in the job's details which and how many bytes it fetched.
func (in *SlotInstaller) fetchRelease(ctx context.Context, u *Update, target *tuf.Target) error {
	u.Note(DetailArtifactBytes, strconv.FormatInt(target.Length, 10))
	os.Remove(in.tarPath(u))
	if m, ok := usesModule(target); ok && target.Delta != nil {
		u.Note(DetailDownloadNote, fmt.Sprintf("the release installs through update module %s, which takes its artifact whole; downloaded the full artifact", m))
	} else if target.Delta != nil {
		n, why, err := in.fetchDelta(ctx, u, target)
		if err != nil {
			return err // the agent is stopping: the chunks fetched so far are kept
		}
		if why == "" {
			u.Note(DetailDownload, "delta")
			u.Note(DetailBytesFetched, strconv.FormatInt(n, 10))
			return nil
		}
		u.Note(DetailDownloadNote, why+"; downloaded the full artifact")
	}
	u.Note(DetailDownload, "full")
	file := in.download(u)
	spec := artifact.Spec{URL: u.Doc.Artifact.URL, Size: target.Length, SHA256: target.SHA256}
	resumed := partial(file, target.Length)
	if err := artifact.Download(ctx, spec, file, artifact.Options{BytesPerSecond: in.rate(u),
		Progress: downloadProgress(ctx, u)}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // resumed on the next start, from the bytes already here
		}
		// A download that failed or did not verify is not kept: the next attempt must not
		// find the disk filled by it.
		os.Remove(file)
		if errors.Is(err, artifact.ErrVerify) {
			return Fail("%s", redactURLs(err.Error()))
		}
		return Fail("download failed: %s", redactURLs(err.Error()))
	}
	u.Note(DetailBytesFetched, strconv.FormatInt(target.Length-resumed, 10))
	return nil
}

// partial is how many bytes of a download an earlier attempt left at path (what resuming it
// does not fetch again).
func partial(path string, size int64) int64 {
	if st, err := os.Stat(path); err == nil && st.Size() <= size {
		return st.Size()
	}
	return 0
}

// fetchDelta rebuilds the release from the running version. It returns the bytes it fetched,
// or why it could not (the caller then downloads the full artifact); an error is the agent
// stopping, with the chunks fetched so far kept for the next start.
func (in *SlotInstaller) fetchDelta(ctx context.Context, u *Update, target *tuf.Target) (int64, string, error) {
	d := target.Delta
	if d.Format != delta.Format {
		return 0, fmt.Sprintf("the release's chunk index is in format %q, which this agent does not read", d.Format), nil
	}
	if u.Doc.Artifact.Chunks == "" {
		return 0, "the job names no chunk store", nil
	}
	if err := tuf.CheckLocation("the chunk store URL", u.Doc.Artifact.Chunks, in.AllowHTTP); err != nil {
		return 0, redactURLs(err.Error()), nil
	}
	active := in.Active(u.Software())
	if active == "" {
		return 0, "no base: nothing is installed to build on", nil
	}
	if r := in.record(u.Software()); r != nil {
		return 0, fmt.Sprintf("no base: the installed %s came through update module %s", active, r.Module), nil
	}
	bt := in.signed(u.Software(), active)
	if bt == nil || bt.Delta == nil || bt.Delta.Format != delta.Format {
		return 0, fmt.Sprintf("no base: the installed %s has no chunk index", active), nil
	}
	src := delta.Source{Store: u.Doc.Artifact.Chunks, Pacer: artifact.NewPacer(in.rate(u))}
	var fetched int64
	// getIndex fetches (or resumes, or finds kept) an index and checks it against its signed
	// length and digest, which artifact.Download does for a file already complete too.
	getIndex := func(path string, d *tuf.Delta) (*delta.Index, error) {
		spec := artifact.Spec{Size: d.IndexLength, SHA256: d.IndexSHA256}
		var err error
		if spec.URL, err = src.URL(d.Index); err != nil {
			return nil, err
		}
		before := partial(path, d.IndexLength)
		if err := artifact.Download(ctx, spec, path, artifact.Options{MaxSize: delta.MaxIndex, BytesPerSecond: in.rate(u)}); err != nil {
			return nil, err
		}
		fetched += d.IndexLength - before
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return delta.Decode(raw)
	}
	stopping := func() bool { return ctx.Err() != nil }
	old, err := getIndex(in.indexPath(u.Software(), active), bt.Delta)
	if err != nil {
		if stopping() {
			return 0, "", ctx.Err()
		}
		return 0, fmt.Sprintf("no base: the chunk index of the installed %s: %s", active, redactURLs(err.Error())), nil
	}
	base, err := delta.OpenBase(in.slots(u.Software()).Dir(active), old)
	if err != nil {
		return 0, "base modified: " + err.Error(), nil
	}
	newIndex := in.indexPath(u.Software(), u.Version())
	x, err := getIndex(newIndex, d)
	if err == nil && (x.Length != d.Length || x.SHA256 != d.SHA256) {
		err = fmt.Errorf("%w: the chunk index rebuilds another tar than the signed target says", delta.ErrVerify)
	}
	if err != nil {
		if stopping() {
			return 0, "", ctx.Err()
		}
		os.Remove(newIndex)
		return 0, "the release's chunk index: " + redactURLs(err.Error()), nil
	}
	// The indexes' JSON is garbage now: give its memory back before the long part (a 1 GiB
	// release's indexes are megabytes, on devices that count them).
	debug.FreeOSMemory()
	if err := u.Report(ctx, StepDownloading, map[string]string{DetailDownload: "delta"}); err != nil {
		return 0, "", err
	}
	cache := filepath.Join(in.Root, "downloads", u.Software()+"-"+u.Version()+".chunks")
	res, err := delta.Apply(ctx, x, base, cache, src, in.tarPath(u))
	fetched += res.Fetched
	if err != nil {
		if stopping() {
			return 0, "", ctx.Err()
		}
		os.RemoveAll(cache)
		os.Remove(in.tarPath(u))
		return 0, "the delta failed: " + redactURLs(err.Error()), nil
	}
	os.RemoveAll(cache)
	return fetched, "", nil
}
