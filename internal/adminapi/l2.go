package adminapi

import (
	"context"
	"net/http"
)

// L2 is GET /v1/l2: the virtual Ethernet segments this node takes part in.
type L2 struct {
	Segments []L2Segment `json:"segments"`
}

// L2Segment is one segment.
type L2Segment struct {
	Name      string `json:"name"`
	Interface string `json:"interface"` // the Linux bridge
	// Hub: this node forwards between its tunnels (it is the segment's hub).
	Hub     bool   `json:"hub"`
	Attach  string `json:"attach,omitempty"`
	MTU     int    `json:"mtu"`
	MaxMACs int    `json:"max_macs"` // the bound on the MAC table
	MACs    int    `json:"macs"`     // learned, on every port
	// Members are this node's tunnels: every other member, the members
	// (on the hub) or the hub.
	Members        []L2Member  `json:"members"`
	AttachMACs     int         `json:"attach_macs,omitempty"`
	AttachCounters *L2Counters `json:"attach_counters,omitempty"`
	// BroadcastLimit is the broadcast and multicast frames a second each
	// port may send into the segment.
	BroadcastLimit int `json:"broadcast_limit"`
	// STP: the bridge runs the spanning tree (it has an attached port).
	// AttachState and OverlayState are the STP states of the attached
	// port and of this node's way into the overlay: "forwarding",
	// "blocking" (it would close a loop), "listening", "learning".
	STP          bool   `json:"stp,omitempty"`
	AttachState  string `json:"attach_state,omitempty"`
	OverlayState string `json:"overlay_state,omitempty"`
	// CertMembers are the members named by certificate (group:, org:,
	// name:), each with the node addresses it matched: the nodes whose
	// valid certificate this node holds.
	CertMembers []L2CertMember `json:"cert_members,omitempty"`
	// LeftOut counts members left without a tunnel: a segment has at
	// most MaxTunnels.
	LeftOut    int `json:"left_out,omitempty"`
	MaxTunnels int `json:"max_tunnels"`
}

// L2CertMember is a member entry naming nodes by certificate, and the
// nodes it matched.
type L2CertMember struct {
	Member  string   `json:"member"`
	Matched []string `json:"matched"`
}

// L2Member is one tunnel of a segment.
type L2Member struct {
	Address  string     `json:"address"`
	Device   string     `json:"device"`
	VNI      uint32     `json:"vni"`
	Up       bool       `json:"up"`   // the overlay has a live session with it
	MACs     int        `json:"macs"` // learned behind it
	Counters L2Counters `json:"counters"`
	// MatchedBy are the member entries that name it: its key or address,
	// group:, org:, name:, or "hub KEY" (on a member, its one tunnel).
	MatchedBy []string `json:"matched_by,omitempty"`
	// CertNames are its certificate names, when a certificate entry
	// matched it.
	CertNames []string `json:"cert_names,omitempty"`
}

// L2Counters are a port's frame counters: rx came from it into the
// segment, tx went out of it.
type L2Counters struct {
	RxFrames  uint64 `json:"rx_frames"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxFrames  uint64 `json:"tx_frames"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxDropped uint64 `json:"rx_dropped"`
	TxDropped uint64 `json:"tx_dropped"`
}

// L2 is GET /v1/l2.
func (c *Client) L2(ctx context.Context) (L2, error) {
	var out L2
	err := c.do(ctx, http.MethodGet, "/v1/l2", nil, &out)
	return out, err
}

// L2Change is POST /v1/l2/change: add or remove a member of a segment.
// Changes persist across restarts (services.json beside the key file),
// over the config file's members.
type L2Change struct {
	Segment string `json:"segment"`
	Op      string `json:"op"`     // L2Add or L2Remove
	Member  string `json:"member"` // public key, node address, group:, org: or name:
}

// L2Change operations.
const (
	L2Add    = "add"
	L2Remove = "remove"
)

// ChangeL2 is POST /v1/l2/change.
func (c *Client) ChangeL2(ctx context.Context, req L2Change) (L2, error) {
	var out L2
	err := c.do(ctx, http.MethodPost, "/v1/l2/change", req, &out)
	return out, err
}
