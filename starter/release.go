package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/platform"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/tuf"
)

// readRelease reads what `release publish` writes and `create-software-update-job --release`
// takes.
func readRelease(path string) (*release.Release, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--release: %w", err)
	}
	var r release.Release
	if err := json.Unmarshal(raw, &r); err != nil || r.Artifact == nil {
		return nil, fmt.Errorf("--release %s is not a release file written by `starter release publish`", path)
	}
	return &r, nil
}

func releaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Sign and publish software for rollouts (the fleet's TUF repository)",
		Long: `Devices install only releases signed in the fleet's TUF repository (The Update Framework):
root, targets, snapshot and timestamp roles, each with its own keys. Make the repository once
with init and give its root.json to every agent (--trusted-root). Each publish signs a package
as the target <software>/<version>.tar.gz, with the health check and restart policy devices
will use, and uploads it and the metadata to the jobs service (with --no-upload, copy
metadata/ to BUCKET/tuf/ and the package to S3 yourself). Pass the written release file to
create-software-update-job --release.

Keys live in REPO/keys, mode 0600. Root keys belong offline: move keys/root-*.key to removable
media and pass that directory with --keys only for rotate. The timestamp expires after a week:
run "starter release timestamp" daily (cron), or devices refuse updates (that is what defeats a
freeze attack).`,
	}
	var (
		repoDir string
		keyDirs []string
	)
	open := func() (*tuf.Repo, error) { return tuf.Open(repoDir, keyDirs, tuf.Options{}) }
	addRepo := func(c *cobra.Command) {
		c.Flags().StringVar(&repoDir, "repo", "otaflow-release", "the TUF repository directory")
		c.Flags().StringSliceVar(&keyDirs, "keys", nil, "more directories holding private keys (e.g. the offline root keys)")
	}

	var rootKeys, threshold int
	initCmd := &cobra.Command{
		Use:     "init",
		Short:   "Create the fleet's TUF repository: keys for every role and the first root",
		Example: "  starter release init --repo ./otaflow-release --root-keys 3 --root-threshold 2",
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := tuf.Init(repoDir, tuf.Options{RootKeys: rootKeys, RootThreshold: threshold})
			if err != nil {
				return err
			}
			root, keys := filepath.Join(r.Dir, "metadata", "root.json"), filepath.Join(r.Dir, "keys")
			if outputJSON(cmd) {
				return json.NewEncoder(os.Stdout).Encode(map[string]string{"repo": r.Dir, "trustedRoot": root, "keys": keys})
			}
			fmt.Fprintf(os.Stderr, "created %s: give %s to every agent (--trusted-root); keep %s secret, the root keys offline\n", r.Dir, root, keys)
			return nil
		},
	}
	addRepo(initCmd)
	initCmd.Flags().IntVar(&rootKeys, "root-keys", 1, "how many root keys to make")
	initCmd.Flags().IntVar(&threshold, "root-threshold", 1, "how many root keys must sign a new root")

	rootCmd := &cobra.Command{
		Use:   "root",
		Short: "Print the current root metadata (what agents trust with --trusted-root)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := open()
			if err != nil {
				return err
			}
			raw, err := r.Root()
			if err != nil {
				return err
			}
			fmt.Println(string(raw))
			return nil
		},
	}
	addRepo(rootCmd)

	var (
		ic                                      cliconfig.IoT
		file, software, version, bucket, outArg string
		healthCheck, restartPolicy, minVersion  string
		osName, arch, module                    string
		moduleSettings                          []string
		noUpload                                bool
	)
	publish := &cobra.Command{
		Use:   "publish",
		Short: "Sign a .tar.gz as a TUF target and upload it with the metadata; write the release file",
		Example: `  starter release publish --file core-1.11.6.tar.gz --software core --version 1.11.6 --os ubuntu --architecture x86_64 --health-check './bin/core --check' --release-file release.json
  starter create-software-update-job --release release.json --update-targets device-0001 ...`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" || version == "" {
				return fmt.Errorf("--file and --version are required")
			}
			if software != jobdoc.SoftwareCore && software != jobdoc.SoftwareOTAAgent {
				return fmt.Errorf("--software %q: use core or ota_agent", software)
			}
			if err := jobdoc.ValidVersion(version); err != nil {
				return fmt.Errorf("--version: %w", err)
			}
			if minVersion != "" {
				if err := jobdoc.ValidVersion(minVersion); err != nil {
					return fmt.Errorf("--minimum-version: %w", err)
				}
			}
			if restartPolicy != "" && restartPolicy != jobdoc.RestartService && restartPolicy != jobdoc.RestartNone {
				return fmt.Errorf("--restart-policy %q: use service or none", restartPolicy)
			}
			if osName == "" || arch == "" {
				return fmt.Errorf("--os and --architecture are required: the platform the package is built for (devices on any other refuse it); use one of %s", platform.List())
			}
			if err := platform.Validate(osName, arch); err != nil {
				return fmt.Errorf("--os/--architecture: %w", err)
			}
			c := tuf.Custom{Software: software, Version: version, RestartPolicy: restartPolicy, MinimumVersion: minVersion, OS: osName, Architecture: arch, Module: module}
			for _, kv := range moduleSettings {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--module-setting %q: use NAME=VALUE", kv)
				}
				if c.ModuleSettings == nil {
					c.ModuleSettings = map[string]string{}
				}
				c.ModuleSettings[k] = v
			}
			if err := tuf.ValidModule(c.Module, c.ModuleSettings); err != nil {
				return fmt.Errorf("--module: %w", err)
			}
			if strings.TrimSpace(healthCheck) != "" {
				c.HealthCheck = &tuf.HealthCheck{Command: []string{"sh", "-c", healthCheck}}
			}
			r, err := open()
			if err != nil {
				return err
			}
			store := artifactStore(&ic, !noUpload)
			rel, err := release.Publish(cmd.Context(), r, store, bucket, file, c)
			if err != nil {
				return err
			}
			if store != nil {
				fmt.Fprintf(os.Stderr, "signed %s and uploaded it (%d bytes) to %s; metadata at %s\n", tuf.TargetName(software, version),
					rel.Length, rel.Artifact.URL, release.MetadataURL(ic.Endpoint, bucket))
			} else {
				fmt.Fprintf(os.Stderr, "signed, not uploaded: copy %s to %s and %s to s3://%s/tuf/\n", file, rel.Artifact.URL, filepath.Join(repoDir, "metadata"), bucket)
			}
			raw, _ := json.MarshalIndent(rel, "", "  ")
			if outArg == "" || outArg == "-" {
				fmt.Println(string(raw))
				return nil
			}
			if err := os.WriteFile(outArg, append(raw, '\n'), 0o644); err != nil {
				return err
			}
			if cmd.Flag("output").Value.String() == "json" {
				fmt.Println(string(raw))
			} else {
				fmt.Printf("release %s %s written to %s\n", software, version, outArg)
			}
			return nil
		},
	}
	addRepo(publish)
	pf := publish.Flags()
	ic.Bind(pf)
	pf.StringVar(&file, "file", "", "the release package (.tar.gz; for ota_agent it holds otaflow-agent at its top)")
	pf.StringVar(&software, "software", "core", "core or ota_agent")
	pf.StringVar(&version, "version", "", "the version it installs")
	pf.StringVar(&healthCheck, "health-check", "", "shell command devices run in the new version's directory after switching (and through the bake time); failing it rolls back. Signed with the release")
	pf.StringVar(&module, "module", "", "the update module devices install it with (file, or one of yours in the agent's --modules-dir; default: versioned directories). Signed with the release")
	pf.StringArrayVar(&moduleSettings, "module-setting", nil, "NAME=VALUE given to the module (repeatable), e.g. dest=/etc/app. Signed with the release")
	pf.StringVar(&restartPolicy, "restart-policy", "", "after the switch: service (the agent's restart command; default) or none. Signed with the release")
	pf.StringVar(&minVersion, "minimum-version", "", "oldest installed version this release may be installed over. Signed with the release")
	pf.StringVar(&osName, "os", "", "operating system the package is built for: ubuntu, amazon_linux, raspbian or openwrt. Signed with the release")
	pf.StringVar(&arch, "architecture", "", "architecture the package is built for: x86_64, aarch64, armv7l or armv6l. Signed with the release")
	pf.StringVar(&bucket, "bucket", release.DefaultBucket, "artifact store (S3) bucket")
	pf.BoolVar(&noUpload, "no-upload", false, "only sign; upload the package and metadata yourself")
	pf.StringVarP(&outArg, "release-file", "f", "-", "where to write the release file (- for stdout)")

	var upload bool
	timestamp := &cobra.Command{
		Use:   "timestamp",
		Short: "Re-sign the timestamp (it expires after a week: run daily) and upload the metadata",
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := open()
			if err != nil {
				return err
			}
			if err := r.RefreshTimestamp(); err != nil {
				return err
			}
			return uploadMetadata(cmd, r, &ic, bucket, upload)
		},
	}
	addRepo(timestamp)
	var roles []string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Replace roles' keys: a new root signed by the old and new root keys, then the roles re-signed",
		Long: `Replace the keys of one or more roles in one new root version. After a key of an online role
may have been copied, rotate all three online roles (they usually live together); docs/production.md
says what to do for a lost or stolen key of each role.`,
		Example: `  starter release rotate --role targets,snapshot,timestamp
  starter release rotate --role root --keys /media/offline-root-keys`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(roles) == 0 {
				return fmt.Errorf("--role is required: root, targets, snapshot, timestamp, or several (targets,snapshot,timestamp)")
			}
			r, err := open()
			if err != nil {
				return err
			}
			if err := r.Rotate(roles...); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "rotated the %s keys; devices follow the new root from their current one\n", strings.Join(roles, ", "))
			return uploadMetadata(cmd, r, &ic, bucket, upload)
		},
	}
	addRepo(rotate)
	rotate.Flags().StringSliceVar(&roles, "role", nil, "root, targets, snapshot or timestamp; several separated by commas")
	for _, c := range []*cobra.Command{timestamp, rotate} {
		ic.Bind(c.Flags())
		c.Flags().StringVar(&bucket, "bucket", release.DefaultBucket, "artifact store (S3) bucket")
		c.Flags().BoolVar(&upload, "upload", true, "upload the metadata to the jobs service")
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the signed releases: software, version, platform, size, and whether devices can take them as deltas",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := open()
			if err != nil {
				return err
			}
			signed, err := r.Signed()
			if err != nil {
				return err
			}
			if cmd.Flag("output").Value.String() == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(signed)
			}
			if len(signed) == 0 {
				fmt.Println("no release is signed yet: `starter release publish` signs one")
				return nil
			}
			fmt.Printf("%-10s %-12s %-22s %10s  %-12s %s\n", "SOFTWARE", "VERSION", "PLATFORM", "SIZE", "MODULE", "DELTA")
			for _, t := range signed {
				d := "no (devices download it whole)"
				if t.Delta != nil {
					d = fmt.Sprintf("yes (index %s)", humanBytes(t.Delta.IndexLength))
				}
				fmt.Printf("%-10s %-12s %-22s %10s  %-12s %s\n", t.Software, t.Version, t.OS+"/"+t.Architecture, humanBytes(t.Length), cmp.Or(t.Module, "directory"), d)
			}
			return nil
		},
	}
	addRepo(list)

	var grace time.Duration
	var keepChunks bool
	gcReport := func(res release.GCResult) {
		fmt.Fprintf(os.Stderr, "chunk store: %d live releases need %d chunks; deleted %d objects (%s); kept %d younger than %s (a publish may be using them)\n",
			res.LiveReleases, res.LiveChunks, res.Deleted, humanBytes(res.FreedBytes), res.KeptYoung, grace)
	}
	remove := &cobra.Command{
		Use:   "remove",
		Short: "Withdraw a release: devices refuse to install it from then on; its package, chunk index and the chunks no other release needs are deleted",
		Long: `Withdraw a signed release. Its TUF target is removed and the new metadata uploaded: devices
refuse to install it from then on. Devices that run it keep it, and a rollback to it still
works from their slots. Its package and chunk index are deleted from the store, then the chunk
store is collected (see gc).`,
		Example: `  starter release remove --software core --version 1.11.0`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if version == "" {
				return fmt.Errorf("--version is required: the release to withdraw (`starter release list` lists them)")
			}
			r, err := open()
			if err != nil {
				return err
			}
			store := artifactStore(&ic, true)
			if err := release.Remove(cmd.Context(), r, store, bucket, software, version); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "withdrew %s %s: devices refuse to install it from now on; its package and chunk index are deleted\n", software, version)
			if keepChunks {
				return nil
			}
			res, err := store.CollectChunks(cmd.Context(), r, bucket, grace)
			if err != nil {
				return err
			}
			gcReport(res)
			return nil
		},
	}
	addRepo(remove)
	remove.Flags().StringVar(&software, "software", "core", "core or ota_agent")
	remove.Flags().StringVar(&version, "version", "", "the version to withdraw")
	remove.Flags().BoolVar(&keepChunks, "keep-chunks", false, "do not collect the chunk store afterwards")
	gc := &cobra.Command{
		Use:   "gc",
		Short: "Delete the chunks and chunk indexes no signed release needs",
		Long: `Collect the chunk store: every signed release's chunk index is read and checked against its
signed digest, and the chunks and indexes none of them names are deleted. Objects younger than
--grace are kept, so a publish in progress (which uploads chunks before it signs) loses nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := open()
			if err != nil {
				return err
			}
			res, err := artifactStore(&ic, true).CollectChunks(cmd.Context(), r, bucket, grace)
			if err != nil {
				return err
			}
			gcReport(res)
			return nil
		},
	}
	addRepo(gc)
	for _, c := range []*cobra.Command{remove, gc} {
		ic.Bind(c.Flags())
		c.Flags().StringVar(&bucket, "bucket", release.DefaultBucket, "artifact store (S3) bucket")
		c.Flags().DurationVar(&grace, "grace", time.Hour, "keep unreferenced objects younger than this")
	}
	cmd.AddCommand(initCmd, rootCmd, publish, timestamp, rotate, list, remove, gc)
	return cmd
}

func uploadMetadata(cmd *cobra.Command, r *tuf.Repo, ic *cliconfig.IoT, bucket string, upload bool) error {
	if !upload {
		fmt.Fprintf(os.Stderr, "not uploaded: copy %s to s3://%s/tuf/\n", filepath.Join(r.Dir, "metadata"), bucket)
		return nil
	}
	store := artifactStore(ic, true)
	if err := store.PutMetadata(cmd.Context(), r, bucket); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "uploaded the metadata to %s\n", release.MetadataURL(ic.Endpoint, bucket))
	return nil
}

// artifactStore is the jobs service's artifact store the IoT settings name; nil when nothing
// is to be uploaded.
func artifactStore(ic *cliconfig.IoT, upload bool) *release.Store {
	if !upload {
		return nil
	}
	ic.Resolve()
	return &release.Store{Endpoint: ic.Endpoint, Region: ic.Region, AccessKeyID: ic.AccessKeyID, SecretAccessKey: ic.SecretAccessKey}
}
