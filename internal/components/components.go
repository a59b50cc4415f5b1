// Package components is otaflow's component catalog for Greengrass v2–style deployments:
// component versions with semver dependency ranges (recipes), and the resolution the seed
// describes: a pinned version stays pinned; an unpinned component, or a dependency nobody
// pinned, gets the newest version that satisfies every constraint.
package components

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/Masterminds/semver/v3"

	"github.com/otaflow/otaflow/internal/jobdoc"
)

// Nucleus is the Greengrass nucleus component.
const Nucleus = "aws.greengrass.Nucleus"

// Recipe is one component version and what it depends on. The catalog file is a JSON list of
// recipes: {"name": "...", "version": "2.0.8", "dependencies": {"aws.greengrass.Nucleus": ">=2.0.3 <2.2.0"}}.
type Recipe struct {
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	Description  string            `json:"description,omitempty"`
	Dependencies map[string]string `json:"dependencies,omitempty"`
}

// Validate checks the version and every range.
func (r Recipe) Validate() error {
	if r.Name == "" {
		return errors.New("recipe has no component name")
	}
	if err := jobdoc.ValidComponentName(r.Name); err != nil {
		return err
	}
	if _, err := semver.StrictNewVersion(r.Version); err != nil {
		return fmt.Errorf("%s: version %q is not semver (MAJOR.MINOR.PATCH): %v", r.Name, r.Version, err)
	}
	for dep, rng := range r.Dependencies {
		if _, err := semver.NewConstraint(rng); err != nil {
			return fmt.Errorf("%s %s: dependency %s range %q is invalid: %v", r.Name, r.Version, dep, rng, err)
		}
	}
	return nil
}

// Catalog is a set of recipes kept in a JSON file.
type Catalog struct {
	mu      sync.Mutex
	path    string
	recipes []Recipe
}

// Defaults are the AWS-provided versions the seed talks about, so a fresh catalog can resolve
// its examples (stream manager 2.0.7 supports nucleus 2.0.3 to 2.0.x; 2.0.8 up to 2.1.x).
func Defaults() []Recipe {
	var out []Recipe
	for _, v := range []string{"2.0.3", "2.0.4", "2.0.5", "2.0.6", "2.1.0", "2.1.1"} {
		out = append(out, Recipe{Name: Nucleus, Version: v, Description: "Greengrass nucleus"})
	}
	out = append(out,
		Recipe{Name: "aws.greengrass.StreamManager", Version: "2.0.7", Dependencies: map[string]string{Nucleus: ">=2.0.3 <2.1.0"}},
		Recipe{Name: "aws.greengrass.StreamManager", Version: "2.0.8", Dependencies: map[string]string{Nucleus: ">=2.0.3 <2.2.0"}},
	)
	return out
}

// Open loads the catalog at path; a missing file starts from Defaults.
func Open(path string) (*Catalog, error) {
	c := &Catalog{path: path}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the file again, so recipes another process added (starter component add)
// count from the next resolution on.
func (c *Catalog) reload() error {
	raw, err := os.ReadFile(c.path)
	if errors.Is(err, os.ErrNotExist) {
		if c.recipes == nil {
			c.recipes = Defaults()
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read component catalog: %w", err)
	}
	var recipes []Recipe
	if err := json.Unmarshal(raw, &recipes); err != nil {
		return fmt.Errorf("component catalog %s is not a JSON list of recipes: %w", c.path, err)
	}
	for _, r := range recipes {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("component catalog %s: %w", c.path, err)
		}
	}
	c.recipes = recipes
	return nil
}

// Recipes lists the catalog, by name then version.
func (c *Catalog) Recipes() []Recipe {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.recipes)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return semver.MustParse(out[i].Version).LessThan(semver.MustParse(out[j].Version))
	})
	return out
}

// Add adds a recipe and saves the catalog. A version already there is refused: recipes are
// immutable, as in Greengrass.
func (c *Catalog) Add(r Recipe) error {
	if err := r.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.recipes {
		if x.Name == r.Name && x.Version == r.Version {
			return fmt.Errorf("%s %s is already in the catalog; publish a new version instead", r.Name, r.Version)
		}
	}
	c.recipes = append(c.recipes, r)
	raw, err := json.MarshalIndent(c.recipes, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o755); err != nil {
		return err
	}
	tmp := c.path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.path)
}

func (c *Catalog) versions(name string) []*semver.Version {
	var out []*semver.Version
	for _, r := range c.recipes {
		if r.Name == name {
			out = append(out, semver.MustParse(r.Version))
		}
	}
	sort.Sort(sort.Reverse(semver.Collection(out)))
	return out
}

func (c *Catalog) recipe(name string, v *semver.Version) Recipe {
	for _, r := range c.recipes {
		if r.Name == name && semver.MustParse(r.Version).Equal(v) {
			return r
		}
	}
	return Recipe{}
}

// Resolve picks a version for every requested component and everything they depend on.
// requested maps a component to a pinned version, or to "" for the newest that fits.
func (c *Catalog) Resolve(requested map[string]string) (map[string]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reload(); err != nil {
		return nil, err
	}
	if len(requested) == 0 {
		return nil, errors.New("the deployment names no components")
	}
	// Every component that may take part: the requested ones and, transitively, anything any
	// of their versions depends on.
	var names []string
	seen := map[string]bool{}
	var visit func(string) error
	visit = func(n string) error {
		if seen[n] {
			return nil
		}
		seen[n] = true
		vs := c.versions(n)
		if len(vs) == 0 {
			return fmt.Errorf("component %s is not in the catalog; add its recipe first (starter component add)", n)
		}
		names = append(names, n)
		for _, v := range vs {
			for dep := range c.recipe(n, v).Dependencies {
				if err := visit(dep); err != nil {
					return err
				}
			}
		}
		return nil
	}
	req := make([]string, 0, len(requested))
	for n := range requested {
		req = append(req, n)
	}
	sort.Strings(req)
	for _, n := range req {
		if err := visit(n); err != nil {
			return nil, err
		}
		if p := requested[n]; p != "" {
			v, err := semver.StrictNewVersion(p)
			if err != nil {
				return nil, fmt.Errorf("%s: pinned version %q is not semver", n, p)
			}
			if !slices.ContainsFunc(c.versions(n), v.Equal) {
				return nil, fmt.Errorf("%s %s is not in the catalog (known: %s)", n, p, join(c.versions(n)))
			}
		}
	}
	// Requested components first (pinned before unpinned), then dependencies; newest first.
	sort.SliceStable(names, func(i, j int) bool { return rank(requested, names[i]) < rank(requested, names[j]) })
	chosen := map[string]*semver.Version{}
	var search func(i int) bool
	search = func(i int) bool {
		if i == len(names) {
			return c.consistent(chosen, true)
		}
		n := names[i]
		for _, v := range c.versions(n) {
			if p := requested[n]; p != "" && v.String() != p {
				continue
			}
			chosen[n] = v
			if c.consistent(chosen, false) && search(i+1) {
				return true
			}
			delete(chosen, n)
		}
		// A dependency no chosen version needs can stay out.
		if _, isReq := requested[n]; !isReq && !c.needed(n, chosen) {
			return search(i + 1)
		}
		return false
	}
	if !search(0) {
		return nil, c.explain(requested)
	}
	out := map[string]string{}
	for n, v := range chosen {
		out[n] = v.String()
	}
	return out, nil
}

func rank(requested map[string]string, n string) int {
	p, ok := requested[n]
	switch {
	case ok && p != "":
		return 0
	case ok:
		return 1
	}
	return 2
}

// needed reports whether a chosen version depends on n.
func (c *Catalog) needed(n string, chosen map[string]*semver.Version) bool {
	for m, v := range chosen {
		if _, ok := c.recipe(m, v).Dependencies[n]; ok {
			return true
		}
	}
	return false
}

// consistent checks every dependency between chosen versions; with final, a dependency must
// also have been chosen.
func (c *Catalog) consistent(chosen map[string]*semver.Version, final bool) bool {
	for n, v := range chosen {
		for dep, rng := range c.recipe(n, v).Dependencies {
			dv, ok := chosen[dep]
			if !ok {
				if final {
					return false
				}
				continue
			}
			con, _ := semver.NewConstraint(rng)
			if !con.Check(dv) {
				return false
			}
		}
	}
	return true
}

// explain says which pins and ranges clash, and which versions would fit.
func (c *Catalog) explain(requested map[string]string) error {
	var msgs []string
	for n, p := range requested {
		if p == "" {
			continue
		}
		v := semver.MustParse(p)
		for _, r := range c.recipes {
			if _, pinnedToo := requested[r.Name]; !pinnedToo || (requested[r.Name] != "" && requested[r.Name] != r.Version) {
				continue
			}
			rng, ok := r.Dependencies[n]
			if !ok {
				continue
			}
			con, _ := semver.NewConstraint(rng)
			if con.Check(v) {
				continue
			}
			msg := fmt.Sprintf("%s %s supports %s %s only, not %s", r.Name, r.Version, n, rng, p)
			var fits []*semver.Version
			for _, cand := range c.versions(r.Name) {
				cr := c.recipe(r.Name, cand)
				if cc, err := semver.NewConstraint(cr.Dependencies[n]); err == nil && cc.Check(v) {
					fits = append(fits, cand)
				}
			}
			if len(fits) > 0 {
				sort.Sort(semver.Collection(fits))
				msg += fmt.Sprintf(": update %s to %s or later", r.Name, fits[0])
			} else {
				msg += fmt.Sprintf(": no version of %s in the catalog supports %s %s", r.Name, n, p)
			}
			msgs = append(msgs, msg)
		}
	}
	sort.Strings(msgs)
	if len(msgs) == 0 {
		return errors.New("no combination of catalog versions satisfies every dependency range of the deployment")
	}
	return errors.New("conflicting versions: " + strings.Join(msgs, "; "))
}

func join(vs []*semver.Version) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.String())
	}
	return strings.Join(s, ", ")
}
