// Package greengrass serves AWS IoT Greengrass (v1) CreateSoftwareUpdateJob on the local jobs
// service: the seed's API, validated exactly as the seed says, starting an otaflow rollout.
package greengrass

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// LatestCoreVersion is the software version an update installs (the seed's
// PlatformSoftwareVersion): the last Greengrass v1 release.
const LatestCoreVersion = "1.11.6"

// Starter starts a rollout and returns the IoT job it created.
type Starter interface {
	StartUpdate(ctx context.Context, req contract.RolloutRequest) (jobID, jobArn string, err error)
}

// Handler serves POST /greengrass/updates.
type Handler struct {
	Jobs    *localiot.Service
	Starter Starter // nil: the endpoint answers that Temporal is not configured
	// Version is the version an update installs; empty: the newest published (with
	// Releases), else the seed's LatestCoreVersion.
	Version string
	// Releases, when set, lists the releases of a software published to ReleaseBucket (the
	// local service's own artifact store): an update installs one of them with its artifact,
	// and is refused before anything starts when none fits, since devices refuse an update
	// with nothing to download.
	Releases      func(ctx context.Context, software string) ([]rolloutops.PublishedRelease, error)
	ReleaseBucket string
	Log           zerolog.Logger
}

// LocalReleases lists the releases of a software published to bucket of svc's own artifact
// store (its TUF targets metadata), for Handler.Releases.
func LocalReleases(svc *localiot.Service, bucket string) func(ctx context.Context, software string) ([]rolloutops.PublishedRelease, error) {
	return func(_ context.Context, software string) ([]rolloutops.PublishedRelease, error) {
		p, err := svc.ArtifactPath(bucket, "tuf/targets.json")
		if err != nil {
			return nil, err
		}
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, rolloutops.ErrNothingPublished
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		rels, err := rolloutops.ReadPublished(f, software)
		if err != nil {
			return nil, fmt.Errorf("read the releases published to bucket %s: %w", bucket, err)
		}
		return rels, nil
	}
}

// request is CreateSoftwareUpdateJob's body.
type request struct {
	S3UrlSignerRole              string   `json:"S3UrlSignerRole"`
	SoftwareToUpdate             string   `json:"SoftwareToUpdate"`
	UpdateAgentLogLevel          string   `json:"UpdateAgentLogLevel"`
	UpdateTargets                []string `json:"UpdateTargets"`
	UpdateTargetsArchitecture    string   `json:"UpdateTargetsArchitecture"`
	UpdateTargetsOperatingSystem string   `json:"UpdateTargetsOperatingSystem"`
}

func writeError(w http.ResponseWriter, status int, kind, msg string) {
	w.Header().Set("X-Amzn-Errortype", kind)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// writeInvalid answers a request that failed validation with the seed's BadRequestException.
func writeInvalid(w http.ResponseWriter, err error) {
	writeError(w, http.StatusBadRequest, "BadRequestException", strings.TrimPrefix(err.Error(), "invalid rollout request: "))
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequestException", "could not read the request body")
		return
	}
	var in request
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "BadRequestException", "request body is not valid JSON: "+err.Error())
		return
	}
	version := h.Version
	if version == "" && h.Releases == nil {
		version = LatestCoreVersion
	}
	req := contract.RolloutRequest{
		Targets: in.UpdateTargets, Architecture: in.UpdateTargetsArchitecture, OperatingSystem: in.UpdateTargetsOperatingSystem,
		SoftwareToUpdate: in.SoftwareToUpdate, Version: version, S3URLSignerRole: in.S3UrlSignerRole,
		UpdateAgentLogLevel: in.UpdateAgentLogLevel,
	}
	token := r.Header.Get("X-Amzn-Client-Token")
	if token != "" {
		req.RolloutID = rolloutclient.RolloutIDForToken(token)
	} else {
		b := make([]byte, 10)
		rand.Read(b)
		req.RolloutID = "gg-" + hex.EncodeToString(b)
	}
	if p, ok := localiot.PrincipalFrom(r.Context()); ok {
		req.StartedBy = p.Name // who signed, for the rollout's history
	}
	if h.Releases != nil {
		if err := req.ValidateBeforeRelease(); err != nil {
			writeInvalid(w, err)
			return
		}
		rels, err := h.Releases(r.Context(), req.SoftwareToUpdate)
		if err != nil && !errors.Is(err, rolloutops.ErrNothingPublished) {
			writeError(w, http.StatusInternalServerError, "InternalServerErrorException", err.Error())
			return
		}
		rel, err := rolloutops.PickRelease(rels, h.ReleaseBucket, req.SoftwareToUpdate, version, req.OperatingSystem, req.Architecture)
		if err != nil {
			writeError(w, http.StatusBadRequest, "BadRequestException", err.Error())
			return
		}
		version, req.Version = rel.Version, rel.Version
		req.Artifact = &contract.Artifact{URL: release.S3URL(h.ReleaseBucket, req.SoftwareToUpdate, rel.Version)}
	}
	if err := req.Validate(); err != nil {
		writeInvalid(w, err)
		return
	}
	if h.Starter == nil {
		writeError(w, http.StatusServiceUnavailable, "InternalServerErrorException", "this jobs service cannot start updates: run it with --temporal-address (as starter dev does)")
		return
	}
	if token != "" {
		fp := sha256.Sum256(body)
		rec, err := h.Jobs.ClaimToken("greengrass:"+token, hex.EncodeToString(fp[:]), req.RolloutID)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "InternalServerErrorException", err.Error())
			return
		}
		if rec.Fingerprint != hex.EncodeToString(fp[:]) {
			writeError(w, http.StatusBadRequest, "BadRequestException",
				fmt.Sprintf("client token %q was already used for a different request; use a new token", token))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	jobID, jobArn, err := h.Starter.StartUpdate(ctx, req)
	if errors.Is(err, rolloutclient.ErrInvalid) || errors.Is(err, rolloutclient.ErrTokenReused) {
		writeError(w, http.StatusBadRequest, "BadRequestException", err.Error())
		return
	}
	if err != nil {
		h.Log.Error().Err(err).Str("rollout", req.RolloutID).Msg("start software update")
		writeError(w, http.StatusInternalServerError, "InternalServerErrorException", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"IotJobId": jobID, "IotJobArn": jobArn, "PlatformSoftwareVersion": version})
}
