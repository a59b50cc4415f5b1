package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/workflows"
)

// releaseFile is what `release publish` writes and `create-software-update-job --release`
// reads.
type releaseFile struct {
	Software string              `json:"software"`
	Version  string              `json:"version"`
	Artifact *workflows.Artifact `json:"artifact"`
}

func readRelease(path string) (*releaseFile, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--release: %w", err)
	}
	var r releaseFile
	if err := json.Unmarshal(raw, &r); err != nil || r.Artifact == nil {
		return nil, fmt.Errorf("--release %s is not a release file written by `starter release publish`", path)
	}
	return &r, nil
}

func releaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Sign and publish software for rollouts (fleet key, artifacts)",
		Long: `Devices install only artifacts signed by the fleet key. Make the key once with keygen, give
the .pub file to every agent (--public-key), keep the .key file safe, and publish each release:
it is signed and uploaded to the local jobs service's artifact store (with --no-upload, copy it
to S3 yourself). Pass the written release file to create-software-update-job --release.`,
	}
	var out string
	keygen := &cobra.Command{
		Use:     "keygen",
		Short:   "Create the fleet's ed25519 signing key pair (<out>.key and <out>.pub)",
		Example: "  starter release keygen --out ./fleet",
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, key, err := release.GenerateKey(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "wrote %s (keep it secret) and %s (give it to every agent with --public-key)\n", key, pub)
			return nil
		},
	}
	keygen.Flags().StringVar(&out, "out", "fleet", "path prefix of the key files")

	var (
		ic                               cliconfig.IoT
		file, software, version, keyPath string
		bucket, releaseOut               string
		noUpload                         bool
	)
	publish := &cobra.Command{
		Use:   "publish",
		Short: "Sign a .tar.gz and upload it to the artifact store; write the release file",
		Example: `  starter release publish --file core-1.11.6.tar.gz --software core --version 1.11.6 --key fleet.key -o release.json
  starter create-software-update-job --release release.json --update-targets device-0001 ...`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" || software == "" || version == "" || keyPath == "" {
				return fmt.Errorf("--file, --software, --version and --key are required")
			}
			if software != "core" && software != "ota_agent" {
				return fmt.Errorf("--software %q: use core or ota_agent", software)
			}
			key, err := release.LoadPrivateKey(keyPath)
			if err != nil {
				return err
			}
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			a, err := release.Sign(f, key, release.S3URL(bucket, software, version))
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if !noUpload {
				ic.Resolve()
				store := release.Store{Endpoint: ic.Endpoint, Region: ic.Region, AccessKeyID: ic.AccessKeyID, SecretAccessKey: ic.SecretAccessKey}
				if err := store.Upload(cmd.Context(), a, file); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "uploaded %s (%d bytes) to %s\n", file, a.Size, a.URL)
			} else {
				fmt.Fprintf(os.Stderr, "not uploaded: copy %s to %s\n", file, a.URL)
			}
			raw, _ := json.MarshalIndent(releaseFile{Software: software, Version: version, Artifact: a}, "", "  ")
			if releaseOut == "" || releaseOut == "-" {
				fmt.Println(string(raw))
				return nil
			}
			return os.WriteFile(releaseOut, append(raw, '\n'), 0o644)
		},
	}
	pf := publish.Flags()
	ic.Bind(pf)
	pf.StringVar(&file, "file", "", "the release package (.tar.gz; for ota_agent it holds otaflow-agent at its top)")
	pf.StringVar(&software, "software", "core", "core or ota_agent")
	pf.StringVar(&version, "version", "", "the version it installs")
	pf.StringVar(&keyPath, "key", "", "the fleet's private key (from release keygen)")
	pf.StringVar(&bucket, "bucket", "otaflow-releases", "artifact store (S3) bucket")
	pf.BoolVar(&noUpload, "no-upload", false, "only sign and print; upload to S3 yourself")
	pf.StringVarP(&releaseOut, "output", "o", "-", "where to write the release file (- for stdout)")
	cmd.AddCommand(keygen, publish)
	return cmd
}
