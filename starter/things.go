package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/iotclient"
)

// thingCmd registers devices and groups them, through the AWS IoT API (local or AWS), so that a
// fleet can be set up without the AWS CLI, many at a time.
func thingCmd() *cobra.Command {
	var ic cliconfig.IoT
	cmd := &cobra.Command{Use: "thing", Short: "Register devices (things) and put them in thing groups"}
	ic.Bind(cmd.PersistentFlags())

	var groups, attrs []string
	var fromFile string
	add := &cobra.Command{
		Use:   "add [THING...]",
		Short: "Register things (an existing one is left as it is, attributes included) and add them to thing groups",
		Example: `  starter thing add pi-1 pi-2 pi-3 --group site-berlin
  starter thing add $(seq -f 'device-%04g' 1 500) --group canary --attribute site=berlin
  starter thing add --file factory-batch.txt --group line-3     # one thing name per line`,
		RunE: func(cmd *cobra.Command, things []string) error {
			if fromFile != "" {
				listed, err := thingsFromFile(fromFile)
				if err != nil {
					return err
				}
				things = append(things, listed...)
			}
			if len(things) == 0 {
				return errors.New("name the things to register, or give --file with one thing name per line")
			}
			attributes := map[string]string{}
			for _, kv := range attrs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--attribute %q: use NAME=VALUE", kv)
				}
				attributes[k] = v
			}
			c, err := iotclient.ForCLI(cmd.Context(), &ic)
			if err != nil {
				return err
			}
			for _, g := range groups {
				if err := ensureGroup(cmd.Context(), c, g, ""); err != nil {
					return err
				}
			}
			// 16 in flight; the first error stops the rest from starting.
			eg, ctx := errgroup.WithContext(cmd.Context())
			eg.SetLimit(16)
			var created atomic.Int64
			register := func(name string) (bool, error) {
				// CreateThing succeeds again for a thing of the same configuration, so whether it
				// is new is asked first.
				_, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(name)})
				var missing *types.ResourceNotFoundException
				isNew := errors.As(err, &missing)
				if err != nil && !isNew {
					return false, fmt.Errorf("look up %s: %w", name, err)
				}
				if isNew {
					in := &iot.CreateThingInput{ThingName: aws.String(name)}
					if len(attributes) > 0 {
						in.AttributePayload = &types.AttributePayload{Attributes: attributes}
					}
					var exists *types.ResourceAlreadyExistsException
					if _, err := c.CreateThing(ctx, in); errors.As(err, &exists) {
						isNew = false // registered meanwhile
					} else if err != nil {
						return false, fmt.Errorf("register %s: %w", name, err)
					}
				}
				// Things that existed already join the groups too.
				for _, g := range groups {
					if _, err := c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String(g), ThingName: aws.String(name)}); err != nil {
						return isNew, fmt.Errorf("add %s to group %s: %w", name, g, err)
					}
				}
				return isNew, nil
			}
			for _, name := range things {
				eg.Go(func() error {
					isNew, err := register(name)
					if isNew {
						created.Add(1)
					}
					return err
				})
			}
			if err := eg.Wait(); err != nil {
				return err
			}
			msg := fmt.Sprintf("registered %d new of %d things", created.Load(), len(things))
			if len(groups) > 0 {
				msg += "; all are in " + strings.Join(groups, ", ")
			}
			fmt.Fprintln(os.Stderr, msg)
			return nil
		},
	}
	add.Flags().StringArrayVar(&groups, "group", nil, "thing group to add them to, created if missing (repeatable)")
	add.Flags().StringArrayVar(&attrs, "attribute", nil, "NAME=VALUE attribute of new things (repeatable)")
	add.Flags().StringVar(&fromFile, "file", "", "read thing names from this file, one per line (blank lines and # comments skipped; - for stdin)")

	var parent string
	group := &cobra.Command{
		Use:     "group GROUP",
		Short:   "Create a thing group (an existing one is left as it is)",
		Example: "  starter thing group site-berlin --parent europe",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := iotclient.ForCLI(cmd.Context(), &ic)
			if err != nil {
				return err
			}
			if parent != "" {
				if err := ensureGroup(cmd.Context(), c, parent, ""); err != nil {
					return err
				}
			}
			if err := ensureGroup(cmd.Context(), c, args[0], parent); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "thing group %s is there\n", args[0])
			return nil
		},
	}
	group.Flags().StringVar(&parent, "parent", "", "parent group, created if missing")
	cmd.AddCommand(add, group)
	return cmd
}

// ensureGroup creates a thing group unless it exists.
func ensureGroup(ctx context.Context, c *iot.Client, name, parent string) error {
	in := &iot.CreateThingGroupInput{ThingGroupName: aws.String(name)}
	if parent != "" {
		in.ParentGroupName = aws.String(parent)
	}
	_, err := c.CreateThingGroup(ctx, in)
	var exists *types.ResourceAlreadyExistsException
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("create thing group %s: %w", name, err)
	}
	return nil
}

// thingsFromFile reads thing names, one per line; blank lines and # comments are skipped, and a
// line that is no thing name is refused with its number.
func thingsFromFile(path string) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var out []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !broker.ValidThingName(line) {
			return nil, fmt.Errorf("%s line %d: %q is not a thing name (1-128 of a-z A-Z 0-9 : _ -)", path, n, line)
		}
		out = append(out, line)
	}
	return out, sc.Err()
}
