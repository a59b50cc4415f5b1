// Package jobdoc defines the otaflow update job document: what the rollout puts in an IoT job
// and what the device agent accepts. It is versioned; an agent rejects versions it does not know.
package jobdoc

import (
	"regexp"
	"strings"

	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/Masterminds/semver/v3"

	"github.com/otaflow/otaflow/internal/delta"
)

// Type marks a job document as an otaflow update; the agent leaves other jobs alone.
const Type = "otaflow.update"

// SchemaVersion is the document version this code writes and reads.
const SchemaVersion = "1"

// Operations.
const (
	OpUpdate   = "update"
	OpRollback = "rollback"
)

// Software that can be updated (the seed's --software-to-update).
const (
	SoftwareCore     = "core"
	SoftwareOTAAgent = "ota_agent"
	// SoftwareComponents is a Greengrass v2-style deployment: a set of components.
	SoftwareComponents = "components"
)

// Restart policies (signed in the release's TUF target, never in the job document).
const (
	RestartService = "service"
	RestartNone    = "none"
)

// LogLevels are the seed's --update-agent-log-level values.
var LogLevels = []string{"NONE", "TRACE", "DEBUG", "VERBOSE", "INFO", "WARN", "ERROR", "FATAL"}

// Document is one update job's instructions to a device.
type Document struct {
	Type             string `json:"type"`
	SchemaVersion    string `json:"schemaVersion"`
	Operation        string `json:"operation"`
	RolloutID        string `json:"rolloutId"`
	SoftwareToUpdate string `json:"softwareToUpdate"`
	Version          string `json:"version"`
	// Components, for SoftwareComponents, maps each component to the version to install.
	Components map[string]string `json:"components,omitempty"`
	// BakeSeconds is how long the device must stay healthy after installing before it counts
	// as updated; an unhealthy device rolls itself back and reports FAILED.
	BakeSeconds int `json:"bakeSeconds,omitempty"`
	// UpdateAgentLogLevel is the log level the agent uses while it runs this job.
	UpdateAgentLogLevel string `json:"updateAgentLogLevel,omitempty"`
	// Artifact is where to download the software; without it the device switches to the
	// version if it is still in its slot (a rollback), and refuses the job otherwise.
	//
	// The document names the release (software and version: the TUF target
	// <software>/<version>.tar.gz) and nothing else the device acts on: the artifact's length
	// and digest, its health check and restart policy are read from the signed TUF metadata.
	Artifact *Artifact `json:"artifact,omitempty"`
	// DownloadBytesPerSecond caps the device's download rate for this update, so it does not
	// starve the device's own traffic (the agent's own cap, when lower, stands).
	DownloadBytesPerSecond int64 `json:"downloadBytesPerSecond,omitempty"`
}

// PresignedArtifact is the artifact of a release stored at s3URL as a job document names it:
// presigned-URL placeholders for the package and for its bucket's chunk store (package delta).
func PresignedArtifact(s3URL string) *Artifact {
	a := &Artifact{URL: "${aws:iot:s3-presigned-url:" + s3URL + "}"}
	if store, ok := delta.StoreURL(s3URL); ok {
		a.Chunks = "${aws:iot:s3-presigned-url:" + store + "}"
	}
	return a
}

// Artifact says where a release's package is.
type Artifact struct {
	// URL is usually ${aws:iot:s3-presigned-url:...}, replaced by the jobs service.
	URL string `json:"url"`
	// Chunks is the release bucket's chunk store (usually
	// ${aws:iot:s3-presigned-url:s3://BUCKET/delta/}, a grant for every key under it): where a
	// device that can build the release from the version it runs fetches the chunk index and
	// the chunks it lacks. Absent, devices download the full artifact.
	Chunks string `json:"chunks,omitempty"`
}

// IsOtaflow reports whether raw looks like an otaflow document at all (of any version), so
// agents can ignore other job types as the seed requires.
func IsOtaflow(raw []byte) bool {
	var probe struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(raw, &probe) == nil && probe.Type == Type
}

// MaxBytes is the largest document an agent accepts: AWS IoT's job document limit.
const MaxBytes = 32 * 1024

// Parse decodes and validates a document. Unknown fields and schema versions are errors, so a
// device never acts on instructions it does not understand.
func Parse(raw []byte) (*Document, error) {
	if len(raw) > MaxBytes {
		return nil, fmt.Errorf("job document is %d bytes; the limit is %d", len(raw), MaxBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var d Document
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("job document is not a valid otaflow document: %w", err)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// Validate checks every field.
func (d *Document) Validate() error {
	if d.Type != Type {
		return fmt.Errorf("job document type is %q, not %q", d.Type, Type)
	}
	if d.SchemaVersion != SchemaVersion {
		return fmt.Errorf("job document schema version %q is not supported by this agent (it knows %q); update the agent first", d.SchemaVersion, SchemaVersion)
	}
	if d.Operation != OpUpdate && d.Operation != OpRollback {
		return fmt.Errorf("job document operation %q is invalid: use %q or %q", d.Operation, OpUpdate, OpRollback)
	}
	if d.RolloutID != "" && !idRE.MatchString(d.RolloutID) {
		return fmt.Errorf("rolloutId %q is invalid: use 1-64 of a-z A-Z 0-9 _ -", d.RolloutID)
	}
	switch d.SoftwareToUpdate {
	case SoftwareCore, SoftwareOTAAgent:
		if d.Version == "" {
			return fmt.Errorf("job document has no version to install")
		}
		if err := ValidVersion(d.Version); err != nil {
			return err
		}
	case SoftwareComponents:
		if len(d.Components) == 0 {
			return fmt.Errorf("a components deployment names no components")
		}
		for name, v := range d.Components {
			if err := ValidComponentName(name); err != nil {
				return err
			}
			if v == "" {
				return fmt.Errorf("component %q has no version", name)
			}
			if err := ValidVersion(v); err != nil {
				return fmt.Errorf("component %s: %w", name, err)
			}
		}
	default:
		return fmt.Errorf("softwareToUpdate %q is invalid: use %q, %q or %q", d.SoftwareToUpdate, SoftwareCore, SoftwareOTAAgent, SoftwareComponents)
	}
	if a := d.Artifact; a != nil && a.URL == "" {
		return fmt.Errorf("artifact has no url")
	}
	if d.DownloadBytesPerSecond < 0 {
		return fmt.Errorf("downloadBytesPerSecond must not be negative (0 is no cap)")
	}
	if d.BakeSeconds < 0 || d.BakeSeconds > 7*24*3600 {
		return fmt.Errorf("bakeSeconds must be from 0 to a week")
	}
	if d.UpdateAgentLogLevel != "" && !slices.Contains(LogLevels, d.UpdateAgentLogLevel) {
		return fmt.Errorf("updateAgentLogLevel %q is invalid: use one of %v", d.UpdateAgentLogLevel, LogLevels)
	}
	return nil
}

var (
	idRE        = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	componentRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,128}$`)
	versionRE   = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$`)
)

// ValidComponentName checks a component's name: 1-128 of a-z A-Z 0-9 . _ -, and never the
// name of software the agent updates itself (core, ota_agent) or of a deployment
// (components), in any case: a component deployment must not be able to change what the
// device says it runs, which only a signed release may.
func ValidComponentName(name string) error {
	if !componentRE.MatchString(name) {
		return fmt.Errorf("component name %q is invalid: use 1-128 of a-z A-Z 0-9 . _ -", name)
	}
	switch strings.ToLower(name) {
	case SoftwareCore, SoftwareOTAAgent, SoftwareComponents:
		return fmt.Errorf("component name %q is reserved: %s and %s are updated only by signed releases (create-software-update-job), never by a components deployment", name, SoftwareCore, SoftwareOTAAgent)
	}
	return nil
}

// ValidVersion checks that v is a semantic version (MAJOR.MINOR.PATCH, with optional
// pre-release and build parts) made only of characters that are safe in a file name: the
// agent names slots and downloads after it, so "../../x" must never get that far.
func ValidVersion(v string) error {
	if !versionRE.MatchString(v) || strings.Contains(v, "..") {
		return fmt.Errorf("version %q is invalid: use a semantic version such as 1.11.6", v)
	}
	if _, err := semver.StrictNewVersion(v); err != nil {
		return fmt.Errorf("version %q is not a semantic version (MAJOR.MINOR.PATCH): %v", v, err)
	}
	return nil
}

// Marshal encodes a document after validating it.
func (d *Document) Marshal() (string, error) {
	if err := d.Validate(); err != nil {
		return "", err
	}
	raw, err := json.Marshal(d)
	return string(raw), err
}
