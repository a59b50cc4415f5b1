// Package platform names the operating systems and architectures otaflow updates (the seed's
// CreateSoftwareUpdateJob values), the combinations it supports, and the platform the running
// device is.
package platform

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
)

// Platform is an operating system and architecture pair.
type Platform struct{ OS, Arch string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// Supported are the combinations CreateSoftwareUpdateJob accepts (seed v1).
var Supported = []Platform{
	{"ubuntu", "x86_64"}, {"ubuntu", "aarch64"}, {"amazon_linux", "x86_64"},
	{"raspbian", "armv7l"}, {"raspbian", "armv6l"}, {"openwrt", "aarch64"}, {"openwrt", "armv7l"},
}

var (
	// Architectures and Systems are the seed's names.
	Architectures = []string{"armv7l", "armv6l", "x86_64", "aarch64"}
	Systems       = []string{"ubuntu", "amazon_linux", "raspbian", "openwrt"}
)

// List is the supported combinations, for messages.
func List() string {
	var s []string
	for _, p := range Supported {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}

// Problems lists what is wrong with an OS and architecture pair, each in words that say what
// to use instead; none for a supported pair.
func Problems(osName, arch string) []string {
	var out []string
	archOK, osOK := slices.Contains(Architectures, arch), slices.Contains(Systems, osName)
	if !archOK {
		out = append(out, fmt.Sprintf("architecture %q is invalid: use one of %s", arch, strings.Join(Architectures, ", ")))
	}
	if !osOK {
		out = append(out, fmt.Sprintf("operating system %q is invalid: use one of %s", osName, strings.Join(Systems, ", ")))
	}
	if archOK && osOK && !slices.Contains(Supported, Platform{osName, arch}) {
		out = append(out, fmt.Sprintf("%s/%s is not a supported combination: use one of %s", osName, arch, List()))
	}
	return out
}

// Validate is Problems as one error.
func Validate(osName, arch string) error {
	if p := Problems(osName, arch); len(p) > 0 {
		return fmt.Errorf("%s", strings.Join(p, "; "))
	}
	return nil
}

// Detect reads the platform of the machine it runs on: the architecture from uname (as
// `uname -m` prints it) and the operating system from /etc/os-release, in the seed's names.
// An OS outside them (plain Debian, say) is returned as its os-release ID; the agent's --os
// flag names the platform its releases are built for.
func Detect() Platform {
	return Platform{OS: detectOS("/etc/os-release"), Arch: detectArch()}
}

func detectArch() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	var b strings.Builder
	for _, c := range u.Machine {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return NormalizeArch(b.String())
}

// NormalizeArch maps uname and Go names to the seed's.
func NormalizeArch(m string) string {
	switch m {
	case "amd64", "x86_64":
		return "x86_64"
	case "arm64", "aarch64", "armv8l":
		return "aarch64"
	case "armv7", "armv7l":
		return "armv7l"
	case "armv6", "armv6l":
		return "armv6l"
	}
	return m
}

func detectOS(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var id string
	var like []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "ID_LIKE":
			like = strings.Fields(v)
		}
	}
	for _, cand := range append([]string{id}, like...) {
		switch cand {
		case "ubuntu", "raspbian", "openwrt":
			return cand
		case "amzn":
			return "amazon_linux"
		}
	}
	return id
}
