package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/stack"
)

// ConsoleFigure is what one open fleet console tab costs at a fleet size: the stack's CPU and
// the bytes sent while the page polls as it does (the overview every 2 s, the device list's
// first page every 10 s) for a minute, beside the same stack idle.
type ConsoleFigure struct {
	Things          int     `json:"things"`
	PopulateSeconds float64 `json:"populateSeconds"`
	// BytesPerMinute is what the tab downloads in a minute; CPUSecondsPerMinute the stack's
	// CPU in that minute less IdleCPUSecondsPerMinute, the same stack's with no tab open.
	BytesPerMinute          int64   `json:"bytesPerMinute"`
	CPUSecondsPerMinute     float64 `json:"cpuSecondsPerMinute"`
	IdleCPUSecondsPerMinute float64 `json:"idleCpuSecondsPerMinute"`
	// OverviewMs and DevicesMs are the median answer times of the two calls.
	OverviewMs float64 `json:"overviewMs"`
	DevicesMs  float64 `json:"devicesMs"`
}

// consoleFigure registers n things, each with the inventory shadow an agent writes, in a stack
// whose jobs service indexes them, then polls its console for a minute as one tab does.
func consoleFigure(ctx context.Context, o *Options, n int) (*ConsoleFigure, error) {
	dir, err := os.MkdirTemp("", "otaflow-bench-console-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	s, err := stack.Start(ctx, stack.Options{DataDir: dir, InMemoryTemporal: true, UIPort: -1, Logger: o.Logger, NoWorker: true, NoAWSQuotas: true})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	f := &ConsoleFigure{Things: n}
	o.say("console: registering %d things with inventory shadows", n)
	start := time.Now()
	err = populate(n, func(i int) error {
		name := fmt.Sprintf("console-%07d", i)
		if _, err := s.Jobs.CreateThing(name, nil); err != nil {
			return err
		}
		version, status := "1.10.2", "SUCCEEDED"
		if i%10 == 0 {
			version = "1.11.6"
		}
		if i%50 == 0 {
			status = "FAILED"
		}
		doc := fmt.Sprintf(`{"state":{"reported":{"software":{"core":%q,"ota_agent":"0.1.0"},"connected":%t,"checkInSeconds":720,"agentVersion":"0.1.0",`+
			`"lastJob":{"jobId":"job-%d","status":%q,"reason":"bench"}}}}`, version, i%7 != 0, i%3, status)
		_, err := s.Jobs.UpdateShadow(name, iotjobs.InventoryShadow, []byte(doc))
		return err
	})
	if err != nil {
		return nil, err
	}
	f.PopulateSeconds = time.Since(start).Seconds()

	get := func(path string) (int64, float64, error) {
		t0 := time.Now()
		resp, err := http.Get(s.ConsoleURL + path)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		nb, err := io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("console %s: %s", path, resp.Status)
		}
		return nb, float64(time.Since(t0).Microseconds()) / 1000, err
	}
	if _, _, err := get("api/overview"); err != nil { // warm: the first answer reads the index once
		return nil, err
	}
	o.say("console: %d things registered in %.0f s; the stack idle for 30 s", n, f.PopulateSeconds)
	c0 := selfCPU()
	time.Sleep(30 * time.Second)
	f.IdleCPUSecondsPerMinute = 2 * (selfCPU() - c0)
	o.say("console: one tab polling for a minute")
	var overview, devices []float64
	c0 = selfCPU()
	for tick := range 30 {
		t0 := time.Now()
		nb, ms, err := get("api/overview")
		if err != nil {
			return nil, err
		}
		f.BytesPerMinute += nb
		overview = append(overview, ms)
		if tick%5 == 0 {
			nb, ms, err := get("api/devices")
			if err != nil {
				return nil, err
			}
			f.BytesPerMinute += nb
			devices = append(devices, ms)
		}
		time.Sleep(2*time.Second - time.Since(t0))
	}
	f.CPUSecondsPerMinute = selfCPU() - c0 - f.IdleCPUSecondsPerMinute
	f.OverviewMs, f.DevicesMs = median(overview), median(devices)
	o.say("console at %d things: one tab %.1f KiB and %.2f s of CPU a minute (idle stack %.2f s); overview %.0f ms, device page %.0f ms",
		n, float64(f.BytesPerMinute)/1024, f.CPUSecondsPerMinute, f.IdleCPUSecondsPerMinute, f.OverviewMs, f.DevicesMs)
	return f, nil
}
