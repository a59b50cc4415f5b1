package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/components"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/temporalconf"
	"github.com/otaflow/otaflow/internal/tuf"
	"github.com/otaflow/otaflow/workflows/contract"
)

// parseComponents reads NAME[=VERSION] pairs; no version means "the newest that fits".
func parseComponents(list []string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range list {
		name, version, _ := strings.Cut(item, "=")
		if name == "" {
			return nil, fmt.Errorf("--component %q: use NAME or NAME=VERSION", item)
		}
		out[name] = version
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("name at least one --component (NAME, or NAME=VERSION to pin it)")
	}
	return out, nil
}

func deploymentCmd() *cobra.Command {
	var tc temporalconf.Temporal
	var catalogPath string
	cmd := &cobra.Command{Use: "deployment", Short: "Continuous deployments of components to thing groups (Greengrass v2 style)"}
	tc.Bind(cmd.PersistentFlags())
	var dataDir string
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", ".otaflow", "the stack's data directory, whose components.json is the catalog (starter dev --data-dir)")
	cmd.PersistentFlags().StringVar(&catalogPath, "catalog", "", "component catalog, to check versions before starting (default <data-dir>/components.json)")
	cliconfig.Env(cmd.PersistentFlags(), "catalog", "OTAFLOW_CATALOG")

	// checkedComponents parses --component values and resolves them against the catalog, so
	// a request that cannot be met is refused before anything starts.
	checkedComponents := func(list []string) (map[string]string, error) {
		comps, err := parseComponents(list)
		if err != nil {
			return nil, err
		}
		cat, err := components.Open(cmp.Or(catalogPath, filepath.Join(dataDir, "components.json")))
		if err != nil {
			return nil, err
		}
		resolved, err := cat.Resolve(comps)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "resolves now to: %s\n", describeComponents(resolved))
		return comps, nil
	}
	var group string
	var ic cliconfig.IoT
	var comps []string
	var interval time.Duration
	create := &cobra.Command{
		Use: "create DEPLOYMENT_ID", Short: "Deploy components to a thing group, now and to every device that joins later", Args: cobra.ExactArgs(1),
		Example: `  starter deployment create fleet-sm --thing-group fleet --component aws.greengrass.StreamManager
  starter deployment create fleet-nucleus --thing-group fleet --component aws.greengrass.Nucleus=2.1.0`,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := checkedComponents(comps)
			if err != nil {
				return err
			}
			if group == "" {
				return fmt.Errorf("--thing-group is required")
			}
			iotc, err := iotclient.ForCLI(cmd.Context(), &ic)
			if err != nil {
				return err
			}
			if _, err := iotc.DescribeThingGroup(cmd.Context(), &iot.DescribeThingGroupInput{ThingGroupName: aws.String(group)}); err != nil {
				var nf *types.ResourceNotFoundException
				if errors.As(err, &nf) {
					return fmt.Errorf("thing group %s does not exist at %s: create it first (aws iot create-thing-group --thing-group-name %s) or fix --thing-group; nothing was started", group, ic.Endpoint, group)
				}
				return fmt.Errorf("check thing group %s: %w", group, err)
			}
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				if _, err := rolloutclient.StartDeployment(cmd.Context(), c, tc.TaskQueue, contract.DeploymentRequest{
					DeploymentID: args[0], ThingGroup: group, Components: m, SyncInterval: interval,
				}); err != nil {
					return err
				}
				return emit(cmd, map[string]string{"deploymentId": args[0], "thingGroup": group, "state": "started"}, "deployment %s to %s started\n", args[0], group)
			})
		},
	}
	create.Flags().StringVar(&group, "thing-group", "", "the thing group to deploy to")
	ic.Bind(create.Flags())
	create.Flags().StringSliceVar(&comps, "component", nil, "NAME or NAME=VERSION (repeat); without a version the newest that fits is used")
	create.Flags().DurationVar(&interval, "sync-interval", 30*time.Second, "how often to look for devices that joined the group")

	var reviseComps []string
	revise := &cobra.Command{
		Use: "revise DEPLOYMENT_ID", Short: "Replace a deployment's components; every device of the group gets the revision", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := checkedComponents(reviseComps)
			if err != nil {
				return err
			}
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				st, err := rolloutclient.ReviseDeployment(cmd.Context(), c, args[0], m)
				if err != nil {
					return err
				}
				return emit(cmd, st, "deployment %s is at revision %d\n", args[0], st.Revision)
			})
		},
	}
	revise.Flags().StringSliceVar(&reviseComps, "component", nil, "NAME or NAME=VERSION (repeat)")

	status := &cobra.Command{
		Use: "status DEPLOYMENT_ID", Short: "Show a deployment's revision, members and last resolution", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				st, err := rolloutclient.DeploymentStatus(cmd.Context(), c, args[0])
				if err != nil {
					return err
				}
				text := fmt.Sprintf("deployment %s to thing group %s: revision %d, %d members, %d jobs\n  components: %s\n",
					st.DeploymentID, st.ThingGroup, st.Revision, st.Members, st.Jobs, describeComponents(st.Components))
				if st.LastError != "" {
					text += "  last error: " + st.LastError + "\n"
				}
				return emit(cmd, st, "%s", text)
			})
		},
	}
	cmd.AddCommand(create, revise, status)
	return cmd
}

func describeComponents(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+" "+v)
	}
	return strings.Join(parts, ", ")
}

func componentCmd() *cobra.Command {
	var catalogPath string
	cmd := &cobra.Command{Use: "component", Short: "The component catalog deployments resolve against"}
	var dataDir string
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", ".otaflow", "the stack's data directory, whose components.json is the catalog the worker reads (starter dev --data-dir)")
	cmd.PersistentFlags().StringVar(&catalogPath, "catalog", "", "catalog file (default <data-dir>/components.json, the one the stack reads)")
	cliconfig.Env(cmd.PersistentFlags(), "catalog", "OTAFLOW_CATALOG")
	list := &cobra.Command{
		Use: "list", Short: "List component versions and their dependency ranges",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cat, err := components.Open(cmp.Or(catalogPath, filepath.Join(dataDir, "components.json")))
			if err != nil {
				return err
			}
			if outputJSON(cmd) {
				return json.NewEncoder(os.Stdout).Encode(cat.Recipes())
			}
			for _, r := range cat.Recipes() {
				var deps []string
				for d, rng := range r.Dependencies {
					deps = append(deps, d+" "+rng)
				}
				fmt.Printf("%-34s %-8s %s\n", r.Name, r.Version, strings.Join(deps, "; "))
			}
			return nil
		},
	}
	var (
		repoDir, bucket string
		keyDirs         []string
		ic              cliconfig.IoT
		noUpload        bool
	)
	add := &cobra.Command{
		Use: "add RECIPE.json", Short: `Add a component version: {"name": ..., "version": "1.2.3", "dependencies": {"aws.greengrass.Nucleus": ">=2.0.3 <2.2.0"}}`,
		Long: `Add a component version to the catalog deployments resolve against. With --repo, also sign
its recipe in the fleet's TUF repository (the target components/NAME/VERSION.json) and upload the
metadata: real devices record a component version only when its recipe is signed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var r components.Recipe
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("%s is not a JSON recipe: %w", args[0], err)
			}
			cat, err := components.Open(cmp.Or(catalogPath, filepath.Join(dataDir, "components.json")))
			if err != nil {
				return err
			}
			if err := r.Validate(); err != nil {
				return err
			}
			if repoDir != "" {
				repo, err := tuf.Open(repoDir, keyDirs, tuf.Options{})
				if err != nil {
					return err
				}
				if err := release.PublishComponent(cmd.Context(), repo, artifactStore(&ic, !noUpload), bucket, r.Name, r.Version, raw); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "signed the recipe of %s %s as %s\n", r.Name, r.Version, tuf.ComponentTargetName(r.Name, r.Version))
			}
			if err := cat.Add(r); err != nil {
				return err
			}
			return emit(cmd, r, "added %s %s\n", r.Name, r.Version)
		},
	}
	af := add.Flags()
	af.StringVar(&repoDir, "repo", "", "also sign the recipe in this TUF repository (starter release init) and upload the metadata")
	af.StringSliceVar(&keyDirs, "keys", nil, "more directories holding private keys")
	af.StringVar(&bucket, "bucket", release.DefaultBucket, "artifact store (S3) bucket for the metadata")
	af.BoolVar(&noUpload, "no-upload", false, "only sign; upload the metadata yourself")
	ic.Bind(af)
	cmd.AddCommand(list, add)
	return cmd
}
