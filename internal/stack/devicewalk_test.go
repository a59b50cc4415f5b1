package stack_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/stack"
)

// TestFreshDebianDeviceWalk follows docs/device.md on a fresh Debian machine: a bookworm
// system made by debootstrap (systemd, nothing of otaflow), booted in QEMU under software
// emulation. The guide's own commands run, with only its example names swapped for this
// machine's (the laptop's LAN address becomes the VM's gateway 10.0.2.2, the Pi's armv7l/raspbian
// become x86_64/ubuntu, scp becomes a second disk): the laptop's commands (section 3: the thing,
// its certificate, the release repository) against a stack started with --device-host, the
// device's (section 4: the agent installed from its slot, its identity, agent.yaml, the systemd
// unit enabled) as root on the VM at boot, then the first update (section 5) from the laptop.
// The device verifies the release through TUF over mutual TLS, installs it, runs the signed
// health check on the VM and reports SUCCEEDED.
func TestFreshDebianDeviceWalk(t *testing.T) {
	// debootstrap, mkfs.ext4 and what debootstrap runs (chroot, mount) live in sbin.
	t.Setenv("PATH", os.Getenv("PATH")+string(os.PathListSeparator)+"/usr/sbin"+string(os.PathListSeparator)+"/sbin")
	for _, tool := range []string{"qemu-system-x86_64", "debootstrap", "mkfs.ext4"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "%s is needed for the walk on a fresh Debian device: `make deps` installs it", tool)
	}
	rootfs := debianRootfs(t)
	guide := guideSections(t, filepath.Join("..", "..", "docs", "device.md"))

	ctx := context.Background()
	dataDir := t.TempDir()
	s, err := stack.Start(ctx, stack.Options{DataDir: dataDir, InMemoryTemporal: true, UIPort: -1, DeviceHost: "10.0.2.2", Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	jobsURL, err := url.Parse(s.JobsURL)
	require.NoError(t, err)
	tlsURL, err := url.Parse(s.Broker.TLSURL())
	require.NoError(t, err)

	// The laptop: the built starter stands for `go run ./starter`, and a work directory for
	// the repository checkout (bin/) and /tmp.
	work := t.TempDir()
	bin := starterCLI(t)
	require.NoError(t, os.MkdirAll(filepath.Join(work, "bin"), 0o755))
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(work, "bin", "otaflow-agent-linux-x86_64"), "github.com/otaflow/otaflow/agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build the agent: %s", out)
	transfer := filepath.Join(work, "transfer") // what scp would copy to the Pi's /tmp
	require.NoError(t, os.MkdirAll(transfer, 0o755))

	common := strings.NewReplacer("armv7l", "x86_64", "raspbian", "ubuntu")
	laptop := func(script string) string {
		script = common.Replace(script)
		return strings.NewReplacer(
			"go run ./starter", bin,
			"127.0.0.1:7233", s.Temporal.FrontendAddr(),
			"http://192.168.1.20:4566", s.JobsURL,
			".otaflow/", dataDir+"/", "--data-dir .otaflow", "--data-dir "+dataDir,
			"scp ", "cp ", "pi@raspberrypi:/tmp/", transfer+"/",
			"/tmp/", work+"/",
		).Replace(script)
	}
	device := func(script string) string {
		return strings.NewReplacer(
			"/tmp/", "/mnt/transfer/",
			"192.168.1.20:8883", net.JoinHostPort("10.0.2.2", tlsURL.Port()),
			"192.168.1.20:4566", net.JoinHostPort("10.0.2.2", jobsURL.Port()),
			"deploy/systemd/otaflow-agent.service", "/mnt/transfer/otaflow-agent.service",
			// Following the journal is how one watches it; here it goes to the VM's console.
			"journalctl -u otaflow-agent -f", "journalctl -u otaflow-agent -f > /dev/ttyS0 2>&1 &",
		).Replace(common.Replace(script))
	}

	// Section 3, on the laptop.
	sec3 := guide["3"]
	require.NotEmpty(t, sec3.sh, "docs/device.md section 3 has its commands")
	shell(t, work, laptop(strings.Join(sec3.sh, "\n")), 3*time.Minute)
	var exports []string
	for _, line := range strings.Split(laptop(strings.Join(sec3.sh, "\n")), "\n") {
		if strings.HasPrefix(line, "export ") {
			exports = append(exports, line)
		}
	}

	// Section 4, on the device as root: agent.yaml as the guide writes it, the unit from the
	// repository, and the software the restart command restarts.
	sec4 := guide["4"]
	require.Len(t, sec4.yaml, 1, "docs/device.md section 4 gives agent.yaml")
	require.NoError(t, os.WriteFile(filepath.Join(transfer, "agent.yaml"), []byte(device(sec4.yaml[0])), 0o644))
	unit, err := os.ReadFile(filepath.Join("..", "..", "deploy", "systemd", "otaflow-agent.service"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(transfer, "otaflow-agent.service"), unit, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(transfer, "my-app.service"), []byte(
		"[Unit]\nDescription=the software otaflow updates\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/var/lib/otaflow/core/current/bin/my-app\n"), 0o644))
	walk := "install -m 0644 /mnt/transfer/my-app.service /etc/systemd/system/\nsystemctl daemon-reload\n" +
		strings.Join(sec4.sh[:1], "\n") + "\ninstall -D -m 0644 /mnt/transfer/agent.yaml /etc/otaflow/agent.yaml\n" + strings.Join(sec4.sh[1:], "\n")
	require.NoError(t, os.WriteFile(filepath.Join(transfer, "walk.sh"), []byte(device(walk)), 0o755))

	// Boot the device: its root file system, and the transfer disk its first boot runs.
	vm := t.TempDir()
	disk, transferDisk := filepath.Join(vm, "root.img"), filepath.Join(vm, "transfer.img")
	mkfs(t, rootfs, disk, "2G")
	mkfs(t, transfer, transferDisk, "128M")
	kernels, _ := filepath.Glob(filepath.Join(rootfs, "boot", "vmlinuz-*"))
	initrds, _ := filepath.Glob(filepath.Join(rootfs, "boot", "initrd.img-*"))
	require.Len(t, kernels, 1)
	require.Len(t, initrds, 1)
	console := filepath.Join(vm, "console.log")
	logFile, err := os.Create(console)
	require.NoError(t, err)
	defer logFile.Close()
	qemu := exec.Command("qemu-system-x86_64", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot",
		"-kernel", kernels[0], "-initrd", initrds[0], "-append", "root=/dev/vda rw console=ttyS0 quiet",
		"-drive", "file="+disk+",format=raw,if=virtio", "-drive", "file="+transferDisk+",format=raw,if=virtio",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
	qemu.Stdout, qemu.Stderr = logFile, logFile
	require.NoError(t, qemu.Start())
	defer func() {
		qemu.Process.Kill()
		qemu.Wait()
		if t.Failed() || os.Getenv("OTAFLOW_WALK_CONSOLE") != "" {
			b, _ := os.ReadFile(console)
			t.Logf("the device's console:\n%s", tail(string(b), 8000))
		}
	}()

	// Section 5, on the laptop: the first update, waited for.
	sec5 := guide["5"]
	require.NotEmpty(t, sec5.sh)
	out5 := shell(t, work, laptop(strings.Join(append(exports, sec5.sh...), "\n")), 10*time.Minute)
	require.Contains(t, out5, "SUCCEEDED", "the first update")
	require.Contains(t, out5, "all 1 devices updated to 1.1.0")

	job := regexp.MustCompile(`"IotJobId": "([^"]+)"`).FindStringSubmatch(out5)
	require.NotNil(t, job, out5)
	e, err := s.Jobs.DescribeJobExecution(job[1], "pi-1")
	require.NoError(t, err)
	require.Equal(t, "1.1.0", e.StatusDetails["installedVersion"], "%v", e.StatusDetails)
	b, err := os.ReadFile(console)
	require.NoError(t, err)
	require.Contains(t, string(b), "WALK-EXIT 0", "the guide's device commands all succeeded")
}

// guideSection is one "## N." section of a guide: its sh and yaml code blocks, in order.
type guideSection struct{ sh, yaml []string }

// guideSections reads a Markdown guide's numbered sections.
func guideSections(t *testing.T, path string) map[string]guideSection {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	out := map[string]guideSection{}
	var section, lang string
	var block []string
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !inBlock && strings.HasPrefix(line, "## "):
			section, _, _ = strings.Cut(strings.TrimPrefix(line, "## "), ".")
		case !inBlock && strings.HasPrefix(line, "```"):
			inBlock, lang, block = true, strings.TrimPrefix(line, "```"), nil
		case inBlock && line == "```":
			inBlock = false
			sec := out[section]
			switch lang {
			case "sh":
				sec.sh = append(sec.sh, strings.Join(block, "\n"))
			case "yaml":
				sec.yaml = append(sec.yaml, strings.Join(block, "\n")+"\n")
			}
			out[section] = sec
		case inBlock:
			block = append(block, line)
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// shell runs script with sh -e in dir, failing the test with its output when it fails or
// outlasts limit; it returns the output.
func shell(t *testing.T, dir, script string, limit time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-ex", "-c", script)
	cmd.Dir = dir
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	require.NoError(t, err, "%s\n%s", script, buf.String())
	return buf.String()
}

// mkfs makes an ext4 image of size holding dir's files.
func mkfs(t *testing.T, dir, image, size string) {
	t.Helper()
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", dir, image, size).CombinedOutput()
	require.NoError(t, err, "mkfs.ext4 %s: %s", dir, out)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// debianRootfs is a fresh Debian bookworm system for amd64 (debootstrap's minbase with systemd
// and a kernel), made once and kept in the user's cache directory. The only things added: a
// root file system entry, DHCP on the network card, and a first-boot unit that runs walk.sh
// from a second disk as root (as an operator at its console would) and prints to the console.
func debianRootfs(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	require.NoError(t, err)
	dir := filepath.Join(cache, "otaflow", "debian-bookworm-amd64")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir
	}
	require.Equal(t, 0, os.Getuid(), "debootstrap needs root to make the fresh Debian device")
	os.RemoveAll(dir)
	tmp := dir + ".partial"
	os.RemoveAll(tmp)
	require.NoError(t, os.MkdirAll(filepath.Dir(dir), 0o755))
	mirror := cmp.Or(os.Getenv("OTAFLOW_DEBIAN_MIRROR"), "http://deb.debian.org/debian")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	t.Logf("making a fresh Debian bookworm system with debootstrap from %s (once; kept in %s)", mirror, dir)
	out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,linux-image-amd64,iproute2",
		"bookworm", tmp, mirror).CombinedOutput()
	require.NoError(t, err, "debootstrap: %s", tail(string(out), 4000))
	files := map[string]string{
		"etc/fstab":                           "/dev/vda / ext4 rw,relatime 0 1\n",
		"etc/hostname":                        "pi-1\n",
		"etc/systemd/network/10-dhcp.network": "[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n",
		"etc/systemd/system/otaflow-walk.service": "[Unit]\nDescription=run /mnt/transfer/walk.sh from the second disk, as an operator at the console would\n" +
			"After=network-online.target\nWants=network-online.target\n[Service]\nType=oneshot\nRemainAfterExit=yes\n" +
			"ExecStart=/bin/sh -c 'mkdir -p /mnt/transfer && mount -o ro /dev/vdb /mnt/transfer && sh -ex /mnt/transfer/walk.sh > /dev/ttyS0 2>&1; echo \"WALK-EXIT $?\" > /dev/ttyS0'\n" +
			"[Install]\nWantedBy=multi-user.target\n",
	}
	for name, body := range files {
		p := filepath.Join(tmp, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
	wants := filepath.Join(tmp, "etc", "systemd", "system", "multi-user.target.wants")
	require.NoError(t, os.MkdirAll(wants, 0o755))
	for link, target := range map[string]string{
		"systemd-networkd.service": "/lib/systemd/system/systemd-networkd.service",
		"otaflow-walk.service":     "/etc/systemd/system/otaflow-walk.service",
	} {
		os.Remove(filepath.Join(wants, link))
		require.NoError(t, os.Symlink(target, filepath.Join(wants, link)))
	}
	require.NoError(t, os.WriteFile(filepath.Join(tmp, ".complete"), []byte(fmt.Sprintln(time.Now().UTC())), 0o644))
	require.NoError(t, os.Rename(tmp, dir))
	return dir
}
