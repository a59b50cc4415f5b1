package deploycheck

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/otaflow/otaflow/internal/pgserver"
)

type compose struct {
	Services map[string]struct {
		Image string `json:"image"`
		Build *struct {
			Target string `json:"target"`
		} `json:"build"`
	} `json:"services"`
}

// moduleVersion is the version go.mod requires of a module, without its "v".
func moduleVersion(t *testing.T, gomod, module string) string {
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + `\s+v(\S+)`).FindStringSubmatch(gomod)
	require.NotNil(t, m, "go.mod requires %s", module)
	return m[1]
}

// TestComposeImagesArePinned: every image in docker-compose.yml has an exact version tag, and
// each is the one otaflow links or tests against. Temporal's server and admin tools are the
// go.temporal.io/server version the embedded server and the schema tests use, the UI the
// ui-server version, PostgreSQL the major version `make test` runs on, mosquitto the series
// the tests run the shipped configuration on. Images otaflow builds name a Dockerfile target.
func TestComposeImagesArePinned(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	require.NoError(t, err)
	var c compose
	require.NoError(t, yaml.Unmarshal(raw, &c))
	gomodRaw, err := os.ReadFile("../../go.mod")
	require.NoError(t, err)
	gomod := string(gomodRaw)
	dockerfile, err := os.ReadFile("../../Dockerfile")
	require.NoError(t, err)

	bin, err := pgserver.BinDir()
	require.NoError(t, err)
	pgMajor := strings.Split(strings.TrimPrefix(bin, "/usr/lib/postgresql/"), "/")[0]
	mosq, _ := exec.Command("/usr/sbin/mosquitto", "-h").CombinedOutput()
	mm := regexp.MustCompile(`mosquitto version (\d+\.\d+)\.`).FindSubmatch(mosq)
	require.NotNil(t, mm, "Debian's mosquitto is installed (make deps): %s", mosq)

	prom, _ := exec.Command("prometheus", "--version").CombinedOutput()
	pm := regexp.MustCompile(`prometheus, version (\d+\.\d+)\.`).FindSubmatch(prom)
	require.NotNil(t, pm, "Debian's prometheus is installed (make deps): %s", prom)
	want := map[string]func(tag string) bool{
		// The series whose server runs the shipped alert rules in the tests.
		"prom/prometheus": func(tag string) bool {
			return regexp.MustCompile(`^v` + regexp.QuoteMeta(string(pm[1])) + `\.\d+$`).MatchString(tag)
		},
		"temporalio/server":      func(tag string) bool { return tag == moduleVersion(t, gomod, "go.temporal.io/server") },
		"temporalio/admin-tools": func(tag string) bool { return tag == moduleVersion(t, gomod, "go.temporal.io/server") },
		"temporalio/ui":          func(tag string) bool { return tag == moduleVersion(t, gomod, "github.com/temporalio/ui-server/v2") },
		"postgres":               func(tag string) bool { return regexp.MustCompile(`^` + pgMajor + `\.\d+$`).MatchString(tag) },
		"eclipse-mosquitto": func(tag string) bool {
			return regexp.MustCompile(`^` + regexp.QuoteMeta(string(mm[1])) + `\.\d+$`).MatchString(tag)
		},
	}
	seen := map[string]bool{}
	require.NotEmpty(t, c.Services)
	for name, svc := range c.Services {
		if svc.Build != nil {
			require.NotEmpty(t, svc.Build.Target, "service %s builds an image: name its Dockerfile target", name)
			require.Contains(t, string(dockerfile), " AS "+svc.Build.Target+"\n", "service %s: the Dockerfile has target %s", name, svc.Build.Target)
			continue
		}
		repo, tag, ok := strings.Cut(svc.Image, ":")
		require.True(t, ok && tag != "" && tag != "latest", "service %s: image %q needs an exact version tag", name, svc.Image)
		check, known := want[repo]
		require.True(t, known, "service %s: image %s has no pin here; add one", name, repo)
		require.True(t, check(tag), "service %s: %s is not the pinned version", name, svc.Image)
		seen[repo] = true
	}
	for repo := range want {
		require.True(t, seen[repo], "docker-compose.yml runs %s", repo)
	}
}
