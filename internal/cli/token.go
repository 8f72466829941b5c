package cli

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/spear-go/spear/internal/auth"
	"github.com/spear-go/spear/internal/errdefs"
)

// newTokenCmd returns `spear token`: manage a node's token file. These
// commands work on the file, not through a node.
func (a *tokenCommands) newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the bearer tokens of a token file",
		Long: `Manage a token file (spear serve --token-file FILE). The file keeps each
token's name, scope (read, invoke or admin; admin includes invoke, which
includes read), creation time, optional expiry and sha256, never the token:
it is shown once, by create. A node picks up changes without a restart, so
a revoked token stops working at once.`,
	}
	cmd.AddCommand(a.newCreateCmd(), a.newListCmd(), a.newRevokeCmd())
	return cmd
}

func (a *tokenCommands) newCreateCmd() *cobra.Command {
	var (
		file, scope, name string
		expires           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --file FILE --scope SCOPE --name NAME [--expires DURATION]",
		Short: "Create a token; it is printed once, as the last line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := auth.ParseScope(scope)
			if err != nil {
				return usageErrorf("--scope %q: want read, invoke or admin", scope)
			}
			if expires < 0 {
				return usageErrorf("--expires %v: want a positive duration", expires)
			}
			now := time.Now()
			token, err := auth.Create(file, name, sc, expires, now)
			if err != nil {
				return err // its class decides the exit code: a bad name is a usage error
			}
			until := "never"
			if expires > 0 {
				until = now.Add(expires).UTC().Truncate(time.Second).Format(time.RFC3339)
			}
			fmt.Fprintf(a.stdout, "created token %q, scope %s, expires %s, in %s; it is shown only now:\n", name, sc, until, file)
			fmt.Fprintln(a.stdout, token)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "token file (created if missing, mode 0600)")
	f.StringVar(&scope, "scope", "", "read, invoke or admin")
	f.StringVar(&name, "name", "", "a name for the token, unique in the file (to list and revoke it)")
	f.DurationVar(&expires, "expires", 0, "the token expires this long from now (e.g. 720h); default never")
	for _, req := range []string{"file", "scope", "name"} {
		_ = cmd.MarkFlagRequired(req)
	}
	return cmd
}

func (a *tokenCommands) newListCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "list --file FILE",
		Short: "List the tokens of a token file: names, scopes, expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entries, err := auth.ReadFile(file)
			if err != nil {
				return err
			}
			now := time.Now()
			if a.json {
				enc := json.NewEncoder(a.stdout)
				for _, e := range entries {
					if err := enc.Encode(struct {
						Name    string    `json:"name"`
						Scope   string    `json:"scope"`
						Created time.Time `json:"created"`
						Expires time.Time `json:"expires,omitzero"`
						Expired bool      `json:"expired,omitempty"`
					}{e.Name, e.Scope, e.Created, e.Expires, e.Expired(now)}); err != nil {
						return err
					}
				}
				return nil
			}
			tw := newTable(a.stdout)
			row(tw, "NAME", "SCOPE", "CREATED", "EXPIRES")
			for _, e := range entries {
				exp := "never"
				if !e.Expires.IsZero() {
					exp = e.Expires.UTC().Format(time.RFC3339)
					if e.Expired(now) {
						exp += " (expired)"
					}
				}
				row(tw, e.Name, e.Scope, e.Created.UTC().Format(time.RFC3339), exp)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "token file")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func (a *tokenCommands) newRevokeCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "revoke --file FILE NAME",
		Short: "Revoke the token named NAME: nodes refuse it from their next look at the file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			found, err := auth.Revoke(file, args[0])
			if err != nil {
				return err
			}
			if !found {
				return &cliError{class: errdefs.NotFound, msg: fmt.Sprintf("no token named %q in %s", args[0], file)}
			}
			fmt.Fprintf(a.stdout, "revoked token %q\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "token file")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}
