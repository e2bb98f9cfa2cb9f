// Package devicecmd is `tomoe device`: plain WireGuard devices (the
// WireGuard apps of phones and tablets, wg-quick) this node hosts as their
// home node.
package devicecmd

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/skip2/go-qrcode"
	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
)

// Env is what the commands get from package cli (cmdutil.Env).
type Env = cmdutil.Env

// Command returns `tomoe device`.
func Command(e Env) *cobra.Command {
	var asJSON bool
	list := func(c *cobra.Command, _ []string) error {
		d, err := e.Client().Devices(c.Context())
		if err != nil {
			return err
		}
		if asJSON {
			return cmdutil.PrintJSON(e.Stdout, d)
		}
		printDevices(e.Stdout, d)
		return nil
	}
	cmd := &cobra.Command{
		Use:   "device [--json]",
		Short: "Plain WireGuard devices (phones, tablets, wg-quick) this node hosts",
		Long: `A device that cannot run tomoe joins the overlay through a home node with
the official WireGuard app: ` + "`tomoe device add NAME`" + ` on the home node makes the
device's key and prints its wg-quick configuration (--qr: a QR code for the
mobile apps). The device's address is derived from its key like every node's;
rules anywhere name its key or address. The home node forwards between the
device and the overlay with the device's own address as source, and guards
it: traffic to the device needs a rule on the home node whose "to" names
the device (its key or address, e.g. tomoe policy allow NODE --proto tcp
--ports 22 --to DEVICE-KEY); replies to what the device opened pass. Another node accepts the device's traffic only if its config lists the
device on the home node's peer entry: devices = ["DEVICE KEY"].

Without a subcommand, lists the devices.`,
		Args: e.NoArgs,
		RunE: list,
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var listJSON bool
	ls := &cobra.Command{Use: "list [--json]", Short: "List the devices this node hosts", Args: e.NoArgs,
		RunE: func(c *cobra.Command, args []string) error { asJSON = listJSON; return list(c, args) }}
	ls.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	var qr, addJSON bool
	var endpoint string
	add := &cobra.Command{
		Use:   "add NAME [--endpoint HOST:PORT] [--qr] [--json]",
		Short: "Make a device's key and print its wg-quick configuration (the only copy of its private key)",
		Long: `Make a key for a new device, host it here, and print its wg-quick
configuration on standard output: import it into the WireGuard app (or scan
the QR code that --qr prints), or use it with wg-quick. This node keeps only
the public key: the output is the only copy of the private key.

The endpoint is where the device reaches this node: --endpoint, else the
address a bridge observed for this node, else its only host address with
listen.udp's port.`,
		Args: e.ExactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := e.Client().AddDevice(c.Context(), adminapi.DeviceAddRequest{Name: args[0], Endpoint: endpoint})
			if err != nil {
				return err
			}
			if addJSON {
				return cmdutil.PrintJSON(e.Stdout, r)
			}
			if qr {
				q, err := qrcode.New(r.Config, qrcode.Medium)
				if err != nil {
					return cmdutil.Failure(fmt.Errorf("QR code: %w", err))
				}
				fmt.Fprint(e.Stdout, q.ToSmallString(false))
			} else {
				fmt.Fprint(e.Stdout, r.Config)
			}
			fmt.Fprintf(e.Stderr, "device %s added, address %s. Other nodes accept it from this node with\n  %s\n", r.Device.Name, r.Device.Address, r.Peers)
			return nil
		},
	}
	add.Flags().BoolVar(&qr, "qr", false, "print the configuration as a QR code for the mobile apps")
	add.Flags().BoolVar(&addJSON, "json", false, "print JSON (the configuration is its \"config\")")
	add.Flags().StringVar(&endpoint, "endpoint", "", "HOST:PORT where the device reaches this node")

	var rmJSON bool
	rm := &cobra.Command{
		Use:   "remove NAME|KEY|ADDRESS [--json]",
		Short: "Stop hosting a device: its session ends at once",
		Args:  e.ExactArgs(1, "a device's name, public key or address"),
		RunE: func(c *cobra.Command, args []string) error {
			d, err := e.Client().RemoveDevice(c.Context(), adminapi.DeviceRemoveRequest{Device: args[0]})
			if err != nil {
				return err
			}
			if rmJSON {
				return cmdutil.PrintJSON(e.Stdout, d)
			}
			fmt.Fprintf(e.Stdout, "device %s removed (%s)\n", d.Name, d.Address)
			return nil
		},
	}
	rm.Flags().BoolVar(&rmJSON, "json", false, "print JSON")
	cmd.AddCommand(ls, add, rm)
	return cmd
}

func printDevices(w io.Writer, list []adminapi.Device) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tPUBLIC KEY\tUP\tLAST HANDSHAKE\tENDPOINT\tRX\tTX")
	for _, d := range list {
		hs, ep := "-", "-"
		if d.LastHandshake != nil {
			hs = *d.LastHandshake
		}
		if d.Endpoint != nil {
			ep = *d.Endpoint
		}
		up := "no"
		if d.Up {
			up = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", d.Name, d.Address, d.PublicKey, up, hs, ep, d.RxBytes, d.TxBytes)
	}
	tw.Flush()
}
