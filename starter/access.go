package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/accessclient"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/localiot"
)

// accessClient is the access/audit client for a command's IoT settings.
func accessClient(ctx context.Context, ic *cliconfig.IoT) (*accessclient.Client, error) {
	ic.Resolve()
	return accessclient.New(ctx, iotclient.Config{Endpoint: ic.Endpoint, Region: ic.Region, AccessKeyID: ic.AccessKeyID, SecretAccessKey: ic.SecretAccessKey})
}

// accessCmd manages the access keys REST clients and the CLI sign with, each with a role.
func accessCmd() *cobra.Command {
	var ic cliconfig.IoT
	var reason string
	cmd := &cobra.Command{Use: "access", Short: "Access keys and their roles: viewer, operator, release-manager, admin (admins only)",
		Long: `Every request to the jobs service is signed with an access key, and every key holds one role:

  viewer           reads everything, changes nothing
  operator         starts, steers and rolls back rollouts; manages things, groups and certificates
  release-manager  publishes releases (artifacts and signed metadata); never the TUF root key
  admin            everything, and alone manages keys and settings

A key can be limited to thing groups (--group): it then changes only the things of those groups
and of the groups below them. The key the jobs service is configured with is an admin's.`}
	ic.Bind(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVar(&reason, "reason", "", "why, for the audit log")
	client := func(cmd *cobra.Command) (*accessclient.Client, error) {
		c, err := accessClient(cmd.Context(), &ic)
		if c != nil {
			c.Reason = reason
		}
		return c, err
	}

	var role, description string
	var groups []string
	create := &cobra.Command{
		Use:   "create --role ROLE",
		Short: "Issue a key; its secret is shown this once",
		Example: `  starter access create --role operator --description "CI pipeline"
  starter access create --role operator --group site-berlin   # changes only Berlin's devices`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role == "" {
				return errors.New("--role is required: viewer, operator, release-manager or admin")
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			k, err := c.CreateKey(cmd.Context(), role, groups, description)
			if err != nil {
				return err
			}
			return emit(cmd, k, "access key %s (%s%s)\nsecret     %s\n\nThe secret is not shown again: give it to its holder now (OTAFLOW_ACCESS_KEY_ID, OTAFLOW_SECRET_ACCESS_KEY).\n",
				k.ID, k.Role, scopeText(k.ThingGroups), k.Secret)
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer, operator, release-manager or admin")
	create.Flags().StringSliceVar(&groups, "group", nil, "limit the key's changes to these thing groups (repeatable)")
	create.Flags().StringVar(&description, "description", "", "who or what holds it")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the keys (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			keys, err := c.ListKeys(cmd.Context())
			if err != nil {
				return err
			}
			if len(keys) == 0 && !outputJSON(cmd) {
				fmt.Println("(no keys but the configured one: `starter access create --role ...` issues them)")
				return nil
			}
			return table(cmd, keys, "KEY\tROLE\tGROUPS\tSTATUS\tCREATED\tBY\tDESCRIPTION", func(k accessclient.Key) []any {
				status := k.Status
				if !k.Expires().IsZero() {
					status += ", rotated to " + k.ReplacedBy + ", signs until " + k.Expires().Format(time.RFC3339)
				}
				return []any{k.ID, k.Role, strings.Join(k.ThingGroups, ","), status, k.Created().Format(time.RFC3339), k.CreatedBy, k.Description}
			})
		},
	}

	setStatus := func(use, status, short string) *cobra.Command {
		return &cobra.Command{
			Use: use + " KEY", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := client(cmd)
				if err != nil {
					return err
				}
				k, err := c.SetStatus(cmd.Context(), args[0], status)
				if err != nil {
					return err
				}
				return emit(cmd, k, "access key %s is %s\n", k.ID, strings.ToLower(k.Status))
			},
		}
	}

	var grace time.Duration
	rotate := &cobra.Command{
		Use:   "rotate KEY",
		Short: "Issue a key with the same role and groups; the old one signs for --grace more",
		Example: `  starter access rotate OTFA... --grace 24h   # move clients over within a day
  starter access rotate OTFA... --grace 0     # the old key stops now`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			k, err := c.RotateKey(cmd.Context(), args[0], grace)
			if err != nil {
				return err
			}
			return emit(cmd, k, "access key %s replaces %s (%s%s); %s signs until %s\nsecret     %s\n\nThe secret is not shown again.\n",
				k.ID, args[0], k.Role, scopeText(k.ThingGroups), args[0], time.Now().Add(grace).UTC().Format(time.RFC3339), k.Secret)
		},
	}
	rotate.Flags().DurationVar(&grace, "grace", 24*time.Hour, "how long the old key still signs (0: not at all; at most 720h)")

	del := &cobra.Command{
		Use: "delete KEY", Short: "Delete a key: nothing it signs is accepted any more", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			return emit(cmd, map[string]string{"deleted": args[0]}, "access key %s deleted\n", args[0])
		},
	}

	whoami := &cobra.Command{
		Use: "whoami", Short: "Who this CLI's key is, and what it may do", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			me, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			return emit(cmd, me, "%s: %s%s (may %s)\n", me.Name, me.Role, scopeText(me.ThingGroups), strings.Join(me.Permissions, ", "))
		},
	}
	cmd.AddCommand(create, list, setStatus("activate", "Active", "Let a deactivated key sign again"),
		setStatus("deactivate", "Inactive", "Stop a key signing (reversible: activate)"), rotate, del, whoami, userCmd(client))
	return cmd
}

// userCmd manages console users. Passwords come on standard input, never in flags (which
// other users of the machine can read in the process list).
func userCmd(client func(*cobra.Command) (*accessclient.Client, error)) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Console users: a name, a password (kept as a bcrypt hash) and a role"}
	var change accessclient.UserChange
	var enable, disable bool
	readPassword := func() (string, error) {
		fmt.Fprintln(os.Stderr, "password (one line on standard input; at least 20 characters, or 12 of three kinds):")
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("read the password from standard input: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	add := &cobra.Command{
		Use:     "add NAME --role ROLE",
		Short:   "Add a console user; the password is read from standard input",
		Example: `  openssl rand -base64 24 | tee /dev/stderr | starter access user add alice --role operator`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if change.Role == "" {
				return errors.New("--role is required: viewer, operator, release-manager or admin")
			}
			pw, err := readPassword()
			if err != nil {
				return err
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			change.Password = pw
			u, err := c.CreateUser(cmd.Context(), args[0], change)
			if err != nil {
				return err
			}
			return emit(cmd, u, "user %s added (%s%s)\n", u.Name, u.Role, scopeText(u.ThingGroups))
		},
	}
	add.Flags().StringVar(&change.Role, "role", "", "viewer, operator, release-manager or admin")
	add.Flags().StringSliceVar(&change.ThingGroups, "group", nil, "limit the user's changes to these thing groups")
	var newPassword bool
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Change a user's role, groups or password, or disable or enable it (sessions of a changed password end)",
		Example: `  starter access user set alice --role viewer
  starter access user set alice --password < new-password.txt
  starter access user set alice --disable`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if enable && disable {
				return errors.New("--enable or --disable, not both")
			}
			if enable || disable {
				change.Disabled = &disable
			}
			if newPassword {
				pw, err := readPassword()
				if err != nil {
					return err
				}
				change.Password = pw
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			u, err := c.UpdateUser(cmd.Context(), args[0], change)
			if err != nil {
				return err
			}
			state := "enabled"
			if u.Disabled {
				state = "disabled"
			}
			return emit(cmd, u, "user %s: %s%s, %s\n", u.Name, u.Role, scopeText(u.ThingGroups), state)
		},
	}
	set.Flags().StringVar(&change.Role, "role", "", "the new role")
	set.Flags().StringSliceVar(&change.ThingGroups, "group", nil, "the new thing groups")
	set.Flags().BoolVar(&newPassword, "password", false, "read a new password from standard input")
	set.Flags().BoolVar(&disable, "disable", false, "stop the user signing in (its sessions end)")
	set.Flags().BoolVar(&enable, "enable", false, "let a disabled user sign in again")
	list := &cobra.Command{
		Use: "list", Short: "List console users", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			users, err := c.ListUsers(cmd.Context())
			if err != nil {
				return err
			}
			return table(cmd, users, "USER\tROLE\tGROUPS\tDISABLED\tBY", func(u accessclient.User) []any {
				return []any{u.Name, u.Role, strings.Join(u.ThingGroups, ","), u.Disabled, u.CreatedBy}
			})
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Remove a console user (its sessions end)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteUser(cmd.Context(), args[0]); err != nil {
				return err
			}
			return emit(cmd, map[string]string{"deleted": args[0]}, "user %s deleted\n", args[0])
		},
	}
	cmd.AddCommand(add, set, list, del)
	return cmd
}

// table prints items as JSON with -o json, else as a table: the header, then one row each.
func table[T any](cmd *cobra.Command, items []T, header string, row func(T) []any) error {
	if outputJSON(cmd) {
		if items == nil {
			items = []T{}
		}
		return json.NewEncoder(os.Stdout).Encode(items)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		cells := row(it)
		for i, c := range cells {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func scopeText(groups []string) string {
	if len(groups) == 0 {
		return ""
	}
	return ", only thing groups " + strings.Join(groups, ", ")
}

// auditCmd reads the audit log.
func auditCmd() *cobra.Command {
	var ic cliconfig.IoT
	cmd := &cobra.Command{Use: "audit", Short: "The audit log: who changed what, when, from where, why, and what came of it"}
	ic.Bind(cmd.PersistentFlags())
	var q localiot.AuditQuery
	var since, until string
	filters := func(c *cobra.Command) {
		f := c.Flags()
		f.StringVar(&q.Who, "who", "", "only this access key or user")
		f.StringVar(&q.Action, "action", "", "only actions starting with this (CreateJob, rollout.)")
		f.StringVar(&q.Resource, "resource", "", "only resources starting with this (/jobs/, rollout/)")
		f.StringVar(&q.Outcome, "outcome", "", "only this outcome: ok, denied, refused, or an error (InvalidRequestException)")
		f.StringVar(&q.Via, "via", "", "only what came this way: rest, console, cli, sign-in")
		f.StringVar(&since, "since", "", "only from this time on: RFC 3339 (2026-12-05T08:00:00Z) or a duration ago (24h)")
		f.StringVar(&until, "until", "", "only before this time: RFC 3339 or a duration ago")
	}
	parseTimes := func() error {
		var err error
		if q.Since, err = timeOrAgo("--since", since); err != nil {
			return err
		}
		q.Until, err = timeOrAgo("--until", until)
		return err
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List entries, newest first",
		Example: `  starter audit list --since 24h
  starter audit list --outcome denied
  starter audit list --resource rollout/r-42 --oldest -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := parseTimes(); err != nil {
				return err
			}
			c, err := accessClient(cmd.Context(), &ic)
			if err != nil {
				return err
			}
			entries, next, err := c.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			if outputJSON(cmd) {
				return json.NewEncoder(os.Stdout).Encode(map[string]any{"entries": entries, "nextToken": next})
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tWHO\tVIA\tFROM\tACTION\tRESOURCE\tOUTCOME\tREASON")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Who, e.Via, e.From, e.Action, e.Resource, e.Outcome, e.Reason)
			}
			tw.Flush()
			if next != "" {
				fmt.Fprintf(os.Stderr, "more entries: --next-token %s (or `starter audit export` for all)\n", next)
			}
			return nil
		},
	}
	filters(list)
	list.Flags().BoolVar(&q.Oldest, "oldest", false, "oldest first")
	list.Flags().IntVar(&q.Limit, "limit", 50, "at most this many (1-1000)")
	list.Flags().StringVar(&q.NextToken, "next-token", "", "go on from where a listing stopped")

	var file string
	export := &cobra.Command{
		Use:   "export",
		Short: "Write every matching entry as JSON lines, oldest first (for a SIEM or an archive)",
		Example: `  starter audit export --file audit-2026-12.jsonl --since 2026-12-01T00:00:00Z
  starter audit export | jq -c 'select(.outcome != "ok")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := parseTimes(); err != nil {
				return err
			}
			c, err := accessClient(cmd.Context(), &ic)
			if err != nil {
				return err
			}
			var out io.Writer = os.Stdout
			if file != "" {
				f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return fmt.Errorf("export: %w (an existing file is not overwritten)", err)
				}
				defer f.Close()
				out = f
			}
			w := bufio.NewWriter(out)
			enc := json.NewEncoder(w)
			q.Oldest, q.Limit = true, 1000
			n := 0
			for {
				entries, next, err := c.Audit(cmd.Context(), q)
				if err != nil {
					return err
				}
				for _, e := range entries {
					if err := enc.Encode(e); err != nil {
						return err
					}
				}
				n += len(entries)
				if next == "" || next == q.NextToken {
					break
				}
				q.NextToken = next
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if file != "" {
				fmt.Fprintf(os.Stderr, "%d entries written to %s\n", n, file)
			}
			return nil
		},
	}
	filters(export)
	export.Flags().StringVar(&file, "file", "", "write here (created; never overwritten) instead of standard output")
	cmd.AddCommand(list, export)
	return cmd
}

// timeOrAgo reads an RFC 3339 time or a duration before now ("" is the zero time).
func timeOrAgo(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: give a time (2026-12-05T08:00:00Z) or how long ago (24h)", flag, v)
	}
	return t, nil
}
