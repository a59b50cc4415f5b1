package agent_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/tuf"
)

// installModule copies a module into dir as its owner would install it: mode 0700.
func installModule(t *testing.T, dir, src, name string) {
	raw, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), raw, 0o700))
	require.NoError(t, os.Chmod(filepath.Join(dir, name), 0o700))
}

// moduleRig is a real agent whose installer runs update modules from its own directory.
type moduleRig struct {
	*installRig
	modules string
	in      *agent.SlotInstaller
	a       *agent.Agent
}

func newModuleRig(t *testing.T) *moduleRig {
	r := &moduleRig{installRig: newInstallRig(t), modules: filepath.Join(t.TempDir(), "modules")}
	r.in = r.installer(t.TempDir())
	r.in.ModulesDir, r.in.ModulesOwner = r.modules, os.Getuid()
	var err error
	r.a, err = agent.New(agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: t.TempDir(), InitialVersion: "1.0.0", Logger: zerolog.Nop(), Installer: r.in})
	require.NoError(t, err)
	runAgent(t, r.a)
	return r
}

// release signs a core release of files installed through module with settings, and runs
// its update job to the end.
func (r *moduleRig) release(jobID, version, module string, settings map[string]string, health []string, files ...release.File) *store.Execution {
	data, err := release.Pack(files...)
	require.NoError(r.t, err)
	c := tuf.Custom{Software: jobdoc.SoftwareCore, Version: version, OS: "ubuntu", Architecture: "x86_64", Module: module, ModuleSettings: settings}
	if len(health) > 0 {
		c.HealthCheck = &tuf.HealthCheck{Command: health}
	}
	r.create(jobID, version, r.sign(data, c), 0)
	return waitTerminal(r.t, r.svc, jobID, "dev-1")
}

// TestFileModuleUpdateAndRollback installs releases through the shipped file module: files
// placed atomically, then a release that fails its health check is rolled back, restoring
// the files it replaced and removing those it added.
func TestFileModuleUpdateAndRollback(t *testing.T) {
	r := newModuleRig(t)
	installModule(t, r.modules, "../../deploy/modules/file", "file")
	dest := filepath.Join(t.TempDir(), "etc", "app")
	require.NoError(t, os.MkdirAll(dest, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dest, "app.conf"), []byte("v1"), 0o644))
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	settings := map[string]string{"dest": dest}

	e := r.release("file-2", "2.0.0", "file", settings, nil,
		release.File{Name: "app.conf", Mode: 0o644, Body: []byte("v2")}, release.File{Name: "conf.d/extra.conf", Mode: 0o644, Body: []byte("extra")})
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, "v2", read("app.conf"))
	require.Equal(t, "extra", read("conf.d/extra.conf"))
	require.Equal(t, "2.0.0", r.in.Active("core"))
	require.Equal(t, "2.0.0", r.a.InstalledVersion("core"))

	e = r.release("file-3", "3.0.0", "file", settings, []string{"false"},
		release.File{Name: "app.conf", Mode: 0o644, Body: []byte("v3")}, release.File{Name: "conf.d/new.conf", Mode: 0o644, Body: []byte("new")})
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "health check of 3.0.0 failed")
	require.Contains(t, e.StatusDetails["reason"], "rolled back to 2.0.0")
	require.Equal(t, "v2", read("app.conf"), "the replaced file is restored")
	require.Contains(t, read("conf.d/new.conf"), "no such file", "the added file is removed")
	require.Equal(t, "2.0.0", r.in.Active("core"))
	require.Equal(t, "2.0.0", r.a.InstalledVersion("core"))

	// A release that names no dest is refused by the module before anything changes.
	e = r.release("file-4", "4.0.0", "file", nil, nil, release.File{Name: "app.conf", Mode: 0o644, Body: []byte("v4")})
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "no dest setting")
	require.Equal(t, "v2", read("app.conf"))

	// A rollout's rollback job returns the device to what it had before 2.0.0: the module
	// undoes 2.0.0 from what it kept.
	r.rollbackJob("file-back", "1.0.0")
	e = waitTerminal(t, r.svc, "file-back", "dev-1")
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, "v1", read("app.conf"))
	require.Contains(t, read("conf.d/extra.conf"), "no such file")
	require.Equal(t, "1.0.0", r.a.InstalledVersion("core"))
}

// rollbackJob queues a rollout's rollback job to version for dev-1.
func (r *installRig) rollbackJob(jobID, version string) {
	r.createDoc(jobID, jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpRollback, RolloutID: "r",
		SoftwareToUpdate: jobdoc.SoftwareCore, Version: version})
}

// TestModuleFailures: a module that fails at any step leaves the device on its old version;
// a refusal at install ends REJECTED, any failure after it FAILED, and from switch on the
// module's rollback runs. The module's own words are the reason.
func TestModuleFailures(t *testing.T) {
	r := newModuleRig(t)
	installModule(t, r.modules, "testdata/modules/failing", "failing")
	log := filepath.Join(t.TempDir(), "steps.log")
	file := release.File{Name: "payload", Mode: 0o644, Body: []byte("x")}
	for i, c := range []struct {
		failAt, exit string
		status       iotjobs.Status
		steps        string // the steps the module ran, in order
	}{
		{"capabilities", "3", store.ExecRejected, "capabilities"},
		{"install", "3", store.ExecRejected, "capabilities install"},
		{"install", "1", store.ExecFailed, "capabilities install"},
		{"switch", "1", store.ExecFailed, "capabilities install switch capabilities rollback"},
		{"verify", "1", store.ExecFailed, "capabilities install switch capabilities verify capabilities rollback"},
		{"commit", "1", store.ExecFailed, "capabilities install switch capabilities verify commit capabilities rollback"},
	} {
		os.Remove(log)
		version := "2.0." + string(rune('0'+i))
		e := r.release("fail-"+c.failAt+"-"+c.exit, version, "failing", map[string]string{"log": log, "fail_at": c.failAt, "exit": c.exit}, nil, file)
		require.Equal(t, c.status, e.Status, "failing at %s with %s: %s", c.failAt, c.exit, e.StatusDetails["reason"])
		require.Contains(t, e.StatusDetails["reason"], "update module failing: "+c.failAt+" failed (exit "+c.exit+"): failing at "+c.failAt+" on purpose")
		raw, err := os.ReadFile(log)
		require.NoError(t, err)
		var steps []string
		for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			steps = append(steps, strings.Fields(l)[0])
		}
		require.Equal(t, c.steps, strings.Join(steps, " "), "failing at %s", c.failAt)
		require.Equal(t, "1.0.0", r.a.InstalledVersion("core"), "the device stays on its version")
		require.Empty(t, r.in.Active("core"), "no module record is left behind")
	}

	// The same module, succeeding: every step once, in order.
	os.Remove(log)
	e := r.release("ok", "3.0.0", "failing", map[string]string{"log": log}, nil, file)
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	raw, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, "capabilities 3.0.0\ninstall 3.0.0\nswitch 3.0.0\ncapabilities 3.0.0\nverify 3.0.0\ncommit 3.0.0\n", string(raw))
	require.Equal(t, "3.0.0", r.in.Active("core"))
}

// TestModulesMustBeInstalledAndSafe: a release naming a module the device does not have, or one
// anybody but root could change, is refused before anything is downloaded; a job document
// cannot name a module at all.
func TestModulesMustBeInstalledAndSafe(t *testing.T) {
	r := newModuleRig(t)
	file := release.File{Name: "payload", Mode: 0o644, Body: []byte("x")}
	e := r.release("missing", "2.0.0", "nonesuch", nil, nil, file)
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], `update module "nonesuch", which is not installed on this device`)

	installModule(t, r.modules, "testdata/modules/failing", "loose")
	require.NoError(t, os.Chmod(filepath.Join(r.modules, "loose"), 0o777))
	e = r.release("loose", "2.0.1", "loose", map[string]string{"log": filepath.Join(t.TempDir(), "log")}, nil, file)
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "executable by its owner only and writable by nobody else")

	// A modules directory others may write to: anything in it could be swapped.
	require.NoError(t, os.Chmod(r.modules, 0o777))
	installModule(t, r.modules, "testdata/modules/failing", "fine")
	e = r.release("open-dir", "2.0.5", "fine", map[string]string{"log": filepath.Join(t.TempDir(), "log")}, nil, file)
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "must be writable by its owner only")
	require.NoError(t, os.Chmod(r.modules, 0o755))

	require.NoError(t, os.Symlink("/bin/true", filepath.Join(r.modules, "linked")))
	e = r.release("linked", "2.0.2", "linked", nil, nil, file)
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "must be a regular file")

	// The module comes from the signed target only: a document that names one is refused.
	art := r.sign(mustPack(t, file), tuf.Custom{Software: jobdoc.SoftwareCore, Version: "2.0.3", OS: "ubuntu", Architecture: "x86_64"})
	body := `{"type":"otaflow.update","schemaVersion":"1","operation":"update","rolloutId":"r","softwareToUpdate":"core","version":"2.0.3","module":"failing","artifact":{"url":"` + art.URL + `"}}`
	_, err := r.svc.CreateJob(localiot.CreateJobInput{JobID: "doc-module", Targets: []string{"dev-1"}, Document: body,
		Presign: &store.PresignConfig{RoleArn: "arn:aws:iam::0:role/s", ExpiresInSec: 600}})
	require.NoError(t, err)
	e = waitTerminal(t, r.svc, "doc-module", "dev-1")
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], `unknown field "module"`)
	require.Equal(t, "1.0.0", r.a.InstalledVersion("core"))

	// Unsigned settings cannot be slipped in either: the signer refuses a bad module name.
	_, err = r.repo.AddTarget("core/2.0.4.tar.gz", writeTemp(t, mustPack(t, file)), tuf.Custom{Software: "core", Version: "2.0.4", OS: "ubuntu", Architecture: "x86_64", Module: "../../bin/sh"})
	require.ErrorContains(t, err, "is not a module name")
}

func mustPack(t *testing.T, files ...release.File) []byte {
	data, err := release.Pack(files...)
	require.NoError(t, err)
	return data
}

func writeTemp(t *testing.T, data []byte) string {
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	return p
}

// buildDeb makes a Debian package of otaflow-test at version whose one file says version.
func buildDeb(t *testing.T, name, version string) []byte {
	dir := t.TempDir()
	pkg := filepath.Join(dir, "pkg")
	require.NoError(t, os.MkdirAll(filepath.Join(pkg, "DEBIAN"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(pkg, "opt", "otaflow-test"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(pkg, "DEBIAN", "control"),
		[]byte("Package: "+name+"\nVersion: "+version+"\nArchitecture: all\nMaintainer: otaflow <dev@otaflow.invalid>\nDescription: otaflow's test package\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(pkg, "opt", "otaflow-test", "hello"), []byte(version), 0o644))
	out := filepath.Join(dir, name+"_"+version+"_all.deb")
	b, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, out).CombinedOutput()
	require.NoError(t, err, "dpkg-deb (Debian's dpkg; `make deps`): %s", b)
	raw, err := os.ReadFile(out)
	require.NoError(t, err)
	return raw
}

// TestDebModuleUpdateAndRollback installs Debian packages through the shipped deb module with
// Debian's dpkg (into a dpkg root of the test's own): a first install that fails its health
// check is purged, an update is installed, and an update that fails is rolled back to the
// version before it.
func TestDebModuleUpdateAndRollback(t *testing.T) {
	r := newModuleRig(t)
	installModule(t, r.modules, "../../deploy/modules/deb", "deb")
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/updates", "var/lib/dpkg/info"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644))
	settings := map[string]string{"package": "otaflow-test", "root": root}
	hello := func() string {
		b, err := os.ReadFile(filepath.Join(root, "opt", "otaflow-test", "hello"))
		if err != nil {
			return "absent"
		}
		return string(b)
	}
	status := func() string {
		out, _ := exec.Command("dpkg-query", "--root="+root, "-W", "-f=${db:Status-Status} ${Version}", "otaflow-test").Output()
		return string(out)
	}
	deb := func(version string) release.File {
		return release.File{Name: "otaflow-test_" + version + "_all.deb", Mode: 0o644, Body: buildDeb(t, "otaflow-test", version)}
	}

	e := r.release("deb-first-bad", "1.5.0", "deb", settings, []string{"false"}, deb("0.9"))
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "rolled back to 1.0.0")
	require.Equal(t, "absent", hello(), "a package the device did not have is purged")
	require.NotContains(t, status(), "installed 0.9")

	// A version installed by hand (not by this module) is kept with dpkg-repack, and a failed
	// update returns to it.
	byHand := filepath.Join(t.TempDir(), "by-hand.deb")
	require.NoError(t, os.WriteFile(byHand, buildDeb(t, "otaflow-test", "0.5"), 0o644))
	out, err := exec.Command("dpkg", "--root="+root, "-i", byHand).CombinedOutput()
	require.NoError(t, err, "%s", out)
	e = r.release("deb-over-hand", "1.6.0", "deb", settings, []string{"false"}, deb("0.8"))
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "rolled back to 1.0.0")
	require.Equal(t, "0.5", hello(), "the version installed by hand is back")
	require.Equal(t, "installed 0.5", status())

	e = r.release("deb-2", "2.0.0", "deb", settings, nil, deb("1.0"))
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, "1.0", hello())
	require.Equal(t, "installed 1.0", status())

	e = r.release("deb-3", "3.0.0", "deb", settings, []string{"false"}, deb("2.0"))
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "rolled back to 2.0.0")
	require.Equal(t, "1.0", hello(), "the package the device had is back")
	require.Equal(t, "installed 1.0", status())
	require.Equal(t, "2.0.0", r.a.InstalledVersion("core"))

	e = r.release("deb-other", "3.1.0", "deb", settings, nil, release.File{Name: "other_1.0_all.deb", Mode: 0o644, Body: buildDeb(t, "other", "1.0")})
	require.Equal(t, store.ExecRejected, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "the .deb is package other, the release says otaflow-test")
	require.Equal(t, "installed 1.0", status())
}

// abDevice is a device with two root filesystem slots (image files), a bootloader environment
// and a simulated boot: which slot runs and the boot ID are files the test sets, as the
// bootloader and the kernel would.
type abDevice struct {
	t                        *testing.T
	bootloader               string
	dir, booted, bootID, env string
	settings                 map[string]string
}

func newABDevice(t *testing.T, bootloader string) *abDevice {
	d := &abDevice{t: t, bootloader: bootloader, dir: t.TempDir()}
	d.booted, d.bootID = filepath.Join(d.dir, "booted"), filepath.Join(d.dir, "boot_id")
	for _, s := range []string{"slot-a.img", "slot-b.img"} {
		require.NoError(t, os.WriteFile(filepath.Join(d.dir, s), make([]byte, 256<<10), 0o600))
	}
	d.settings = map[string]string{"bootloader": bootloader, "slot_a": filepath.Join(d.dir, "slot-a.img"), "slot_b": filepath.Join(d.dir, "slot-b.img"), "booted_file": d.booted}
	switch bootloader {
	case "grub":
		d.env = filepath.Join(d.dir, "grubenv")
		d.run("grub-editenv", d.env, "create")
		d.run("grub-editenv", d.env, "set", "saved_entry=A")
		d.settings["grubenv"] = d.env
	case "uboot":
		d.env = filepath.Join(d.dir, "fw_env.config")
		require.NoError(t, os.WriteFile(filepath.Join(d.dir, "uboot.env"), make([]byte, 16<<10), 0o600))
		require.NoError(t, os.WriteFile(d.env, []byte(filepath.Join(d.dir, "uboot.env")+" 0x0000 0x4000\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(d.dir, "default.env"), []byte("otaflow_slot=A\nbootlimit=3\n"), 0o644))
		d.run("fw_setenv", "-c", d.env, "-f", filepath.Join(d.dir, "default.env"), "otaflow_slot", "A")
		d.settings["fw_config"] = d.env
	}
	d.boot("A", "boot-1")
	return d
}

func (d *abDevice) run(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(d.t, err, "%s %v (`make deps` installs grub-common and libubootenv-tool): %s", name, args, out)
	return string(out)
}

// envVar reads a variable of the bootloader's environment ("" when unset).
func (d *abDevice) envVar(name string) string {
	var out string
	if d.bootloader == "grub" {
		out = d.run("grub-editenv", d.env, "list")
	} else {
		out = d.run("fw_printenv", "-c", d.env)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+"="); ok {
			return v
		}
	}
	return ""
}

func (d *abDevice) boot(slot, id string) {
	require.NoError(d.t, os.WriteFile(d.booted, []byte(slot), 0o644))
	require.NoError(d.t, os.WriteFile(d.bootID, []byte(id), 0o644))
}

// reboot does what the bootloader does: boot the slot marked to try once (clearing the mark),
// unless that slot fails to come up, when the default slot boots instead.
func (d *abDevice) reboot(id string, newSlotComesUp bool) string {
	var try, def string
	if d.bootloader == "grub" {
		try, def = d.envVar("next_entry"), d.envVar("saved_entry")
		d.run("grub-editenv", d.env, "unset", "next_entry")
	} else {
		if d.envVar("upgrade_available") == "1" {
			try = d.envVar("otaflow_try")
		}
		def = d.envVar("otaflow_slot")
	}
	slot := def
	if try != "" && newSlotComesUp {
		slot = try
	}
	d.boot(slot, id)
	return slot
}

// TestRootfsABModule updates an A/B device through the shipped rootfs-ab module, for GRUB's and
// U-Boot's environments: the image goes to the inactive slot, the bootloader boots it once,
// the agent reboots through its reboot command and, started again in the new boot, commits the
// new slot. A second release's slot does not come up: the bootloader falls back, and the
// agent, on its next start, reports FAILED with why, the device on the old slot.
func TestRootfsABModule(t *testing.T) {
	for _, bl := range []string{"grub", "uboot"} {
		t.Run(bl, func(t *testing.T) {
			r := newInstallRig(t)
			modules := filepath.Join(t.TempDir(), "modules")
			installModule(t, modules, "../../deploy/modules/rootfs-ab", "rootfs-ab")
			d := newABDevice(t, bl)
			marker := filepath.Join(t.TempDir(), "reboots")
			in := r.installer(t.TempDir())
			in.ModulesDir, in.ModulesOwner = modules, os.Getuid()
			in.Env = append(in.Env, "PATH="+os.Getenv("PATH"))
			in.Reboot = []string{"sh", "-c", "echo reboot >> " + marker}
			in.BootID = func() string { b, _ := os.ReadFile(d.bootID); return string(b) }
			state := t.TempDir()
			start := func() (*agent.Agent, func()) {
				a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: state, InitialVersion: "1.0.0", Logger: zerolog.Nop(), Installer: in})
				require.NoError(t, err)
				return a, runAgentStoppable(t, a)
			}
			reboots := func() int {
				b, _ := os.ReadFile(marker)
				return strings.Count(string(b), "reboot")
			}
			image := func(seed byte) []byte {
				b := make([]byte, 100<<10)
				for i := range b {
					b[i] = byte(i*7) ^ seed
				}
				return b
			}
			publish := func(jobID, version string, img []byte, health ...string) {
				data, err := release.Pack(release.File{Name: "rootfs.img", Mode: 0o644, Body: img})
				require.NoError(t, err)
				c := tuf.Custom{Software: jobdoc.SoftwareCore, Version: version, OS: "ubuntu", Architecture: "x86_64", Module: "rootfs-ab", ModuleSettings: d.settings}
				if len(health) > 0 {
					c.HealthCheck = &tuf.HealthCheck{Command: health}
				}
				r.create(jobID, version, r.sign(data, c), 0)
			}

			_, stop := start()
			publish("ab-2", "2.0.0", image(2))
			require.Eventually(t, func() bool { return reboots() >= 1 }, 30*time.Second, 50*time.Millisecond, "the agent asks for a reboot")
			e, err := r.svc.DescribeJobExecution("ab-2", "dev-1")
			require.NoError(t, err)
			require.Equal(t, store.ExecInProgress, e.Status, "not done before the reboot")
			require.Equal(t, "rebooting", e.StatusDetails["step"])
			slotB, err := os.ReadFile(d.settings["slot_b"])
			require.NoError(t, err)
			require.Equal(t, image(2), slotB[:100<<10], "the image is in the inactive slot")
			stop()
			require.Equal(t, "B", d.reboot("boot-2", true))
			a, stop := start()
			e = waitTerminal(t, r.svc, "ab-2", "dev-1")
			require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
			require.Equal(t, "2.0.0", a.InstalledVersion("core"))
			if bl == "grub" {
				require.Equal(t, "B", d.envVar("saved_entry"), "the new slot is the default")
				require.Empty(t, d.envVar("next_entry"))
			} else {
				require.Equal(t, "B", d.envVar("otaflow_slot"), "the new slot is the default")
				require.Equal(t, "0", d.envVar("upgrade_available"))
			}

			// 3.0.0 goes to slot A, which does not come up: the bootloader boots B again.
			before := reboots()
			publish("ab-3", "3.0.0", image(3))
			require.Eventually(t, func() bool { return reboots() > before }, 30*time.Second, 50*time.Millisecond)
			stop()
			before = reboots()
			require.Equal(t, "B", d.reboot("boot-3", false))
			a, stop = start()
			e = waitTerminal(t, r.svc, "ab-3", "dev-1")
			require.Equal(t, store.ExecFailed, e.Status)
			require.Contains(t, e.StatusDetails["reason"], "the device runs slot B, not A: the new slot did not come up, and the bootloader fell back")
			require.Contains(t, e.StatusDetails["reason"], "rolled back to 2.0.0")
			require.Equal(t, "2.0.0", a.InstalledVersion("core"))
			require.Equal(t, "2.0.0", in.Active("core"))
			require.Equal(t, before, reboots(), "falling back needed no further reboot")

			// 3.1.0's slot comes up but fails its health check: the module points the
			// bootloader back and the agent reboots into the old slot.
			publish("ab-31", "3.1.0", image(31), "false")
			require.Eventually(t, func() bool { return reboots() > before }, 30*time.Second, 50*time.Millisecond)
			stop()
			require.Equal(t, "A", d.reboot("boot-4", true))
			before = reboots()
			a, stop = start()
			e = waitTerminal(t, r.svc, "ab-31", "dev-1")
			require.Equal(t, store.ExecFailed, e.Status)
			require.Contains(t, e.StatusDetails["reason"], "health check of 3.1.0 failed")
			require.Equal(t, before+1, reboots(), "a reboot back into the old slot")
			stop()
			require.Equal(t, "B", d.reboot("boot-5", true), "the default is still the old slot")
			require.Equal(t, "2.0.0", a.InstalledVersion("core"))

			// A rollout's rollback job returns the device to 1.0.0 on slot A: the committed
			// default goes back to A, and the device reboots into it.
			a, stop = start()
			before = reboots()
			r.rollbackJob("ab-back", "1.0.0")
			require.Eventually(t, func() bool { return reboots() > before }, 30*time.Second, 50*time.Millisecond)
			stop()
			require.Equal(t, "A", d.reboot("boot-6", true))
			a, _ = start()
			e = waitTerminal(t, r.svc, "ab-back", "dev-1")
			require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
			require.Equal(t, "1.0.0", a.InstalledVersion("core"))
			if bl == "grub" {
				require.Equal(t, "A", d.envVar("saved_entry"))
			} else {
				require.Equal(t, "A", d.envVar("otaflow_slot"))
			}
		})
	}
}

// podmanImage builds the test application at version into a container image archive
// (podman save), in a podman store of its own.
func podmanImage(t *testing.T, pm []string, ref, version string) []byte {
	dir := t.TempDir()
	bin := filepath.Join(dir, "rootfs", "app")
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", bin, "./testdata/containerapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	rootfs := filepath.Join(dir, "rootfs.tar")
	out, err = exec.Command("tar", "-C", filepath.Join(dir, "rootfs"), "-cf", rootfs, "app").CombinedOutput()
	require.NoError(t, err, "%s", out)
	podman := func(args ...string) {
		out, err := exec.Command("podman", append(slices.Clone(pm), args...)...).CombinedOutput()
		require.NoError(t, err, "podman %v (`make deps` installs podman): %s", args, out)
	}
	podman("import", "--change", `CMD ["/app"]`, rootfs, ref)
	archive := filepath.Join(dir, "image.tar")
	podman("save", "-o", archive, ref)
	podman("rmi", ref)
	raw, err := os.ReadFile(archive)
	require.NoError(t, err)
	return raw
}

// TestContainerModule runs releases as containers with Debian's podman through the shipped
// container module: a new image replaces the running container, and one whose container does
// not stay up is rolled back to the image that ran before.
func TestContainerModule(t *testing.T) {
	images := t.TempDir()
	// A store of the test's own (vfs: nothing mounted), and limits this machine allows (its
	// hard limit on open files is below podman's default).
	pm := []string{"--root", filepath.Join(images, "root"), "--runroot", filepath.Join(images, "run"), "--storage-driver", "vfs"}
	inspect := func() string {
		out, _ := exec.Command("podman", append(slices.Clone(pm), "container", "inspect", "--format", "{{.State.Status}} {{.ImageName}}", "otaflow-test")...).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	t.Cleanup(func() { exec.Command("podman", append(slices.Clone(pm), "rm", "-f", "-a")...).Run() })
	good, bad := podmanImage(t, pm, "localhost/otaflow-test:2.0", "2.0"), podmanImage(t, pm, "localhost/otaflow-test:3.0", "bad")

	r := newModuleRig(t)
	installModule(t, r.modules, "../../deploy/modules/container", "container")
	settings := func(image string) map[string]string {
		return map[string]string{"name": "otaflow-test", "image": image, "podman": strings.Join(pm, " "),
			"args": "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"}
	}
	e := r.release("ctr-2", "2.0.0", "container", settings("localhost/otaflow-test:2.0"), nil, release.File{Name: "image.tar", Mode: 0o644, Body: good})
	require.Equal(t, store.ExecSucceeded, e.Status, e.StatusDetails["reason"])
	require.Equal(t, "running localhost/otaflow-test:2.0", inspect())

	e = r.release("ctr-3", "3.0.0", "container", settings("localhost/otaflow-test:3.0"), nil, release.File{Name: "image.tar", Mode: 0o644, Body: bad})
	require.Equal(t, store.ExecFailed, e.Status)
	require.Contains(t, e.StatusDetails["reason"], "not running localhost/otaflow-test:3.0")
	require.Contains(t, e.StatusDetails["reason"], "rolled back to 2.0.0")
	require.Equal(t, "running localhost/otaflow-test:2.0", inspect(), "the image that ran before runs again")
	require.Equal(t, "2.0.0", r.a.InstalledVersion("core"))
}
