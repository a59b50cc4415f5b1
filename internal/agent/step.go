package agent

// Step is where the current job is on the device, persisted (under these stable names, which
// old state files also use) before the work of the step begins.
type Step string

// The steps of an update, in order. A job goes Idle → (Deferred) → Installing → (Downloading
// → Installing) → Switching → Switched → HealthCheck → Installed → Idle; a self-update goes
// through Handover instead of Switching.
const (
	StepIdle        Step = ""
	StepDeferred    Step = "deferred"     // a local component holds the update back
	StepInstalling  Step = "installing"   // accepted: requirements, then the new version into an inactive slot
	StepDownloading Step = "downloading"  // fetching and verifying the artifact
	StepSwitching   Step = "switching"    // making the new version the active one
	StepSwitched    Step = "switched"     // the new version is active, not yet started
	StepRebooting   Step = "rebooting"    // the device restarts into the new version (an update module's)
	StepHealthCheck Step = "health-check" // started; checking its health through the bake time
	StepHandover    Step = "handover"     // a new agent is being probed (self-update)
	StepInstalled   Step = "installed"    // committed; SUCCEEDED is still to be reported
)

// resumeHow says what an agent that starts with a job persisted at a step does with it.
type resumeHow int

const (
	// resumeFromStart: nothing is switched yet; the update runs again from its start (a
	// download is fetched and verified anew).
	resumeFromStart resumeHow = iota
	// resumeFromDisk: the switch may have happened. If the installer says the new version is
	// active, its health is checked again (or, past MaxStarts, it is rolled back); otherwise
	// the update runs again from its start.
	resumeFromDisk
	// resumeReport: the update was committed; SUCCEEDED is reported.
	resumeReport
)

// resumption is how each persisted step resumes. countsStart marks the steps in which the new
// version runs unconfirmed: each agent start there counts towards MaxStarts, which breaks
// reboot loops.
var resumption = map[Step]struct {
	how         resumeHow
	countsStart bool
}{
	StepIdle:        {how: resumeFromStart},
	StepDeferred:    {how: resumeFromStart}, // the components are asked again
	StepInstalling:  {how: resumeFromStart},
	StepDownloading: {how: resumeFromStart},
	StepHandover:    {how: resumeFromStart}, // the slot is switched only after the probe
	StepSwitching:   {how: resumeFromDisk},
	StepSwitched:    {how: resumeFromDisk, countsStart: true},
	StepRebooting:   {how: resumeFromDisk, countsStart: true},
	StepHealthCheck: {how: resumeFromDisk, countsStart: true},
	StepInstalled:   {how: resumeReport},
}
