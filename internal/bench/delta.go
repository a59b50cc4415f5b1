package bench

import (
	"archive/tar"
	"cmp"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/localiot"
	iotstore "github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/internal/tuf"
)

// DeltaFigures compare delta updates with full downloads through two real agents: one takes
// each release as a delta, the other (whose jobs name no chunk store) downloads it whole.
type DeltaFigures struct {
	MB   int        `json:"artifactMB"`
	Rows []DeltaRow `json:"rows"`
	// Publishing successive releases (each changing 1 % of the tree).
	Publish []PublishRow `json:"publish"`
}

// DeltaRow is one release installed both ways.
type DeltaRow struct {
	ChangedPercent int     `json:"changedPercent"`
	ChangedBytes   int64   `json:"changedBytes"`
	IndexBytes     int64   `json:"indexBytes"`
	FullBytes      int64   `json:"fullBytes"`
	FullSeconds    float64 `json:"fullSeconds"`
	DeltaBytes     int64   `json:"deltaBytes"`
	DeltaSeconds   float64 `json:"deltaSeconds"`
	// Ratio is DeltaBytes / (ChangedBytes + IndexBytes): the goal is at most 1.3.
	Ratio float64 `json:"ratio"`
	// The delta agent's CPU time and peak RSS over the job (download, rebuild, unpack).
	AgentCPUSeconds float64 `json:"agentCPUSeconds"`
	AgentPeakRSSKiB int64   `json:"agentPeakRSSKiB"`
	// The full agent's, for comparison.
	FullCPUSeconds float64 `json:"fullCPUSeconds"`
	FullPeakRSSKiB int64   `json:"fullPeakRSSKiB"`
}

// PublishRow is one publish: its time and the store's size after it.
type PublishRow struct {
	Release     int     `json:"release"`
	Seconds     float64 `json:"seconds"`
	ChunkBytes  int64   `json:"chunkStoreBytes"`
	FullBytes   int64   `json:"fullArtifactBytes"`
	ChunksAdded int     `json:"chunksAdded"`
}

// deltaTree is a software tree of 1 MiB files whose versions differ by whole regions:
// version k rewrites regions of 512 KiB at random places in random files.
type deltaTree struct {
	files int
	edits [][]edit // per version after the first
}

type edit struct {
	file, off, n int
	seed         uint64
}

const deltaFile = 1 << 20

// change adds a version that rewrites percent of the tree.
func (t *deltaTree) change(percent int, r *mrand.Rand) int64 {
	regions := max(1, percent*t.files*2/100) // 512 KiB each: two per percent of 1 MiB files
	var es []edit
	for _, f := range r.Perm(t.files)[:min(regions, t.files)] {
		es = append(es, edit{file: f, off: r.IntN(deltaFile - deltaFile/2), n: deltaFile / 2, seed: r.Uint64()})
	}
	for i := len(es); i < regions; i++ { // more regions than files: second regions
		es = append(es, edit{file: r.IntN(t.files), off: 0, n: deltaFile / 2, seed: r.Uint64()})
	}
	t.edits = append(t.edits, es)
	return int64(len(es)) * deltaFile / 2
}

// write packs the tree's latest version.
func (t *deltaTree) write(path string) error {
	return writeTarGz(path, func(tw *tar.Writer) error {
		body := make([]byte, deltaFile)
		for i := range t.files {
			mrand.NewChaCha8(seed32(uint64(i))).Read(body)
			for _, es := range t.edits {
				for _, e := range es {
					if e.file == i {
						mrand.NewChaCha8(seed32(e.seed)).Read(body[e.off : e.off+e.n])
					}
				}
			}
			if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("lib/part%03d.so", i), Mode: 0o644, Size: deltaFile, Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			if _, err := tw.Write(body); err != nil {
				return err
			}
		}
		return nil
	})
}

func seed32(n uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(n >> (8 * i))
	}
	return s
}

// deltaFigures publishes a MB MiB tree and releases changing 1 %, 10 % and 50 % of it, has one
// agent take each as a delta and another download each whole, then publishes 10 more releases
// for the store's growth.
func deltaFigures(ctx context.Context, o *Options) (*DeltaFigures, error) {
	s, dir, err := newStack(ctx, o)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer s.Close()
	repo, err := tuf.Init(filepath.Join(dir, "release-repo"), tuf.Options{})
	if err != nil {
		return nil, err
	}
	rootFile := filepath.Join(dir, "release-repo", "metadata", "root.json")
	store := s.ArtifactStore()
	bin, _, err := buildAgent(ctx, o, dir)
	if err != nil {
		return nil, err
	}
	deltaAgent, err := startAgent(s, bin, "delta-1", dir, rootFile, "bench")
	if err != nil {
		return nil, err
	}
	defer stopAgent(deltaAgent)
	fullAgent, err := startAgent(s, bin, "full-1", dir, rootFile, "bench")
	if err != nil {
		return nil, err
	}
	defer stopAgent(fullAgent)
	time.Sleep(2 * time.Second) // connected and subscribed

	fig := &DeltaFigures{MB: o.DeltaMB}
	tree := &deltaTree{files: o.DeltaMB}
	r := mrand.New(mrand.NewPCG(1, 2))
	version := 0
	publish := func() (*release.Release, time.Duration, error) {
		version++
		file := filepath.Join(dir, "release.tar.gz")
		if err := tree.write(file); err != nil {
			return nil, 0, err
		}
		defer os.Remove(file)
		began := time.Now()
		rel, err := release.Publish(ctx, repo, &store, "bench", file, tuf.Custom{Software: jobdoc.SoftwareCore, Version: fmt.Sprintf("2.%d.0", version), OS: "ubuntu", Architecture: "x86_64"})
		return rel, time.Since(began), err
	}
	install := func(rel *release.Release, thing string, cmd *procHandle, chunks bool) (map[string]string, float64, float64, int64, error) {
		a := jobdoc.PresignedArtifact(rel.Artifact.URL)
		if !chunks {
			a.Chunks = ""
		}
		d := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: "bench",
			SoftwareToUpdate: jobdoc.SoftwareCore, Version: rel.Version, Artifact: a}
		cmd.resetPeak()
		c0 := cpuTicks(cmd.pid)
		details, secs, err := runJob(s, "install-"+thing+"-"+strconv.Itoa(version), thing, d)
		return details, secs, float64(cpuTicks(cmd.pid)-c0) / 100, procStatus(cmd.pid, "VmHWM"), err
	}
	dh, fh := &procHandle{pid: deltaAgent.Process.Pid}, &procHandle{pid: fullAgent.Process.Pid}

	o.say("delta: publishing the %d MiB base release; both agents install it whole", o.DeltaMB)
	rel, _, err := publish()
	if err != nil {
		return nil, err
	}
	for _, a := range []struct {
		thing string
		h     *procHandle
	}{{"delta-1", dh}, {"full-1", fh}} {
		if _, _, _, _, err := install(rel, a.thing, a.h, true); err != nil {
			return nil, err
		}
	}
	for _, pct := range []int{1, 10, 50} {
		changed := tree.change(pct, r)
		rel, _, err := publish()
		if err != nil {
			return nil, err
		}
		o.say("delta: %d %% changed: the delta agent builds it, the full agent downloads it", pct)
		dd, dsecs, dcpu, drss, err := install(rel, "delta-1", dh, true)
		if err != nil {
			return nil, err
		}
		if dd[agent.DetailDownload] != "delta" {
			return nil, fmt.Errorf("the delta agent downloaded %d %% in full: %s", pct, dd[agent.DetailDownloadNote])
		}
		fd, fsecs, fcpu, frss, err := install(rel, "full-1", fh, false)
		if err != nil {
			return nil, err
		}
		row := DeltaRow{ChangedPercent: pct, ChangedBytes: changed, FullSeconds: fsecs, DeltaSeconds: dsecs,
			AgentCPUSeconds: dcpu, AgentPeakRSSKiB: drss, FullCPUSeconds: fcpu, FullPeakRSSKiB: frss}
		row.DeltaBytes, _ = strconv.ParseInt(dd[agent.DetailBytesFetched], 10, 64)
		row.FullBytes, _ = strconv.ParseInt(fd[agent.DetailBytesFetched], 10, 64)
		if st, err := os.Stat(filepath.Join(dir, "artifacts", "bench", "delta", "index", "core", rel.Version+".json.zst")); err == nil {
			row.IndexBytes = st.Size()
		}
		row.Ratio = float64(row.DeltaBytes) / float64(row.ChangedBytes+row.IndexBytes)
		fig.Rows = append(fig.Rows, row)
	}

	publishes := cmp.Or(o.DeltaPublishes, 10)
	o.say("delta: publishing %d successive releases, each changing 1 %%", publishes)
	for i := 1; i <= publishes; i++ {
		chunks := filepath.Join(dir, "artifacts", "bench", "delta", "chunks")
		before, _ := dirStats(chunks)
		tree.change(1, r)
		_, took, err := publish()
		if err != nil {
			return nil, err
		}
		after, _ := dirStats(chunks)
		_, storeBytes := dirStats(filepath.Join(dir, "artifacts", "bench", "delta"))
		_, fullBytes := dirStats(filepath.Join(dir, "artifacts", "bench", "core"))
		fig.Publish = append(fig.Publish, PublishRow{Release: i, Seconds: took.Seconds(), ChunkBytes: storeBytes,
			FullBytes: fullBytes, ChunksAdded: after - before})
	}
	return fig, nil
}

// procHandle is a measured process.
type procHandle struct{ pid int }

// resetPeak resets the process's peak RSS (VmHWM), so the next reading is this job's.
func (p *procHandle) resetPeak() {
	os.WriteFile("/proc/"+strconv.Itoa(p.pid)+"/clear_refs", []byte("5"), 0)
}

// runJob creates a one-device job with doc and waits for its end: the execution's details
// and the seconds it took.
func runJob(s *stack.Stack, jobID, thing string, doc jobdoc.Document) (map[string]string, float64, error) {
	body, err := doc.Marshal()
	if err != nil {
		return nil, 0, err
	}
	began := time.Now()
	if _, err := s.Jobs.CreateJob(localiot.CreateJobInput{JobID: jobID, Targets: []string{thing}, Document: body,
		Presign: &iotstore.PresignConfig{RoleArn: "arn:aws:iam::0:role/bench", ExpiresInSec: 3600}}); err != nil {
		return nil, 0, err
	}
	for {
		e, err := s.Jobs.DescribeJobExecution(jobID, thing)
		if err != nil {
			return nil, 0, err
		}
		if e.Status.Terminal() {
			if e.Status != iotstore.ExecSucceeded {
				return e.StatusDetails, 0, fmt.Errorf("job %s on %s ended %s: %s", jobID, thing, e.Status, e.StatusDetails["reason"])
			}
			return e.StatusDetails, time.Since(began).Seconds(), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dirStats counts the files under dir and their bytes.
func dirStats(dir string) (files int, bytes int64) {
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files++
			bytes += info.Size()
		}
		return nil
	})
	return files, bytes
}
