// Package adminapi owns the node's local admin API: HTTP with JSON bodies
// over a Unix socket that only the node's user (and root, and an optional
// admin group) may use, a server-sent-event stream of changes, and
// Prometheus metrics. It defines the request and response types, the
// server (which serves a Backend the node implements) and the client the
// CLI uses. The JSON field names are a contract: scripts read them.
package adminapi

// Status is GET /v1/status.
type Status struct {
	PublicKey  string `json:"public_key"`
	Address    string `json:"address"`
	SitePrefix string `json:"site_prefix"`
	// IPv4 is the node's overlay IPv4 address (tun.ipv4, derived from
	// the key with "auto"), if it has one.
	IPv4       string `json:"ipv4,omitempty"`
	Mode       string `json:"mode"`      // "kernel" or "userspace"
	Interface  string `json:"interface"` // TUN name; "" in userspace mode
	MTU        int    `json:"mtu"`
	ListenPort int    `json:"listen_port"`
	Version    string `json:"version"`
	StartedAt  string `json:"started_at"` // RFC 3339
	PeerCount  int    `json:"peer_count"`
	Peers      []Peer `json:"peers"`
	// Orgs are the organisations this node trusts ([[orgs]]).
	Orgs     []OrgStatus `json:"orgs"`
	Counters Counters    `json:"counters"`
	// Bridges are the bridges this node joins ([[bridges]]), with their state.
	Bridges []Bridge `json:"bridges"`
	// BridgeRole is set when this node is a bridge.
	BridgeRole *BridgeRole `json:"bridge_role,omitempty"`
	// DNS is the address (port 53) where the node answers DNS for the
	// overlay's names under .tomoe (kernel mode); "" when it does not.
	DNS string `json:"dns,omitempty"`
	// DNSResolved: DNS is registered with systemd-resolved as the
	// server for ~tomoe on Interface.
	DNSResolved bool `json:"dns_resolved,omitempty"`
	// RunsAs is the user and capabilities the node runs with (Linux):
	// what `tomoe up` kept after giving root up (run.user), or what it
	// was started with. Absent where it cannot be told.
	RunsAs *RunsAs `json:"runs_as,omitempty"`
}

// RunsAs is the node process's user and capabilities, in GET /v1/status.
type RunsAs struct {
	UID  int    `json:"uid"`
	User string `json:"user,omitempty"`
	GID  int    `json:"gid"`
	// Caps are the effective capabilities ("cap_net_admin", ...).
	Caps       []string `json:"caps"`
	NoNewPrivs bool     `json:"no_new_privs"`
}

// Bridge is one bridge this node joins, in GET /v1/status.
type Bridge struct {
	Endpoint  string `json:"endpoint"`
	PublicKey string `json:"public_key"`
	// State: starting, registering, registered, refused or unreachable.
	State string `json:"state"`
	// Transport is "udp" or "tcp" once registered.
	Transport string `json:"transport"`
	// Observed is this node's address as the bridge sees it.
	Observed string `json:"observed_endpoint,omitempty"`
	// LastRegistered is RFC 3339, or null before the first registration.
	LastRegistered *string `json:"last_registered"`
	Error          string  `json:"error,omitempty"`
}

// BridgeRole summarises this node's bridge role in GET /v1/status.
type BridgeRole struct {
	Nodes        int    `json:"nodes"` // registered now
	TCP          string `json:"tcp,omitempty"`
	RelayedBytes uint64 `json:"relayed_bytes"`
}

// BridgeNode is one item of GET /v1/bridge/nodes.
type BridgeNode struct {
	PublicKey      string   `json:"public_key"`
	Address        string   `json:"address"`
	Endpoint       string   `json:"endpoint"`  // observed "ip:port"
	Transport      string   `json:"transport"` // udp or tcp
	LocalEndpoints []string `json:"local_endpoints"`
	LastSeen       string   `json:"last_seen"` // RFC 3339
	RelayedBytes   uint64   `json:"relayed_bytes"`
	RelayID        uint32   `json:"relay_id"`
}

// TokenRequest is the body of POST /v1/bridge/tokens.
type TokenRequest struct {
	Uses int `json:"uses"` // how many nodes may join with it (at least 1)
	// TTL is a Go duration ("24h"); empty: 24h.
	TTL string `json:"ttl"`
}

// TokenResponse returns a new join token. The token itself is shown only
// here: the bridge keeps its hash.
type TokenResponse struct {
	Token   string `json:"token"`
	ID      string `json:"id"`
	Uses    int    `json:"uses"`
	Expires string `json:"expires"` // RFC 3339
}

// BridgeRevokeRequest is the body of POST /v1/bridge/revoke.
type BridgeRevokeRequest struct {
	PublicKey string `json:"public_key"`
}

// BridgeRevokeResponse reports what a bridge revocation did.
type BridgeRevokeResponse struct {
	PublicKey string `json:"public_key"`
	// WasRegistered: the node was registered and has been cut off.
	WasRegistered bool `json:"was_registered"`
}

// Counters are node-wide packet counts.
type Counters struct {
	TxPackets       uint64 `json:"tx_packets"`       // sent into the overlay
	RxPackets       uint64 `json:"rx_packets"`       // delivered from the overlay
	Denied          uint64 `json:"denied"`           // inbound, no rule and no flow
	Spoofed         uint64 `json:"spoofed"`          // outbound with a foreign source
	NotLocal        uint64 `json:"not_local"`        // inbound for an address not ours
	Malformed       uint64 `json:"malformed"`        // not parsable
	Held            uint64 `json:"held"`             // waited for a peer to be resolved
	Unreachable     uint64 `json:"unreachable"`      // ICMP errors given to local programs
	Hairpinned      uint64 `json:"hairpinned"`       // forwarded between a hosted device and the overlay
	HandshakeDenied uint64 `json:"handshake_denied"` // initiations from keys no rule allows
	Flows           int    `json:"flows"`            // tracked flows this node opened
	// Handshake initiations over a rate limit (per source, or the
	// node-wide budget for sources that are no peer's), refused as
	// replays, and cookie replies sent while under load.
	HandshakeLimited  uint64 `json:"handshake_limited"`
	HandshakeReplayed uint64 `json:"handshake_replayed"`
	HandshakeCookies  uint64 `json:"handshake_cookies"`
	// ControlMalformed counts route-offer datagrams from peers that did
	// not decode.
	ControlMalformed uint64 `json:"control_malformed"`
	// RemoteFlows are the tracked UDP (and other connectionless) flows
	// that peers opened and a rule admitted; they let nothing in by
	// themselves.
	RemoteFlows int `json:"remote_flows"`
	// TableFull counts packets that would have opened a flow while the
	// connection table was full.
	TableFull uint64 `json:"table_full"`
	// FlowQuota counts inbound packets a rule admitted that would have
	// opened a flow past their peer's quota (or past the share of the
	// table that all peers' flows may take).
	FlowQuota uint64 `json:"flow_quota"`
}

// Peer is one item of GET /v1/peers.
type Peer struct {
	PublicKey  string  `json:"public_key"`
	Address    string  `json:"address"`
	SitePrefix *string `json:"site_prefix"` // null when the site prefix is not routed to this peer
	Name       string  `json:"name,omitempty"`
	// Endpoint is the underlay "ip:port" packets go to, or null if unknown.
	Endpoint *string `json:"endpoint"`
	// Path is "direct", or "relay" when packets go through a bridge.
	Path string `json:"path"`
	// Bridge is the bridge relaying ("ip:port/udp" or "/tcp") when Path is
	// "relay", else null.
	Bridge *string `json:"bridge"`
	// LastHandshake is RFC 3339, or null if there has been none.
	LastHandshake *string `json:"last_handshake"`
	RxBytes       uint64  `json:"rx_bytes"`
	TxBytes       uint64  `json:"tx_bytes"`
	// Static is true for peers from the config file.
	Static bool `json:"static"`
	// Active is true while the peer is configured in the WireGuard device.
	Active bool `json:"active"`
	// Up is true while a session established by a handshake is valid.
	Up bool `json:"up"`
	// AllowedInbound is true if some rule lets the peer open connections here.
	AllowedInbound bool `json:"allowed_inbound"`
	// DeniedPackets counts the peer's inbound packets the filter dropped:
	// denied by the policy, for an address this node does not own, or
	// refused by the connection table (table_full, flow_quota).
	DeniedPackets       uint64 `json:"denied_packets"`
	PersistentKeepalive int    `json:"persistent_keepalive"`
	// CertName is the name in the peer's first verified certificate (by
	// organisation name), Groups every group it holds as "ORG/GROUP";
	// Memberships has each certificate. Empty when it presented none.
	CertName    string       `json:"cert_name,omitempty"`
	Groups      []string     `json:"groups,omitempty"`
	Memberships []Membership `json:"memberships,omitempty"`
}

// Membership is one verified certificate of a peer.
type Membership struct {
	Org     string   `json:"org"`
	Name    string   `json:"name"`
	Groups  []string `json:"groups"`
	Serial  string   `json:"serial"`
	Expires string   `json:"expires"` // RFC 3339
}

// Rule is one allow or deny rule in GET /v1/policy.
type Rule struct {
	Action  string  `json:"action"`  // "allow" or "deny"
	From    string  `json:"from"`    // as written: node address, public key, "*", group:, org: or name:
	Address *string `json:"address"` // the node address it means; null for "*" and certificate identities
	To      string  `json:"to"`      // "" (this node and its routes), "self", a prefix, or destination nodes
	Proto   string  `json:"proto"`   // tcp, udp, icmp or any
	Ports   string  `json:"ports"`   // "" means every port
	Until   *string `json:"until"`   // RFC 3339; null: never expires
	Source  string  `json:"source"`  // "config", "api", "org" or "admin" ([[admin.allow]])
	Origin  string  `json:"origin"`  // for display: "config", "api", "org acme v3"
	Added   *string `json:"added"`   // RFC 3339 for rules added through the API
}

// AllowRequest is POST /v1/policy/allow; DenyRequest (POST
// /v1/policy/deny) has the same fields.
type AllowRequest struct {
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	Proto string `json:"proto,omitempty"`
	Ports string `json:"ports,omitempty"`
	Until string `json:"until,omitempty"` // RFC 3339; the CLI turns --for into it
}

// DenyRequest is POST /v1/policy/deny.
type DenyRequest AllowRequest

// DenyResponse reports whether the deny rule was new.
type DenyResponse AllowResponse

// UndenyRequest is POST /v1/policy/undeny: remove the API deny rules for From.
type UndenyRequest struct {
	From string `json:"from"`
}

// UndenyResponse lists the deny rules removed.
type UndenyResponse struct {
	Removed []Rule `json:"removed"`
}

// ExplainRequest is POST /v1/policy/explain: how would the rules decide
// on traffic from From (a key, node address, or hypothetical member
// name:/group:/org:) to To ("" or "self": this node; an IP address)?
type ExplainRequest struct {
	From   string   `json:"from"`
	To     string   `json:"to,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Proto  string   `json:"proto"`
	Port   int      `json:"port,omitempty"`
}

// ExplainResponse is the rules' decision and the rule that made it.
type ExplainResponse struct {
	Decision string `json:"decision"` // "allow" or "deny"
	Rule     *Rule  `json:"rule"`     // null for default deny
	Source   string `json:"source"`   // the deciding rule's source; "" for default deny
	Reason   string `json:"reason"`
}

// PolicyTest is one expectation of `tomoe policy test` (a [[test]] table).
type PolicyTest struct {
	From   string   `json:"from"`
	To     string   `json:"to,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Proto  string   `json:"proto"`
	Port   int      `json:"port,omitempty"`
	Expect string   `json:"expect"` // "allow" or "deny"
	Line   int      `json:"line,omitempty"`
}

// TestRequest is POST /v1/policy/test: evaluate tests against the node's
// effective rules.
type TestRequest struct {
	Tests []PolicyTest `json:"tests"`
}

// TestResult is one evaluated test.
type TestResult struct {
	PolicyTest
	OK     bool   `json:"ok"`
	Got    string `json:"got"`             // "allow" or "deny"; "" on error
	Reason string `json:"reason"`          // the decision's reason
	Error  string `json:"error,omitempty"` // the test could not be evaluated
}

// TestResponse lists the results in the tests' order.
type TestResponse struct {
	Results []TestResult `json:"results"`
}

// AllowResponse reports whether the rule was new.
type AllowResponse struct {
	Added bool `json:"added"`
	Rule  Rule `json:"rule"`
}

// RevokeRequest is POST /v1/policy/revoke.
type RevokeRequest struct {
	From string `json:"from"`
}

// RevokeResponse lists the rules removed and the peers whose sessions were cut.
type RevokeResponse struct {
	Removed  []Rule   `json:"removed"`
	PeersCut []string `json:"peers_cut"` // public keys
}

// PingRequest is POST /v1/ping: one echo request.
type PingRequest struct {
	Address   string `json:"address"`
	Size      int    `json:"size,omitempty"`       // payload bytes, default 56
	TimeoutMs int    `json:"timeout_ms,omitempty"` // default 3000
}

// PingResponse is the outcome of one echo request.
type PingResponse struct {
	Address string  `json:"address"`
	RTTMs   float64 `json:"rtt_ms"`
	// Error is set when no reply came: "timeout" or an ICMP error.
	Error string `json:"error,omitempty"`
}

// Event is one item of the GET /v1/events stream.
type Event struct {
	Type     string `json:"type"`
	Time     string `json:"time"` // RFC 3339 with fractional seconds
	Peer     string `json:"peer,omitempty"`
	Address  string `json:"address,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Count    uint64 `json:"count,omitempty"`
}

// Event types.
const (
	EventPeerAdded       = "peer_added"        // put into the WireGuard device
	EventPeerRemoved     = "peer_removed"      // taken out (idle, revoked, shutdown)
	EventPeerUp          = "peer_up"           // first handshake of a session
	EventPeerDown        = "peer_down"         // session expired without a new handshake
	EventHandshake       = "handshake"         // a new handshake completed
	EventPolicyAllow     = "policy_allow"      // a rule was added
	EventPolicyRevoke    = "policy_revoke"     // rules were revoked
	EventPolicyExpired   = "policy_expired"    // a rule's until passed
	EventDenied          = "denied"            // inbound packets dropped (rate-limited)
	EventAdmissionDenied = "admission_denied"  // a handshake from a key no rule allows
	EventOverflow        = "events_overflowed" // this subscriber missed events
	EventConfigReloaded  = "config_reloaded"   // the config file was read again: what changed, or why it was refused
)

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}

// OrgStatus is one organisation in GET /v1/orgs and `tomoe status`.
type OrgStatus struct {
	Name      string   `json:"name"`
	PublicKey string   `json:"public_key"`
	Cert      *OrgCert `json:"cert"` // this node's own certificate; null if it has none
	CRL       *OrgDoc  `json:"crl"`  // the newest revocation list held; null if none
	CRLMaxAge string   `json:"crl_max_age,omitempty"`
	// CRLStale: the newest list is older than crl_max_age (or there is
	// none): the organisation's certificates are refused.
	CRLStale     bool    `json:"crl_stale"`
	Policy       *OrgDoc `json:"policy"` // the newest organisation policy held; null if none
	AcceptPolicy bool    `json:"accept_policy"`
	PolicyError  string  `json:"policy_error,omitempty"`
	Members      int     `json:"members"` // peers holding a verified certificate
	// Join is this node's pending request to join the organisation
	// (`tomoe org join`), if any. JoinOnly: the node does not trust the
	// organisation yet; only its request names it (Name is the last label
	// of the name asked for).
	Join     *OrgJoin `json:"join,omitempty"`
	JoinOnly bool     `json:"join_only,omitempty"`
}

// OrgJoin is a node's own pending join request.
type OrgJoin struct {
	Name      string   `json:"name"`
	Groups    []string `json:"groups"`
	Requested string   `json:"requested"` // RFC 3339
	// Bridges: what each bridge last said of the request.
	Bridges []OrgBridgeAnswer `json:"bridges"`
}

// OrgBridgeAnswer is what one bridge answered (or did not).
type OrgBridgeAnswer struct {
	Bridge string `json:"bridge"` // the bridge's public key
	// State: held, refused, rejected (join requests); delivered, kept,
	// no_request, refused (approvals); removed, no_request, refused
	// (rejections); answered, partial, refused (lists); no_answer when
	// it did not answer in time; not_sent when it could not be sent to.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	Count int    `json:"count,omitempty"` // lists: requests it holds
}

// OrgJoinRequest is POST /v1/orgs/join: ask to join an organisation
// through this node's bridges (or the one named).
type OrgJoinRequest struct {
	Org    string   `json:"org"` // "tomoe-org:..."
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	Bridge string   `json:"bridge,omitempty"` // a bridge's public key; "": every bridge this node is registered with
}

// OrgJoinResponse says where the request went.
type OrgJoinResponse struct {
	Org       string            `json:"org"`
	Name      string            `json:"name"`
	Groups    []string          `json:"groups"`
	Requested string            `json:"requested"`
	Node      string            `json:"node"` // this node's key: what the key holder approves
	Bridges   []OrgBridgeAnswer `json:"bridges"`
}

// OrgQueryRequest is POST /v1/orgs/requests and POST /v1/orgs/reject: a
// query signed by the organisation's key ("tomoe-joinq:...", from `tomoe
// org requests` or `tomoe org reject`).
type OrgQueryRequest struct {
	Query string `json:"query"`
}

// OrgRequestsResponse lists the join requests the bridges hold for an
// organisation.
type OrgRequestsResponse struct {
	Org      string            `json:"org"`
	Requests []OrgJoinItem     `json:"requests"`
	Bridges  []OrgBridgeAnswer `json:"bridges"`
}

// OrgJoinItem is one node's request, as the bridges hold it.
type OrgJoinItem struct {
	Node      string   `json:"node"`
	Address   string   `json:"address"`
	Name      string   `json:"name"`
	Groups    []string `json:"groups"`
	Requested string   `json:"requested"`
	// State: pending, approved (a certificate waits for the node to pick
	// it up) or rejected.
	State   string   `json:"state"`
	Bridges []string `json:"bridges"` // the bridges that hold it
}

// OrgApproveRequest is POST /v1/orgs/approve: a certificate the
// organisation signed for a node that asked to join.
type OrgApproveRequest struct {
	Cert string `json:"cert"`
}

// OrgDecisionResponse says what the bridges did with an approval or a
// rejection.
type OrgDecisionResponse struct {
	Org     string            `json:"org"`
	Node    string            `json:"node"`
	Serial  string            `json:"serial,omitempty"`
	Bridges []OrgBridgeAnswer `json:"bridges"`
}

// OrgCert is a node's own certificate in an organisation.
type OrgCert struct {
	Name     string   `json:"name"`
	Groups   []string `json:"groups"`
	Serial   string   `json:"serial"`
	NotAfter string   `json:"not_after"`
	// State is valid, expired, not_yet_valid, revoked, crl_stale or invalid.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// Source: "config" ([[orgs]] cert) or "join" (received by request,
	// kept in the node's state).
	Source string `json:"source"`
}

// OrgDoc is an organisation document held: a revocation list (Entries)
// or an organisation policy (Rules).
type OrgDoc struct {
	Version uint64 `json:"version"`
	Issued  string `json:"issued"`
	Entries int    `json:"entries,omitempty"`
	Rules   int    `json:"rules,omitempty"`
}

// OrgPushRequest is POST /v1/orgs/push: a revocation list or an
// organisation policy in its text form.
type OrgPushRequest struct {
	Document string `json:"document"`
}

// OrgPushResponse says what the node did with it.
type OrgPushResponse struct {
	Org     string `json:"org"`
	Kind    string `json:"kind"`
	Version uint64 `json:"version"`
	Held    uint64 `json:"held"`  // the version the node held before
	Newer   bool   `json:"newer"` // installed and announced to peers and bridges
}

// ConsoleView is GET /v1/console: the network as this node can see it
// over the overlay. Each node's figures come from its own admin API
// (through [[admin.allow]]); the matrix comes from the policies readable.
type ConsoleView struct {
	Generated string        `json:"generated"` // RFC 3339
	Nodes     []ConsoleNode `json:"nodes"`
	// Matrix has a cell for every pair of nodes whose destination's rules
	// were read: what the source may open there.
	Matrix []ConsoleCell `json:"matrix"`
	// Truncated is set when more nodes were found than a view holds.
	Truncated bool `json:"truncated,omitempty"`
	// Signs is the organisation whose key this node holds ([console]
	// org_key): the console may revoke its members and sign its policy.
	Signs string `json:"signs,omitempty"`
}

// ConsoleNode is one node of the console's view.
type ConsoleNode struct {
	Address     string       `json:"address"`
	PublicKey   string       `json:"public_key,omitempty"`
	Name        string       `json:"name,omitempty"` // certificate name, else a [[peers]] name
	Self        bool         `json:"self,omitempty"`
	Memberships []Membership `json:"memberships,omitempty"`
	// State: "online" (its admin API answered), "refused" (it answered
	// 403: this node is not in its [[admin.allow]]) or "unreachable".
	State string `json:"state"`
	// Since is when State began, as far as this node knows (RFC 3339).
	Since string `json:"since"`
	// LastSeen is when its admin API last answered, if ever.
	LastSeen string `json:"last_seen,omitempty"`
	Error    string `json:"error,omitempty"`
	// FoundBy says where the console learnt of it: "self", "peer of X",
	// "bridge X".
	FoundBy   string      `json:"found_by"`
	Version   string      `json:"version,omitempty"`
	Mode      string      `json:"mode,omitempty"`
	StartedAt string      `json:"started_at,omitempty"`
	Peers     int         `json:"peers"`
	Direct    int         `json:"direct"` // peers with a session on a direct path
	Relayed   int         `json:"relayed"`
	Rules     []Rule      `json:"rules,omitempty"`
	Routes    *Routes     `json:"routes,omitempty"`
	Services  *Services   `json:"services,omitempty"`
	Orgs      []OrgStatus `json:"orgs,omitempty"`
}

// ConsoleCell says what From may open on To under To's rules (as To
// verified From's memberships): Allow lists "tcp 22", "udp 53", "icmp" or
// "any"; Deny lists what deny rules refuse. Both empty: default deny.
type ConsoleCell struct {
	From  string   `json:"from"`
	To    string   `json:"to"`
	Allow []string `json:"allow"`
	Deny  []string `json:"deny,omitempty"`
}

// ConsoleRevokeRequest is POST /v1/console/revoke: revoke a member of the
// console's organisation by certificate serial (16 hex digits) or node key.
type ConsoleRevokeRequest struct {
	Serial string `json:"serial,omitempty"`
	Key    string `json:"key,omitempty"`
}

// ConsoleSignedResponse says what the console signed and pushed.
type ConsoleSignedResponse struct {
	Org     string `json:"org"`
	Kind    string `json:"kind"` // "revocation list" or "organisation policy"
	Version uint64 `json:"version"`
	Pushed  bool   `json:"pushed"` // newer than what this node held: installed and announced
}

// ConsolePolicyRequest is POST /v1/console/policy: an organisation policy
// in TOML ([[allow]], [[deny]], [[test]]) to test, sign and push.
type ConsolePolicyRequest struct {
	Policy string `json:"policy"`
}

// ConsoleRuleRequest is POST /v1/console/rule: a change of another node's
// rules through its admin API over the overlay (this node needs the write
// role there). Op is allow, deny, revoke or undeny.
type ConsoleRuleRequest struct {
	Node  string `json:"node"`
	Op    string `json:"op"`
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	Proto string `json:"proto,omitempty"`
	Ports string `json:"ports,omitempty"`
	Until string `json:"until,omitempty"`
}

// ConsoleApproveRequest is POST /v1/console/approve: sign the certificate
// of a node that asked to join the console's organisation (name and groups
// as it asked unless given) and hand it to the bridges.
type ConsoleApproveRequest struct {
	Node   string   `json:"node"` // its public key
	Name   string   `json:"name,omitempty"`
	Groups []string `json:"groups,omitempty"`
}
