package cliconfig

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Every otaflow binary takes each setting from, in order: its flag, its environment variable,
// the config file, the flag's default. Defaults are constants, so --help never shows a value
// from the environment (a secret, say); the environment and the file are applied after
// parsing, by Apply, to the flags the command line left alone.

const (
	envAnnotation  = "otaflow-env"
	fileAnnotation = "otaflow-file-key"
)

// Env binds flag name to the environment variable env and names it in the flag's help.
func Env(fs *pflag.FlagSet, name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("cliconfig.Env: no flag --" + name)
	}
	fs.SetAnnotation(name, envAnnotation, []string{env})
	f.Usage += " [" + env + "]"
}

// FileKey names flag name's key in the config file (default: the flag's name in camelCase;
// nested keys are joined with dots, e.g. "tls.caFile").
func FileKey(fs *pflag.FlagSet, name, key string) {
	fs.SetAnnotation(name, fileAnnotation, []string{key})
}

func fileKey(f *pflag.Flag) string {
	if k := f.Annotations[fileAnnotation]; len(k) == 1 {
		return k[0]
	}
	var b strings.Builder
	up := false
	for _, r := range f.Name {
		switch {
		case r == '-':
			up = true
		case up:
			b.WriteRune(unicode.ToUpper(r))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// ReadFile reads a JSON or YAML config file into the flat key → value map Apply takes.
func ReadFile(path string) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var tree map[string]any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := map[string]string{}
	var flatten func(prefix string, v any) error
	flatten = func(prefix string, v any) error {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				if err := flatten(strings.TrimPrefix(prefix+"."+k, "."), sub); err != nil {
					return err
				}
			}
		case nil:
		case string:
			out[prefix] = v
		case bool, float64:
			raw, _ := json.Marshal(v)
			out[prefix] = string(raw)
		default:
			return fmt.Errorf("config file %s: %s must be a single value, not %T", path, prefix, v)
		}
		return nil
	}
	if err := flatten("", tree); err != nil {
		return nil, err
	}
	return out, nil
}

// Apply sets every flag the command line did not set from its environment variable, else from
// file (ReadFile's map; nil for none). A file key that names no flag (of fs, or in known) is an
// error: a misspelt setting must not be silently ignored.
func Apply(fs *pflag.FlagSet, file map[string]string, fileName string, known map[string]bool) error {
	if known == nil {
		known = map[string]bool{}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		key := fileKey(f)
		known[key] = true
		if err != nil || f.Changed {
			return
		}
		source, value, ok := "", "", false
		if env := f.Annotations[envAnnotation]; len(env) == 1 {
			if v, set := os.LookupEnv(env[0]); set && v != "" {
				source, value, ok = env[0], v, true
			}
		}
		if !ok {
			if v, set := file[key]; set {
				source, value, ok = fileName+": "+key, v, true
			}
		}
		if !ok {
			return
		}
		if e := f.Value.Set(value); e != nil {
			err = fmt.Errorf("%s: invalid value for --%s: %v", source, f.Name, e)
		}
	})
	if err != nil {
		return err
	}
	var unknown []string
	for k := range file {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("config file %s: unknown field %q: the keys are the flags' names in camelCase (see --help)", fileName, unknown[0])
	}
	return nil
}

// Command gives a cobra command (and, on a root, all below it) a --config flag, bound to env,
// and applies the environment and the config file to its flags before it runs.
func Command(cmd *cobra.Command, env string) {
	var path string
	cmd.PersistentFlags().StringVar(&path, "config", "", "settings file, YAML or JSON: keys are the flags' names in camelCase")
	Env(cmd.PersistentFlags(), "config", env)
	prev := cmd.PersistentPreRunE
	cmd.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		fs := c.Flags()
		if err := Apply(fs, nil, "", nil); err != nil { // --config itself may come from the environment
			return err
		}
		var file map[string]string
		if path != "" {
			var err error
			if file, err = ReadFile(path); err != nil {
				return err
			}
			// One file may serve several commands: a key is known if any command has the flag.
			known := map[string]bool{}
			var walk func(*cobra.Command)
			walk = func(c *cobra.Command) {
				c.Flags().VisitAll(func(f *pflag.Flag) { known[fileKey(f)] = true })
				c.PersistentFlags().VisitAll(func(f *pflag.Flag) { known[fileKey(f)] = true })
				for _, sub := range c.Commands() {
					walk(sub)
				}
			}
			walk(c.Root())
			if err := Apply(fs, file, path, known); err != nil {
				return err
			}
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}
