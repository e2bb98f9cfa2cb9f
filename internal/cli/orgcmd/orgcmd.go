// Package orgcmd is organisations on the command line: offline, `tomoe
// org init|public|crl show` and `tomoe cert sign|show|revoke`, which read
// and write key, certificate and list files; and, through the running
// node's admin API, `tomoe org status|crl push|policy push` (node.go) and
// enrolment by request, `tomoe org join|requests|approve|reject`
// (join.go). Package cli adds its commands to the root and turns an
// error's ExitCode into the exit status.
package orgcmd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
)

// maxInput bounds what cert and crl commands read: the largest
// revocation list's text form is under 700 KiB.
const maxInput = 1 << 20

// ExitError carries the exit status a command's failure calls for.
type ExitError = cmdutil.ExitError

var (
	usageError = cmdutil.Usage
	failure    = cmdutil.Failure
)

// silentFailure is exit status 1 after the output said why.
func silentFailure() error { return &ExitError{Code: cmdutil.ExitFailure, Err: errors.New("")} }

// Env is where the commands read and write.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Client is the running node's admin API, for `org status` and the
	// push commands; nil leaves those out.
	Client func() *adminapi.Client
}

// Commands returns `tomoe org` and `tomoe cert`.
func Commands(env Env) []*cobra.Command {
	g := &env
	cmds := []*cobra.Command{newOrgCmd(g), newCertCmd(g)}
	if g.Client != nil {
		addNodeCmds(g, cmds)
	}
	return cmds
}

func newOrgCmd(g *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "org",
		Short: "Create an organisation and manage its revocation lists (works offline)",
		Long: `An organisation is an Ed25519 signing key held by its admin. It signs
membership certificates ('tomoe cert') that bind a node's key to a name and
groups; nodes that trust the organisation's public key verify them offline.

  tomoe org init --name acme --out acme.key     # prints the public key
  tomoe org public acme.key
  tomoe org crl show acme.crl --org tomoe-org:...`,
	}
	var name, out string
	initCmd := &cobra.Command{
		Use:   "init --name NAME --out FILE",
		Short: "Create an organisation's signing key; print its public key",
		Long: `Create an organisation's signing key in FILE (mode 0600; an existing file is
never overwritten) and print its public key, which nodes put in their config
to trust the organisation. NAME (a-z, 0-9, '-') ends every member's name:
"web1.acme", "alice@sales.acme".

Keep FILE secret and backed up: whoever holds it admits members, and a lost
key cannot revoke them. Revocations are remembered in FILE.state beside it.

  tomoe org init --name acme --out /secure/acme.key`,
		Args: maxArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if name == "" || out == "" {
				return usageError("org init needs --name NAME and --out FILE")
			}
			if err := org.ValidOrgName(name); err != nil {
				return usageError("--name: %v", err)
			}
			s, err := org.Init(name, out)
			if err != nil {
				return failure(err)
			}
			fmt.Fprintln(g.Stdout, s.Public())
			fmt.Fprintf(g.Stderr, "organisation %q: signing key written to %s (mode 0600); keep it secret and backed up.\n", name, out)
			fmt.Fprintf(g.Stderr, "admit a node with: tomoe cert sign --org-key %s --node PUBKEY --name web1.%s --groups GROUP\n", out, name)
			return nil
		},
	}
	initCmd.Flags().StringVar(&name, "name", "", "organisation name: 1-63 of a-z, 0-9 and '-'")
	initCmd.Flags().StringVar(&out, "out", "", "key file to create (mode 0600; refuses to overwrite)")

	public := &cobra.Command{
		Use:   "public [FILE|-]",
		Short: "Print the public key of an organisation key file (stdin without FILE)",
		Long: `Print the public key ("tomoe-org:...") of an organisation key file, or of the
key file on stdin when FILE is missing or "-".

  tomoe org public acme.key
  tomoe org public < acme.key`,
		Args: maxArgs(1, "at most one key file"),
		RunE: func(c *cobra.Command, args []string) error {
			var s *org.Signer
			var err error
			if len(args) == 0 || args[0] == "-" {
				s, err = org.ReadSigner(g.Stdin)
			} else {
				s, err = org.LoadSigner(args[0])
			}
			if err != nil {
				return signerError(err)
			}
			fmt.Fprintln(g.Stdout, s.Public())
			return nil
		},
	}
	pol := &cobra.Command{Use: "policy", Short: "Organisation policy documents: sign (offline), push (to a running node)"}
	pol.AddCommand(newPolicySignCmd(g))
	cmd.AddCommand(pol)
	crl := &cobra.Command{Use: "crl", Short: "Inspect revocation lists ('tomoe cert revoke' makes them)"}
	crl.AddCommand(newCRLShowCmd(g))
	cmd.AddCommand(initCmd, public, crl)
	return cmd
}

func newCertCmd(g *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Sign, inspect and revoke membership certificates (works offline)",
		Long: `A membership certificate says, signed by an organisation, that a node's key
is a named member with groups and IPv4 addresses, until it expires.

  tomoe cert sign --org-key acme.key --node PUBKEY --name web1.acme --groups web > web1.cert
  tomoe cert show web1.cert --org tomoe-org:...
  tomoe cert revoke --org-key acme.key --out acme.crl SERIAL`,
	}
	cmd.AddCommand(newCertSignCmd(g), newCertShowCmd(g), newCertRevokeCmd(g))
	return cmd
}

func newCertSignCmd(g *Env) *cobra.Command {
	var keyFile, node, name, groups, ipv4, ttl, out string
	cmd := &cobra.Command{
		Use:   "sign --org-key FILE --node PUBKEY --name NAME [--groups G1,G2] [--ipv4 A,B] [--ttl 90d] [--out FILE]",
		Short: "Sign a membership certificate for a node",
		Long: `Sign a certificate that makes the node with WireGuard key PUBKEY the member
NAME of the organisation, in the groups and with the IPv4 addresses given,
valid from now for --ttl (Go durations like 12h, or days and weeks: 90d, 2w;
at most 10 years). NAME must end in ".ORG" or "@ORG". The certificate is one
line of text on stdout, or in --out (overwritten, mode 0644: it is public).

  tomoe cert sign --org-key acme.key --node "$(tomoe key public < node.key)" \
      --name alice@sales.acme --groups sales,staff --ttl 30d --out alice.cert`,
		Args: maxArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if keyFile == "" || node == "" || name == "" {
				return usageError("cert sign needs --org-key FILE, --node PUBKEY and --name NAME")
			}
			nk, err := identity.ParsePublicKey(node)
			if err != nil {
				return usageError("--node: %v", err)
			}
			lifetime, err := parseTTL(ttl)
			if err != nil {
				return usageError("--ttl: %v", err)
			}
			req := org.CertRequest{Node: nk, Name: name, TTL: lifetime}
			for _, gr := range splitList(groups) {
				if err := org.ValidGroup(gr); err != nil {
					return usageError("--groups: %v", err)
				}
				req.Groups = append(req.Groups, gr)
			}
			for _, a := range splitList(ipv4) {
				addr, err := netip.ParseAddr(a)
				if err != nil || !addr.Is4() {
					return usageError("--ipv4 %q: expected IPv4 addresses separated by commas, e.g. 100.64.0.10", a)
				}
				req.IPv4 = append(req.IPv4, addr)
			}
			s, err := org.LoadSigner(keyFile)
			if err != nil {
				return signerError(err)
			}
			if err := org.ValidCertName(s.Name(), name); err != nil {
				return usageError("--name: %v", err)
			}
			cert, err := s.SignCert(req, time.Now())
			if err != nil {
				return usageError("%v", err)
			}
			if out != "" {
				if err := os.WriteFile(out, []byte(cert.Text()+"\n"), 0o644); err != nil {
					return failure(fmt.Errorf("write certificate: %w", err))
				}
				fmt.Fprintf(g.Stderr, "certificate for %s (serial %s, until %s) written to %s\n", cert.Name, cert.SerialString(), cert.NotAfter.Format(time.RFC3339), out)
				return nil
			}
			fmt.Fprintln(g.Stdout, cert.Text())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "org-key", "", "organisation key file (from 'tomoe org init')")
	f.StringVar(&node, "node", "", "the node's public key (base64, as 'tomoe key public' prints it)")
	f.StringVar(&name, "name", "", "member name ending in .ORG or @ORG, e.g. web1.acme")
	f.StringVar(&groups, "groups", "", "groups, separated by commas (a-z, 0-9, '.', '_', '-')")
	f.StringVar(&ipv4, "ipv4", "", "overlay IPv4 addresses, separated by commas")
	f.StringVar(&ttl, "ttl", "90d", "lifetime: a Go duration (12h) or days/weeks (90d, 2w)")
	f.StringVar(&out, "out", "", "write the certificate to FILE instead of stdout")
	return cmd
}

// certJSON is `tomoe cert show --json`; its field names are a contract.
type certJSON struct {
	Org         string   `json:"org"`
	OrgName     string   `json:"org_name"`
	Node        string   `json:"node"`
	Address     string   `json:"address"`
	Name        string   `json:"name"`
	Groups      []string `json:"groups"`
	IPv4        []string `json:"ipv4"`
	Serial      string   `json:"serial"`
	NotBefore   string   `json:"not_before"`
	NotAfter    string   `json:"not_after"`
	Fingerprint string   `json:"fingerprint"`
	Status      string   `json:"status"`
	Verified    *bool    `json:"verified,omitempty"`
	Error       string   `json:"error,omitempty"`
}

func newCertShowCmd(g *Env) *cobra.Command {
	var orgKey string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [FILE|-] [--org PUBKEY] [--json]",
		Short: "Show a certificate; with --org, verify it",
		Long: `Show every field of a certificate (from FILE, or stdin when FILE is missing
or "-"). With --org, also verify it against the organisation's public key:
exit status 1 if it was not signed by that organisation, or is expired or
not yet valid (allowing ` + org.ClockSkew.String() + ` of clock skew). Revocation is not checked here.

  tomoe cert show alice.cert --org tomoe-org:...
  tomoe cert show --json < alice.cert`,
		Args: maxArgs(1, "at most one certificate file"),
		RunE: func(c *cobra.Command, args []string) error {
			want, text, err := orgAndInput(g, orgKey, args)
			if err != nil {
				return err
			}
			cert, err := org.ParseCert(text)
			if err != nil {
				return usageError("%v", err)
			}
			now := time.Now()
			fp := cert.Fingerprint()
			j := certJSON{
				Org: cert.Org.String(), OrgName: cert.OrgName, Node: cert.Node.String(),
				Address: cert.Node.Address().String(), Name: cert.Name,
				Groups: append([]string{}, cert.Groups...), IPv4: []string{},
				Serial: cert.SerialString(), NotBefore: cert.NotBefore.Format(time.RFC3339),
				NotAfter: cert.NotAfter.Format(time.RFC3339), Fingerprint: hex.EncodeToString(fp[:]),
				Status: certStatus(cert, now),
			}
			for _, a := range cert.IPv4 {
				j.IPv4 = append(j.IPv4, a.String())
			}
			var verr error
			if orgKey != "" {
				verr = cert.Verify(want, now)
				ok := verr == nil
				j.Verified = &ok
				if verr != nil {
					j.Error = verr.Error()
				}
			}
			if asJSON {
				if err := cmdutil.PrintJSON(g.Stdout, j); err != nil {
					return err
				}
			} else {
				w := g.Stdout
				fmt.Fprintf(w, "org:          %s\n", j.Org)
				fmt.Fprintf(w, "org name:     %s\n", j.OrgName)
				fmt.Fprintf(w, "name:         %s\n", j.Name)
				fmt.Fprintf(w, "node:         %s\n", j.Node)
				fmt.Fprintf(w, "address:      %s\n", j.Address)
				fmt.Fprintf(w, "groups:       %s\n", cmdutil.OrDash(strings.Join(j.Groups, ", ")))
				fmt.Fprintf(w, "ipv4:         %s\n", cmdutil.OrDash(strings.Join(j.IPv4, ", ")))
				fmt.Fprintf(w, "serial:       %s\n", j.Serial)
				fmt.Fprintf(w, "not before:   %s\n", j.NotBefore)
				fmt.Fprintf(w, "not after:    %s\n", j.NotAfter)
				fmt.Fprintf(w, "fingerprint:  %s\n", j.Fingerprint)
				fmt.Fprintf(w, "status:       %s\n", j.Status)
				if orgKey != "" {
					if verr == nil {
						fmt.Fprintf(w, "verified:     yes\n")
					} else {
						fmt.Fprintf(w, "verified:     no: %v\n", verr)
					}
				}
			}
			if verr != nil {
				return silentFailure()
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&orgKey, "org", "", "verify against this organisation public key (tomoe-org:...)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// certStatus is a certificate's validity at now, by its dates alone.
func certStatus(c *org.Cert, now time.Time) string {
	switch {
	case now.Before(c.NotBefore.Add(-org.ClockSkew)):
		return "not yet valid"
	case now.After(c.NotAfter.Add(org.ClockSkew)):
		return "expired"
	}
	return "valid"
}

func newCertRevokeCmd(g *Env) *cobra.Command {
	var keyFile, out string
	cmd := &cobra.Command{
		Use:   "revoke --org-key FILE [--out LIST] (SERIAL | NODEKEY)...",
		Short: "Revoke certificates by serial or node key; print the new revocation list",
		Long: `Sign a new revocation list holding every earlier revocation (remembered in
FILE.state beside the key) and the serials (16 hex digits, as 'tomoe cert
show' prints them) and node keys given. Revoking a node key revokes every
certificate for it. With nothing given, the list is re-signed with a new
version: a refresh for nodes that refuse old lists. The list is one line of
text on stdout, or in --out LIST; give it to the nodes.

  tomoe cert revoke --org-key acme.key --out acme.crl 3f2a9c0d11e4b7a8
  tomoe cert revoke --org-key acme.key --out acme.crl   # refresh`,
		RunE: func(c *cobra.Command, args []string) error {
			if keyFile == "" {
				return usageError("cert revoke needs --org-key FILE")
			}
			var serials []uint64
			var keys []identity.PublicKey
			for _, a := range args {
				if len(strings.TrimSpace(a)) <= 16 {
					v, err := org.ParseSerial(a)
					if err != nil {
						return usageError("%v", err)
					}
					serials = append(serials, v)
					continue
				}
				k, err := identity.ParsePublicKey(a)
				if err != nil {
					return usageError("%q: neither a serial (16 hex digits) nor a node key: %v", a, err)
				}
				keys = append(keys, k)
			}
			s, err := org.LoadSigner(keyFile)
			if err != nil {
				return signerError(err)
			}
			l, err := s.Revoke(serials, keys, time.Now())
			if err != nil {
				return failure(err)
			}
			if out != "" {
				if err := os.WriteFile(out, []byte(l.Text()+"\n"), 0o644); err != nil {
					return failure(fmt.Errorf("write revocation list: %w", err))
				}
			} else {
				fmt.Fprintln(g.Stdout, l.Text())
			}
			fmt.Fprintf(g.Stderr, "revocation list version %d: %d serials, %d node keys revoked%s\n", l.Version, len(l.Serials), len(l.Keys), inFile(out))
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "org-key", "", "organisation key file (from 'tomoe org init')")
	cmd.Flags().StringVar(&out, "out", "", "write the list to LIST instead of stdout")
	return cmd
}

func inFile(p string) string {
	if p == "" {
		return ""
	}
	return "; written to " + p
}

// crlJSON is `tomoe org crl show --json`.
type crlJSON struct {
	Org      string   `json:"org"`
	Version  uint64   `json:"version"`
	Issued   string   `json:"issued"`
	Serials  []string `json:"serials"`
	Keys     []string `json:"keys"`
	Verified *bool    `json:"verified,omitempty"`
	Error    string   `json:"error,omitempty"`
}

func newCRLShowCmd(g *Env) *cobra.Command {
	var orgKey string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [FILE|-] [--org PUBKEY] [--json]",
		Short: "Show a revocation list; with --org, verify it",
		Long: `Show a revocation list (from FILE, or stdin when FILE is missing or "-"):
version, issue time and every revoked serial and node key. With --org, also
verify its signature: exit status 1 if that organisation did not sign it.

  tomoe org crl show acme.crl --org tomoe-org:...`,
		Args: maxArgs(1, "at most one list file"),
		RunE: func(c *cobra.Command, args []string) error {
			want, text, err := orgAndInput(g, orgKey, args)
			if err != nil {
				return err
			}
			l, err := org.ParseCRL(text)
			if err != nil {
				return usageError("%v", err)
			}
			j := crlJSON{Org: l.Org.String(), Version: l.Version, Issued: l.Issued.Format(time.RFC3339), Serials: []string{}, Keys: []string{}}
			for _, v := range l.Serials {
				j.Serials = append(j.Serials, fmt.Sprintf("%016x", v))
			}
			for _, k := range l.Keys {
				j.Keys = append(j.Keys, k.String())
			}
			var verr error
			if orgKey != "" {
				verr = l.Verify(want)
				ok := verr == nil
				j.Verified = &ok
				if verr != nil {
					j.Error = verr.Error()
				}
			}
			if asJSON {
				if err := cmdutil.PrintJSON(g.Stdout, j); err != nil {
					return err
				}
			} else {
				w := g.Stdout
				fmt.Fprintf(w, "org:       %s\n", j.Org)
				fmt.Fprintf(w, "version:   %d\n", j.Version)
				fmt.Fprintf(w, "issued:    %s\n", j.Issued)
				fmt.Fprintf(w, "revoked:   %d serials, %d node keys\n", len(j.Serials), len(j.Keys))
				for _, s := range j.Serials {
					fmt.Fprintf(w, "  serial   %s\n", s)
				}
				for _, k := range j.Keys {
					fmt.Fprintf(w, "  key      %s\n", k)
				}
				if orgKey != "" {
					if verr == nil {
						fmt.Fprintf(w, "verified:  yes\n")
					} else {
						fmt.Fprintf(w, "verified:  no: %v\n", verr)
					}
				}
			}
			if verr != nil {
				return silentFailure()
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&orgKey, "org", "", "verify against this organisation public key (tomoe-org:...)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// signerError maps a key file error to an exit status: a file that cannot
// be read fails (1), a malformed one is bad input (2).
func signerError(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return failure(err)
	}
	return usageError("%v", err)
}

// readInput reads the file named by args[0], or stdin when there is none
// or it is "-".
// orgAndInput parses --org (zero when unset) and reads the input, for the
// show commands.
func orgAndInput(g *Env, orgKey string, args []string) (org.PublicKey, string, error) {
	var want org.PublicKey
	if orgKey != "" {
		k, err := org.ParsePublicKey(orgKey)
		if err != nil {
			return want, "", usageError("--org: %v", err)
		}
		want = k
	}
	text, err := readInput(g, args)
	return want, text, err
}

func readInput(g *Env, args []string) (string, error) {
	var r io.Reader = g.Stdin
	name := "stdin"
	if len(args) == 1 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return "", failure(err)
		}
		defer f.Close()
		r, name = f, args[0]
	}
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return "", failure(fmt.Errorf("read %s: %w", name, err))
	}
	if len(b) > maxInput {
		return "", usageError("%s: over %d bytes: not a certificate or revocation list", name, maxInput)
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", usageError("%s is empty: give a file or pipe the text in", name)
	}
	return string(b), nil
}

// parseTTL parses a Go duration or a whole number of days ("90d") or
// weeks ("2w").
func parseTTL(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseUint(n, 10, 32)
			if err != nil || v == 0 {
				return 0, fmt.Errorf("%q: expected a positive whole number before %q, e.g. 90d or 2w", s, suffix)
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: expected a positive duration: 12h, 90d or 2w", s)
	}
	return d, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func maxArgs(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) > n {
			return usageError("%s takes %s, got %q", c.CommandPath(), names, args)
		}
		return nil
	}
}
