package agent

import (
	"context"
	"fmt"

	"github.com/Masterminds/semver/v3"

	"github.com/otaflow/otaflow/internal/jobdoc"
)

// Installer applies an update to the device. The agent calls its steps in order, persisting
// the step it reached before each (see Step), and reports every outcome:
//
//	Prepare → Install → Switch → Start → Verify → Commit
//
// An error from Prepare or Install leaves the running version untouched. After Switch has
// been called, any error makes the agent call Rollback, which must leave the device running
// u.From again. An *UpdateError says why in words an operator reads in the job's statusDetails;
// any other error is transient (the agent retries the job later).
//
// The agent's own implementation is SlotInstaller (versions side by side, an atomic link
// switch); the fleet simulator has a simulated one.
type Installer interface {
	// Prepare checks the device's requirements and fetches and verifies what the update
	// needs. It may report StepDownloading (with progress) through u.Report.
	Prepare(ctx context.Context, u *Update) error
	// Install places the new version beside the running one, inactive.
	Install(ctx context.Context, u *Update) error
	// Switch makes the new version the active one, atomically.
	Switch(ctx context.Context, u *Update) error
	// Start (re)starts the software on its active version, as the restart policy says.
	Start(ctx context.Context, u *Update) error
	// Verify checks the new version's health through the bake time.
	Verify(ctx context.Context, u *Update) error
	// Checks reports whether Verify has a health check to run for u.
	Checks(u *Update) bool
	// Commit makes the update final (post-update scripts, clean-up).
	Commit(ctx context.Context, u *Update) error
	// Rollback makes u.From the active version again and starts it.
	Rollback(ctx context.Context, u *Update) error
	// Active is the version of software that is active on the device, "" when the
	// installer does not know (the agent's state then stands).
	Active(software string) string
}

// ComponentVerifier is an Installer that checks a components deployment before the agent
// records it: every component version must be signed (its recipe a TUF target). An
// *UpdateError rejects the deployment; the agent then records nothing.
type ComponentVerifier interface {
	VerifyComponents(ctx context.Context, components map[string]string) error
}

// Update is one job's update as an Installer sees it.
type Update struct {
	JobID string
	Thing string
	Doc   *jobdoc.Document
	// From is what the device ran before the update.
	From Installed
	// Report persists step and reports it as the job's progress (statusDetails.step) with
	// details; an installer calls it for the steps within its own work.
	Report func(ctx context.Context, step Step, details map[string]string) error
	// Details are what the installer says of the update for the job's final statusDetails
	// (how the release was downloaded, for one).
	Details map[string]string
}

// Note adds a detail for the job's final statusDetails.
func (u *Update) Note(key, value string) {
	if u.Details == nil {
		u.Details = map[string]string{}
	}
	u.Details[key] = value
}

// Software and Version are what the update installs.
func (u *Update) Software() string { return u.Doc.SoftwareToUpdate }
func (u *Update) Version() string  { return u.Doc.Version }

// UpdateError is an update that cannot succeed. A rejected one changed nothing on the device
// (the job ends REJECTED); any other ends FAILED.
type UpdateError struct {
	Rejected bool
	Reason   string
}

func (e *UpdateError) Error() string { return e.Reason }

// Reject is an UpdateError for an update the device refuses before touching anything.
func Reject(format string, args ...any) error {
	return &UpdateError{Rejected: true, Reason: fmt.Sprintf(format, args...)}
}

// Fail is an UpdateError for an update that failed.
func Fail(format string, args ...any) error {
	return &UpdateError{Reason: fmt.Sprintf(format, args...)}
}

// CheckDowngrade refuses an update job that would take u's software below the version the
// device runs: only a rollback job may go down, and only to where the device came from (the
// agent checks that before any installer runs). Every installer, simulated ones too, applies it.
func CheckDowngrade(u *Update) error {
	if u.Doc.Operation != jobdoc.OpUpdate || u.From.Version == "" {
		return nil
	}
	newV, err1 := semver.NewVersion(u.Doc.Version)
	oldV, err2 := semver.NewVersion(u.From.Version)
	if err1 == nil && err2 == nil && newV.LessThan(oldV) {
		return Reject("%s %s is older than the installed %s: a downgrade needs a rollback job", u.Software(), u.Doc.Version, u.From.Version)
	}
	return nil
}

// CheckSwitch refuses a job that carries no artifact for a version the device does not hold
// (onDisk: the version is in one of its slots, or an update module kept what undoes it): with
// nothing to download there is nothing to install. Every installer, simulated ones too,
// applies it.
func CheckSwitch(u *Update, onDisk bool) error {
	if u.Doc.Artifact != nil || onDisk {
		return nil
	}
	return Reject("the job has no artifact and %s %s is not installed on this device to switch to (publish the release with `starter release publish` and roll it out from there)", u.Software(), u.Doc.Version)
}
