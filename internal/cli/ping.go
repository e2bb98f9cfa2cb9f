package cli

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
)

func newPingCmd(g *globals) *cobra.Command {
	var (
		count    int
		interval time.Duration
		timeout  time.Duration
		size     int
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "ping ADDR [-c N] [-i DURATION] [-W DURATION] [-s BYTES]",
		Short: "Ping an overlay address through the node (kernel and userspace mode)",
		Long: `Send ICMPv6 echo requests from the node's own address to ADDR through the
overlay and report the round-trip times. The node sends them itself, so this
works in userspace mode too. Exit status 0 if any reply came, 1 if none.`,
		Args: exactArgs(1, "ADDR: an overlay address (fc..)"),
		RunE: func(c *cobra.Command, args []string) error {
			addr, err := netip.ParseAddr(strings.Trim(args[0], "[]"))
			if err != nil || (!identity.IsNodeAddress(addr) && !identity.IsSiteAddress(addr)) {
				return usageError("%q is not an overlay address (fc00::/8, or a site address in 0300::/8)", args[0])
			}
			if count < 0 || interval <= 0 || timeout <= 0 || timeout > time.Minute {
				return usageError("-c must be >= 0, -i > 0, and -W in (0, 1m]")
			}
			cl := g.client()
			var rtts []float64
			sent := 0
			for i := 1; count == 0 || i <= count; i++ {
				if i > 1 {
					select {
					case <-c.Context().Done():
					case <-time.After(interval):
					}
				}
				if c.Context().Err() != nil {
					break
				}
				resp, err := cl.Ping(c.Context(), adminapi.PingRequest{Address: addr.String(), Size: size, TimeoutMs: int(timeout / time.Millisecond)})
				if c.Context().Err() != nil {
					break
				}
				if err != nil {
					return err
				}
				sent++
				if asJSON {
					b, _ := json.Marshal(struct {
						Seq int `json:"seq"`
						adminapi.PingResponse
					}{i, resp})
					fmt.Fprintln(g.stdout, string(b))
				} else if resp.Error != "" {
					fmt.Fprintf(g.stdout, "seq=%d %s: %s\n", i, addr, resp.Error)
				} else {
					fmt.Fprintf(g.stdout, "%d bytes from %s: seq=%d time=%.3f ms\n", size+8, addr, i, resp.RTTMs)
				}
				if resp.Error == "" {
					rtts = append(rtts, resp.RTTMs)
				}
			}
			if !asJSON && sent > 0 {
				loss := 100 * float64(sent-len(rtts)) / float64(sent)
				fmt.Fprintf(g.stdout, "--- %s ping statistics ---\n%d sent, %d received, %.0f%% loss", addr, sent, len(rtts), loss)
				if len(rtts) > 0 {
					lo, hi, sum := math.Inf(1), 0.0, 0.0
					for _, r := range rtts {
						lo, hi, sum = math.Min(lo, r), math.Max(hi, r), sum+r
					}
					fmt.Fprintf(g.stdout, ", rtt min/avg/max = %.3f/%.3f/%.3f ms", lo, sum/float64(len(rtts)), hi)
				}
				fmt.Fprintln(g.stdout)
			}
			if len(rtts) == 0 {
				return silentFailure{}
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&count, "count", "c", 4, "number of pings (0: until interrupted)")
	cmd.Flags().DurationVarP(&interval, "interval", "i", time.Second, "time between pings")
	cmd.Flags().DurationVarP(&timeout, "timeout", "W", 3*time.Second, "time to wait for each reply")
	cmd.Flags().IntVarP(&size, "size", "s", 56, "payload bytes")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per ping")
	return cmd
}
