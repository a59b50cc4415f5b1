package bench

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/otaflow/otaflow/internal/agent/artifact"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/internal/tuf"
)

func connect(url, id, user, pass string) (paho.Client, error) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).SetCleanSession(true))
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", id, tok.Error())
	}
	return c, nil
}

// notifyLatency measures job created (the CreateJob call through the AWS SDK) → the device's
// notify-next message, and beside it a raw MQTT publish → receive on the same broker.
func notifyLatency(ctx context.Context, o *Options) (*Latency, error) {
	s, dir, err := newStack(ctx, o)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer s.Close()
	svcUser, svcPass := s.MQTTServiceCredentials()
	pub, err := connect(s.Broker.URL(), "bench-publisher", svcUser, svcPass)
	if err != nil {
		return nil, err
	}
	defer pub.Disconnect(0)
	o.say("notify latency: %d samples", o.Samples)
	var viaJobs, raw []float64
	for i := 0; i < o.Samples; i++ {
		thing := fmt.Sprintf("latency-%04d", i)
		if _, err := s.Jobs.CreateThing(thing, nil); err != nil {
			return nil, err
		}
		dev, err := connect(s.Broker.URL(), thing, "", "")
		if err != nil {
			return nil, err
		}
		got := make(chan time.Time, 4)
		base := "$aws/things/" + thing + "/jobs/"
		tok := dev.SubscribeMultiple(map[string]byte{base + "notify-next": 1, base + "probe": 1}, func(_ paho.Client, m paho.Message) {
			got <- time.Now()
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("subscribe: %v", tok.Error())
		}
		wait := func() (time.Time, error) {
			select {
			case at := <-got:
				return at, nil
			case <-time.After(10 * time.Second):
				return time.Time{}, fmt.Errorf("%s got nothing within 10s", thing)
			}
		}
		// Raw MQTT: the service's client publishes straight to the device.
		start := time.Now()
		pub.Publish(base+"probe", 1, false, []byte("x"))
		at, err := wait()
		if err != nil {
			return nil, err
		}
		raw = append(raw, float64(at.Sub(start).Microseconds())/1000)
		// A job: CreateJob over HTTP through the AWS SDK, then the jobs service's notify-next.
		start = time.Now()
		if _, err := s.IoT.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("latency-" + strconv.Itoa(i)), Targets: []string{thing},
			Document: aws.String(`{"type":"other"}`)}); err != nil {
			return nil, err
		}
		at, err = wait()
		if err != nil {
			return nil, err
		}
		viaJobs = append(viaJobs, float64(at.Sub(start).Microseconds())/1000)
		dev.Disconnect(0)
	}
	return &Latency{Samples: o.Samples, P50ms: percentile(viaJobs, 50), P99ms: percentile(viaJobs, 99),
		RawP50ms: percentile(raw, 50), RawP99ms: percentile(raw, 99)}, nil
}

// procStatus reads a field of /proc/<pid>/status in KiB.
func procStatus(pid int, field string) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// cpuTicks is a process's user+system clock ticks.
func cpuTicks(pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// writeArtifact writes a .tar.gz holding one incompressible file of mb MiB, in constant
// memory.
func writeArtifact(path string, mb int) error {
	return writeTarGz(path, func(tw *tar.Writer) error {
		size := int64(mb) << 20
		if err := tw.WriteHeader(&tar.Header{Name: "bin/payload", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		var seed [32]byte
		rand.Read(seed[:])
		_, err := io.CopyN(tw, mrand.NewChaCha8(seed), size)
		return err
	})
}

// writeTarGz writes a .tar.gz whose entries write adds, gzip at level "stored": the figures
// are about bytes moved, not gzip.
func writeTarGz(path string, write func(tw *tar.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, _ := gzip.NewWriterLevel(f, gzip.NoCompression)
	tw := tar.NewWriter(gz)
	if err := write(tw); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return f.Close()
}

// buildAgent builds the agent binary (static, stripped, as shipped) into dir.
func buildAgent(ctx context.Context, o *Options, dir string) (string, int64, error) {
	bin := filepath.Join(dir, "otaflow-agent")
	o.say("agent: building %s (static, stripped)", o.AgentPackage)
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, o.AgentPackage)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("build the agent (run the benchmark from the repository): %v: %s", err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		return "", 0, err
	}
	return bin, st.Size(), nil
}

// startAgent registers thing and runs the agent binary as it, on version 1.0.0, with its state
// and install root under dir/thing, trusting the release repository whose root is rootFile
// and whose metadata is in bucket.
func startAgent(s *stack.Stack, bin, thing, dir, rootFile, bucket string) (*exec.Cmd, error) {
	if _, err := s.Jobs.CreateThing(thing, nil); err != nil {
		return nil, err
	}
	home := filepath.Join(dir, thing)
	cmd := exec.Command(bin, "--thing-name", thing, "--broker", s.Broker.URL(), "--state-dir", filepath.Join(home, "state"),
		"--install-root", filepath.Join(home, "root"), "--trusted-root", rootFile, "--tuf-url", release.MetadataURL(s.ArtifactStore().Endpoint, bucket), "--initial-version", "1.0.0",
		"--ipc-socket", "off", "--log-level", "warn", "--dev", "--os", "ubuntu", "--architecture", "x86_64")
	cmd.Env = append(os.Environ(), "INVOCATION_ID=bench") // as under systemd
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

func stopAgent(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// agentFigures builds the agent, measures it idle on the local stack and while it installs
// an ArtifactMB artifact for real, then times its downloader against curl on the same URL.
func agentFigures(ctx context.Context, o *Options) (*AgentFigures, *Download, error) {
	s, dir, err := newStack(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	defer s.Close()
	var fig *AgentFigures
	repo, err := tuf.Init(filepath.Join(dir, "release-repo"), tuf.Options{})
	if err != nil {
		return nil, nil, err
	}
	rootFile := filepath.Join(dir, "release-repo", "metadata", "root.json")
	store := s.ArtifactStore()
	var agentCmd *exec.Cmd
	if o.AgentPackage != "" {
		bin, size, err := buildAgent(ctx, o, dir)
		if err != nil {
			return nil, nil, err
		}
		fig = &AgentFigures{BinaryBytes: size}
		if agentCmd, err = startAgent(s, bin, "footprint-1", dir, rootFile, "bench"); err != nil {
			return nil, nil, err
		}
		defer stopAgent(agentCmd)
		pid := agentCmd.Process.Pid
		time.Sleep(3 * time.Second) // connected and subscribed
		o.say("agent: measuring idle for 10s")
		t0, c0 := time.Now(), cpuTicks(pid)
		time.Sleep(10 * time.Second)
		fig.IdleSeconds = time.Since(t0).Seconds()
		fig.IdleCPUPercent = float64(cpuTicks(pid)-c0) / 100 / fig.IdleSeconds * 100 // USER_HZ is 100 on Linux
		fig.IdleRSSKiB = procStatus(pid, "VmRSS")
	}
	if o.ArtifactMB == 0 {
		return fig, nil, nil
	}
	o.say("artifact: writing and publishing %d MiB", o.ArtifactMB)
	file := filepath.Join(dir, "big.tar.gz")
	if err := writeArtifact(file, o.ArtifactMB); err != nil {
		return nil, nil, err
	}
	rel, err := release.Publish(ctx, repo, &store, "bench", file, tuf.Custom{Software: jobdoc.SoftwareCore, Version: "9.0.0", OS: "ubuntu", Architecture: "x86_64"})
	if err != nil {
		return nil, nil, err
	}
	os.Remove(file)

	if agentCmd != nil {
		o.say("agent: installing the %d MiB artifact", o.ArtifactMB)
		d := jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: "bench",
			SoftwareToUpdate: jobdoc.SoftwareCore, Version: "9.0.0",
			Artifact: jobdoc.PresignedArtifact(rel.Artifact.URL)}
		_, secs, err := runJob(s, "big-install", "footprint-1", d)
		if err != nil {
			return nil, nil, fmt.Errorf("the %d MiB install: %w", o.ArtifactMB, err)
		}
		fig.InstallSeconds = secs
		fig.InstallPeakRSSKiB = procStatus(agentCmd.Process.Pid, "VmHWM")
		fig.InstallMB = o.ArtifactMB
		os.RemoveAll(filepath.Join(dir, "footprint-1"))
	}

	// The agent's downloader (the same code, in `starter download`) against curl on the same
	// presigned URL. Each tool times its own transfer (the downloader from its request to the
	// verified file, curl its %{time_total}), so neither's process start counts: the starter
	// binary takes a quarter of a second to start, and a device's agent is running when a job
	// comes. One unmeasured round first (the stack just started: its first seconds slowed
	// whichever ran first), then five, the order swapped each round.
	spec := artifact.Spec{Size: rel.Length, SHA256: rel.SHA256}
	fetchers := []func(url, out string) (float64, error){
		func(url, out string) (float64, error) {
			return timedRun(ctx, o.Starter, "download", "--url", url, "--size", strconv.FormatInt(spec.Size, 10),
				"--sha256", spec.SHA256, "--out", out)
		},
		func(url, out string) (float64, error) {
			return timedRun(ctx, "curl", "-sSf", "-o", out, "-w", "%{time_total}", url)
		},
	}
	secs := [2][]float64{}
	const rounds = 5
	for r := -1; r < rounds; r++ {
		for i := range fetchers {
			tool := (i + r + 1) % 2 // 0 the agent's downloader, 1 curl
			url := s.Jobs.PresignURL("bench", "core/9.0.0.tar.gz", time.Hour)
			out := filepath.Join(dir, "dl-"+strconv.Itoa(tool))
			// Nothing dirty in the page cache (the artifact just written, the other tool's
			// file): else whichever runs first waits for that writeback.
			syscall.Sync()
			// And the pages each tool writes into are ones the machine already holds (see
			// warmPageCache).
			if err := warmPageCache(out+".warm", 2*rel.Length); err != nil {
				return nil, nil, err
			}
			t, err := fetchers[tool](url, out)
			os.Remove(out)
			if err != nil {
				return nil, nil, err
			}
			if r >= 0 {
				secs[tool] = append(secs[tool], t)
			}
		}
		if r >= 0 {
			o.say("download: round %d/%d: agent %.2fs, curl %.2fs", r+1, rounds, secs[0][r], secs[1][r])
		}
	}
	agentS, curlS := secs[0], secs[1]
	mb := float64(rel.Length) / (1 << 20)
	dl := &Download{MB: o.ArtifactMB, AgentMBps: mb / median(agentS), CurlMBps: mb / median(curlS)}
	dl.Ratio = dl.AgentMBps / dl.CurlMBps
	return fig, dl, nil
}

// warmPageCache writes size bytes to path and removes the file, so that the next writer's page
// cache is memory the machine holds. On a VM that hands free memory back to its host (free
// page reporting, as on the Firecracker VMs these figures come from), pages left free for a
// couple of seconds go back, and the next writer pays a host fault on each of its pages:
// `dd bs=1M count=500` to ext4 took 0.07 s right after a removed file's pages came free and
// 0.21 s three seconds later, and a download that met such pages spent 0.3 to 0.6 s in its
// file writes instead of 0.09. That landed on one tool's round or the other's by the luck of
// the host's timing and decided the comparison more than either tool did; a device's agent
// writes into memory its kernel owns. This narrows the chance rather than closing it: the
// host's reporting runs on a timer of its own and may still take the pages just freed.
func warmPageCache(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
	}
	f.Close()
	return os.Remove(path)
}

// timedRun runs a command that prints the seconds it took, and returns them.
func timedRun(ctx context.Context, name string, args ...string) (float64, error) {
	b, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("%s: %v: %s", name, err, ee.Stderr)
		}
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		return 0, fmt.Errorf("%s printed %q, not the seconds it took", name, b)
	}
	return secs, nil
}
