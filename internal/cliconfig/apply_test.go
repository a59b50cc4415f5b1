package cliconfig_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/cliconfig"
)

// TestApplyOrder: a flag beats its environment variable, which beats the config file, which
// beats the default; file keys are the flags' camelCase names, nested keys joined by dots.
func TestApplyOrder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(file, []byte("a: file-a\nb: file-b\nc: file-c\nlongName: file-long\ntls:\n  enabled: true\n"), 0o600))
	parse := func(args ...string) map[string]string {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		got := map[string]*string{}
		for _, n := range []string{"a", "b", "c", "d", "long-name"} {
			got[n] = fs.String(n, "default-"+n, "")
			cliconfig.Env(fs, n, "TEST_APPLY_"+n)
		}
		on := fs.Bool("tls-on", false, "")
		cliconfig.FileKey(fs, "tls-on", "tls.enabled")
		require.NoError(t, fs.Parse(args))
		values, err := cliconfig.ReadFile(file)
		require.NoError(t, err)
		require.NoError(t, cliconfig.Apply(fs, values, file, nil))
		out := map[string]string{}
		for n, v := range got {
			out[n] = *v
		}
		if *on {
			out["tls-on"] = "true"
		}
		return out
	}
	t.Setenv("TEST_APPLY_a", "env-a")
	t.Setenv("TEST_APPLY_b", "env-b")
	require.Equal(t, map[string]string{"a": "flag-a", "b": "env-b", "c": "file-c", "d": "default-d", "long-name": "file-long", "tls-on": "true"},
		parse("--a", "flag-a"))
}

func TestApplyRefusesUnknownKeysAndBadValues(t *testing.T) {
	dir := t.TempDir()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Int("count", 1, "")
	require.NoError(t, fs.Parse(nil))
	err := cliconfig.Apply(fs, map[string]string{"cuont": "2"}, "c.yaml", nil)
	require.ErrorContains(t, err, `unknown field "cuont"`)
	err = cliconfig.Apply(fs, map[string]string{"count": "two"}, "c.yaml", nil)
	require.ErrorContains(t, err, "c.yaml: count: invalid value for --count")

	nested := filepath.Join(dir, "n.yaml")
	require.NoError(t, os.WriteFile(nested, []byte("list: [1, 2]\n"), 0o600))
	_, err = cliconfig.ReadFile(nested)
	require.ErrorContains(t, err, "list must be a single value")
	_, err = cliconfig.ReadFile(filepath.Join(dir, "missing.yaml"))
	require.ErrorContains(t, err, "missing.yaml")
}

// TestCommandHelpHasNoSecrets: a cobra command's --help shows constant defaults only, even
// with a secret in the environment, and a config file shared by several commands may hold
// keys of any of them.
func TestCommandHelpHasNoSecrets(t *testing.T) {
	t.Setenv("TEST_SECRET", "s3cret")
	var secret, other string
	tree := func() *cobra.Command {
		root := &cobra.Command{Use: "root", SilenceUsage: true, SilenceErrors: true}
		run := &cobra.Command{Use: "run", RunE: func(*cobra.Command, []string) error { return nil }}
		run.Flags().StringVar(&secret, "secret", "", "a secret")
		cliconfig.Env(run.Flags(), "secret", "TEST_SECRET")
		second := &cobra.Command{Use: "second", RunE: func(*cobra.Command, []string) error { return nil }}
		second.Flags().StringVar(&other, "other", "", "")
		root.AddCommand(run, second)
		cliconfig.Command(root, "TEST_CONFIG")
		return root
	}
	root := tree()

	out := &bytesBuffer{}
	root.SetOut(out)
	root.SetArgs([]string{"run", "--help"})
	require.NoError(t, root.Execute())
	require.Contains(t, out.String(), "[TEST_SECRET]")
	require.NotContains(t, out.String(), "s3cret")

	file := filepath.Join(t.TempDir(), "shared.yaml")
	require.NoError(t, os.WriteFile(file, []byte("other: o\n"), 0o600))
	t.Setenv("TEST_CONFIG", file)
	root = tree()
	root.SetArgs([]string{"run"})
	require.NoError(t, root.Execute())
	require.Equal(t, "s3cret", secret)
}

type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }
func (b *bytesBuffer) String() string              { return string(b.b) }
