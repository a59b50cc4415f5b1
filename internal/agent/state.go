package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/otaflow/otaflow/internal/jobdoc"
)

// State is what the agent keeps on disk: the installed version of each piece of software it
// manages, and the job it is working on, so a restart resumes instead of starting over.
type State struct {
	// Installed holds core and ota_agent only: what signed releases installed.
	Installed map[string]Installed `json:"installed"`
	// Components holds the versions components deployments set, each checked against its
	// signed recipe; never core or ota_agent.
	Components map[string]Installed `json:"components,omitempty"`
	// CurrentJob is the job being applied; empty when idle.
	CurrentJob string `json:"currentJob,omitempty"`
	// Step is where CurrentJob is (step.go).
	Step Step `json:"step,omitempty"`
	// Starts counts agent starts while a switched version awaits confirmation; past the
	// limit the update is rolled back, which breaks reboot loops.
	Starts int `json:"starts,omitempty"`
	// DeferredSince is when components first deferred CurrentJob; the deferral limit counts
	// from it, across restarts.
	DeferredSince time.Time `json:"deferredSince,omitzero"`
	// Health is the health record since core was last updated (health.go).
	Health HealthState `json:"health,omitzero"`
}

// Installed is one piece of software's version and the one before it.
type Installed struct {
	Version  string `json:"version"`
	Previous string `json:"previous,omitempty"`
}

const stateFile = "state.json"

func (s *State) clone() State {
	c := *s
	c.Installed = maps.Clone(s.Installed)
	c.Components = maps.Clone(s.Components)
	c.Health.Metrics = maps.Clone(s.Health.Metrics)
	return c
}

func loadState(dir string) (*State, error) {
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return &State{Installed: map[string]Installed{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("agent state %s is corrupt (%v); restore it from backup or remove it to start from the initial version", filepath.Join(dir, stateFile), err)
	}
	if s.Installed == nil {
		s.Installed = map[string]Installed{}
	}
	// Earlier agents kept component versions beside core and ota_agent: move them out, so
	// a component can never stand for the software the agent updates.
	for name, in := range s.Installed {
		if name != jobdoc.SoftwareCore && name != jobdoc.SoftwareOTAAgent {
			if s.Components == nil {
				s.Components = map[string]Installed{}
			}
			if jobdoc.ValidComponentName(name) == nil {
				s.Components[name] = in
			}
			delete(s.Installed, name)
		}
	}
	return &s, nil
}

// saveState writes the state atomically: a crash leaves either the old or the new file.
func saveState(dir string, s *State) error { return saveStateSync(dir, s, true) }

func saveStateSync(dir string, s *State, sync bool) error {
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, stateFile), raw, sync)
}

// writeFileAtomic replaces path by renaming a temporary file over it; with sync, the data and
// the rename reach the disk before it returns (a power cut leaves the old or the new file).
func writeFileAtomic(path string, data []byte, sync bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if sync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// stateWriteError is a state change that did not reach the disk.
type stateWriteError struct {
	dir string
	err error
}

func (e *stateWriteError) Error() string { return "write agent state: " + e.err.Error() }
func (e *stateWriteError) Unwrap() error { return e.err }

// unwritable reports whether the state directory cannot take writes at all (full, over
// quota, read-only): retrying the job would not help.
func (e *stateWriteError) unwritable() bool {
	return errors.Is(e.err, syscall.ENOSPC) || errors.Is(e.err, syscall.EDQUOT) || errors.Is(e.err, syscall.EROFS)
}
