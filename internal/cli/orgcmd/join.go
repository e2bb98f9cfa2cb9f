package orgcmd

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
)

// Enrolment by request, through the running node: `tomoe org join` on
// the new node; `tomoe org requests`, `approve` and `reject` where the
// organisation's key file is (they sign, then hand what they signed to
// the local node, which forwards it to its bridges).

func joinCmds(g *Env) []*cobra.Command {
	return []*cobra.Command{joinCmd(g), requestsCmd(g), approveCmd(g), rejectCmd(g)}
}

func joinCmd(g *Env) *cobra.Command {
	var orgKey, name, groups, bridge string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "join --org ORGPUBKEY --name NAME [--groups G1,G2] [--bridge PUBKEY] [--json]",
		Short: "Ask to join an organisation: leave a request at this node's bridges",
		Long: `Ask to join an organisation: the running node leaves a request (its own key,
the name and groups asked for) at the bridges it is registered with (or the
one named), and sends it again each time it registers, until the
organisation's key holder approves it ('tomoe org approve') or seven days
pass. The certificate comes back through a bridge; the node installs it once
it verifies against ORGPUBKEY, and is a member at once and after restarts.
A new request for the same organisation replaces the earlier one.

  tomoe org join --org tomoe-org:... --name web1.acme --groups web`,
		Args: maxArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if orgKey == "" || name == "" {
				return usageError("org join needs --org ORGPUBKEY and --name NAME")
			}
			k, err := org.ParsePublicKey(orgKey)
			if err != nil {
				return usageError("--org: %v", err)
			}
			req := adminapi.OrgJoinRequest{Org: k.String(), Name: name, Groups: splitList(groups)}
			if req.Groups == nil {
				req.Groups = []string{}
			}
			if bridge != "" {
				b, err := identity.ParsePublicKey(bridge)
				if err != nil {
					return usageError("--bridge: %v", err)
				}
				req.Bridge = b.String()
			}
			res, err := g.Client().OrgJoin(context.Background(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.Stdout, res)
			}
			held := printAnswers(g.Stdout, res.Bridges)
			fmt.Fprintf(g.Stdout, "asked to join %s as %s (groups %s), request of %s\n", res.Org, res.Name, orNone(res.Groups), res.Requested)
			if held == 0 {
				fmt.Fprintln(g.Stderr, "no bridge holds the request yet; the node sends it again each time it registers and every minute ('tomoe org status' shows where it stands)")
				return silentFailure()
			}
			fmt.Fprintf(g.Stderr, "next: tell the organisation's key holder this node's key, %s (by a channel you trust:\nthe request names this key, and anyone can ask under any name); the key holder runs\n  tomoe org requests --org-key ORGKEY\n  tomoe org approve --org-key ORGKEY %s\n", res.Node, res.Node)
			fmt.Fprintln(g.Stderr, "this node installs the certificate when it arrives ('tomoe org status', 'tomoe events')")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&orgKey, "org", "", "the organisation's public key (tomoe-org:..., from 'tomoe org public')")
	f.StringVar(&name, "name", "", "the name asked for, ending in .ORG or @ORG, e.g. web1.acme")
	f.StringVar(&groups, "groups", "", "groups asked for, separated by commas")
	f.StringVar(&bridge, "bridge", "", "leave the request at this bridge only (its public key)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printAnswers prints one line per bridge and returns how many bridges
// hold or took what was sent.
func printAnswers(w io.Writer, answers []adminapi.OrgBridgeAnswer) int {
	ok := 0
	for _, a := range answers {
		switch a.State {
		case "held", "delivered", "kept", "removed", "answered":
			ok++
		}
		line := fmt.Sprintf("bridge %s: %s", a.Bridge, a.State)
		if a.Error != "" {
			line += ": " + a.Error
		}
		fmt.Fprintln(w, line)
	}
	return ok
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// signQuery loads the key file and signs a query for the local node to
// forward (the bridges answer only the node the query names).
func signQuery(g *Env, keyFile string, op org.JoinOp, node identity.PublicKey) (*org.Signer, *org.JoinQuery, error) {
	s, err := org.LoadSigner(keyFile)
	if err != nil {
		return nil, nil, signerError(err)
	}
	st, err := g.Client().Status(context.Background())
	if err != nil {
		return nil, nil, err
	}
	via, err := identity.ParsePublicKey(st.PublicKey)
	if err != nil {
		return nil, nil, failure(fmt.Errorf("the node's status: public key: %w", err))
	}
	q, err := s.SignJoinQuery(op, via, node, time.Now())
	if err != nil {
		return nil, nil, failure(err)
	}
	return s, q, nil
}

func listRequests(g *Env, keyFile string) (*org.Signer, adminapi.OrgRequestsResponse, error) {
	s, q, err := signQuery(g, keyFile, org.JoinList, identity.PublicKey{})
	if err != nil {
		return nil, adminapi.OrgRequestsResponse{}, err
	}
	res, err := g.Client().OrgRequests(context.Background(), adminapi.OrgQueryRequest{Query: q.Text()})
	return s, res, err
}

func requestsCmd(g *Env) *cobra.Command {
	var keyFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "requests --org-key FILE [--json]",
		Short: "List the requests to join the organisation that the bridges hold",
		Long: `List the requests to join the organisation that the running node's bridges
hold. Only the key holder can: the list is asked with a query signed by the
organisation's key (for this node to forward, valid for five minutes, taken
once). Bridges that do not answer within 3 s are named.

  tomoe org requests --org-key acme.key`,
		Args: maxArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if keyFile == "" {
				return usageError("org requests needs --org-key FILE")
			}
			_, res, err := listRequests(g, keyFile)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.Stdout, res)
			}
			for _, r := range res.Requests {
				fmt.Fprintf(g.Stdout, "%s  %s  groups %s  %s since %s  (%d bridges)\n", r.Node, r.Name, orNone(r.Groups), r.State, r.Requested, len(r.Bridges))
			}
			if len(res.Requests) == 0 {
				fmt.Fprintln(g.Stdout, "no requests")
			}
			answered := 0
			for _, a := range res.Bridges {
				if a.State != "answered" {
					fmt.Fprintf(g.Stderr, "bridge %s: %s: %s\n", a.Bridge, a.State, a.Error)
				} else {
					answered++
				}
			}
			if answered == 0 {
				return silentFailure()
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "org-key", "", "organisation key file (from 'tomoe org init')")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func approveCmd(g *Env) *cobra.Command {
	var keyFile, name, groups, ttl string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "approve --org-key FILE NODEKEY [--name NAME] [--groups G1,G2] [--ttl 90d] [--json]",
		Short: "Approve a request to join: sign the node's certificate and send it through the bridges",
		Long: `Approve a node's request to join: sign its certificate (as 'tomoe cert sign'
does; the name and groups are those of the request unless given) and hand it
to the running node, which sends it to its bridges; a bridge passes it on to
the node at once, or keeps it until the node is back.

  tomoe org approve --org-key acme.key Tc6x...=
  tomoe org approve --org-key acme.key Tc6x...= --name web2.acme --groups web --ttl 30d`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if keyFile == "" {
				return usageError("org approve needs --org-key FILE")
			}
			nk, err := identity.ParsePublicKey(args[0])
			if err != nil {
				return usageError("NODEKEY: %v", err)
			}
			lifetime, err := parseTTL(ttl)
			if err != nil {
				return usageError("--ttl: %v", err)
			}
			var s *org.Signer
			req := org.CertRequest{Node: nk, Name: name, Groups: splitList(groups), TTL: lifetime}
			if name == "" || !c.Flags().Changed("groups") {
				// Name and groups from the request.
				var res adminapi.OrgRequestsResponse
				s, res, err = listRequests(g, keyFile)
				if err != nil {
					return err
				}
				found := false
				for _, r := range res.Requests {
					if r.Node == nk.String() {
						found = true
						if name == "" {
							req.Name = r.Name
						}
						if !c.Flags().Changed("groups") {
							req.Groups = r.Groups
						}
					}
				}
				if !found {
					for _, a := range res.Bridges {
						if a.State != "answered" {
							fmt.Fprintf(g.Stderr, "bridge %s: %s: %s\n", a.Bridge, a.State, a.Error)
						}
					}
					return failure(fmt.Errorf("no bridge holds a request from %s: give --name (and --groups) to approve it anyway, or see 'tomoe org requests'", nk))
				}
			} else if s, err = org.LoadSigner(keyFile); err != nil {
				return signerError(err)
			}
			for _, gr := range req.Groups {
				if err := org.ValidGroup(gr); err != nil {
					return usageError("--groups: %v", err)
				}
			}
			if err := org.ValidCertName(s.Name(), req.Name); err != nil {
				return usageError("--name: %v", err)
			}
			cert, err := s.SignCert(req, time.Now())
			if err != nil {
				return usageError("%v", err)
			}
			res, err := g.Client().OrgApprove(context.Background(), adminapi.OrgApproveRequest{Cert: cert.Text()})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.Stdout, res)
			}
			fmt.Fprintf(g.Stdout, "certificate for %s as %s (groups %s, serial %s, until %s)\n", nk, cert.Name, orNone(cert.Groups), cert.SerialString(), cert.NotAfter.Format(time.RFC3339))
			if printAnswers(g.Stdout, res.Bridges) == 0 {
				fmt.Fprintf(g.Stderr, "no bridge took it; it is also here to hand over another way:\n%s\n", cert.Text())
				return silentFailure()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "org-key", "", "organisation key file (from 'tomoe org init')")
	f.StringVar(&name, "name", "", "member name (default: the one requested)")
	f.StringVar(&groups, "groups", "", "groups, separated by commas (default: those requested)")
	f.StringVar(&ttl, "ttl", "90d", "lifetime: a Go duration (12h) or days/weeks (90d, 2w)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func rejectCmd(g *Env) *cobra.Command {
	var keyFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "reject --org-key FILE NODEKEY [--json]",
		Short: "Reject a request to join: the bridges drop it",
		Long: `Reject a node's request to join, with a query signed by the organisation's
key: the bridges drop it, and answer the node's later sending of the same
request with "rejected" (a new request from it shows up again).

  tomoe org reject --org-key acme.key Tc6x...=`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if keyFile == "" {
				return usageError("org reject needs --org-key FILE")
			}
			nk, err := identity.ParsePublicKey(args[0])
			if err != nil {
				return usageError("NODEKEY: %v", err)
			}
			_, q, err := signQuery(g, keyFile, org.JoinReject, nk)
			if err != nil {
				return err
			}
			res, err := g.Client().OrgReject(context.Background(), adminapi.OrgQueryRequest{Query: q.Text()})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.Stdout, res)
			}
			if printAnswers(g.Stdout, res.Bridges) == 0 {
				return silentFailure()
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "org-key", "", "organisation key file (from 'tomoe org init')")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
