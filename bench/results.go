package main

// This file holds the results (also the schema of results.json) and the
// statistics over them.

import (
	"math"
	"slices"
	"time"
)

// Results is everything one benchmark run measured.
type Results struct {
	Date            string            `json:"date"` // RFC 3339, start of the run
	Quick           bool              `json:"quick"`
	Repeats         int               `json:"repeats"`
	RunSeconds      float64           `json:"run_seconds"`
	PingCount       int               `json:"ping_count"`
	DurationSeconds float64           `json:"duration_seconds"`
	Machine         Machine           `json:"machine"`
	Versions        Versions          `json:"versions"`
	Scenarios       []*ScenarioResult `json:"scenarios"`
	Memory          *MemoryResult     `json:"memory,omitempty"`
	Profile         *ProfileResult    `json:"profile,omitempty"`
	// Bridge is the bridge part. It carries its own date and parameters:
	// `-only bridge` replaces just this part of an earlier results.json.
	Bridge *BridgeResult `json:"bridge,omitempty"`
	// VPN is the VPN part (routed subnets, userspace access). Like the
	// bridge part it carries its own date and parameters: `-only vpn`
	// replaces just this part of an earlier results.json.
	VPN *VPNResult `json:"vpn,omitempty"`
	// Flood is the handshake-flood part; `-only flood` replaces just it.
	Flood *FloodResult `json:"flood,omitempty"`
	// L2 is the virtual Ethernet part; `-only l2` replaces just it.
	L2 *L2Result `json:"l2,omitempty"`
	// Compare is tomoe against wireguard-go, yggdrasil and nebula
	// (compare.go); `-only compare` replaces just it.
	Compare *CompareResult `json:"compare,omitempty"`
	Errors  []string       `json:"errors,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs         int    `json:"cpus"`
	CPUModel     string `json:"cpu_model"`
	Kernel       string `json:"kernel"`
	MemTotalMB   int64  `json:"mem_total_mb"`
	LoadavgStart string `json:"loadavg_start"`
	LoadavgEnd   string `json:"loadavg_end"`
}

// Versions of what was measured.
type Versions struct {
	Go             string `json:"go"`
	WireGuardGo    string `json:"wireguard_go"` // the pseudo-version tomoe's go.mod pins
	WireGuardTools string `json:"wireguard_tools"`
	Iperf3         string `json:"iperf3"`
	Tomoe          string `json:"tomoe"` // git commit, and whether the tree had changes
}

// ScenarioResult is one data-plane scenario's figures.
type ScenarioResult struct {
	Key    string `json:"key"`
	Name   string `json:"name"`
	Target string `json:"target"`
	// Path is how tomoe's packets went, as the sender's `tomoe peers`
	// reported it after the runs (bridge scenarios only).
	Path       string        `json:"path,omitempty"`
	Throughput []*Throughput `json:"throughput"`
	Pings      []PingResult  `json:"pings"`
	Errors     []string      `json:"errors,omitempty"`
}

// Throughput is the runs with one number of parallel streams.
type Throughput struct {
	Streams             int     `json:"streams"`
	Runs                []Run   `json:"runs"`
	MedianBitsPerSecond float64 `json:"median_bits_per_second"`
	// MedianDaemonCPUPerGB is the median over runs of the daemons' CPU
	// seconds per 10^9 bytes received; nil where there is no daemon.
	MedianDaemonCPUPerGB  *float64 `json:"median_daemon_cpu_s_per_gb"`
	MedianMachineCPUPerGB float64  `json:"median_machine_cpu_s_per_gb"`
	// MedianMiddleCPUPerGB is the same for the middle process alone
	// (bridge or hub); nil where there is none.
	MedianMiddleCPUPerGB *float64 `json:"median_middle_cpu_s_per_gb,omitempty"`
}

// Run is one throughput measurement.
type Run struct {
	Streams       int     `json:"streams"`
	Seconds       float64 `json:"seconds"`
	BytesSent     int64   `json:"bytes_sent"`
	BytesReceived int64   `json:"bytes_received"`
	BitsPerSecond float64 `json:"bits_per_second"` // receiver side
	Retransmits   *int    `json:"retransmits,omitempty"`
	// DaemonCPUSeconds is utime+stime of the scenario's daemons during
	// the run (nil for raw veth).
	DaemonCPUSeconds *float64 `json:"daemon_cpu_seconds,omitempty"`
	// MiddleCPUSeconds is the part of DaemonCPUSeconds spent by the
	// process in the middle (bridge or wireguard-go hub), if any.
	MiddleCPUSeconds *float64 `json:"middle_cpu_seconds,omitempty"`
	// MachineCPUSeconds is the busy time of all CPUs during the run.
	MachineCPUSeconds float64 `json:"machine_cpu_seconds"`
	Loadavg           string  `json:"loadavg"` // before the run
	// ProcCPUSeconds is utime+stime of single processes during the run,
	// by role ("gateway", "access", "sender", ...), where the scenario
	// records them (VPN part).
	ProcCPUSeconds map[string]float64 `json:"proc_cpu_seconds,omitempty"`
}

// ProcCPUPerGB is one recorded process's CPU seconds per 10^9 bytes
// received; nil if the run did not record it.
func (r Run) ProcCPUPerGB(key string) *float64 {
	v, ok := r.ProcCPUSeconds[key]
	if !ok || r.BytesReceived == 0 {
		return nil
	}
	v /= float64(r.BytesReceived) / 1e9
	return &v
}

// DaemonCPUPerGB is the daemons' CPU seconds per 10^9 bytes received.
func (r Run) DaemonCPUPerGB() *float64 {
	if r.DaemonCPUSeconds == nil || r.BytesReceived == 0 {
		return nil
	}
	v := *r.DaemonCPUSeconds / (float64(r.BytesReceived) / 1e9)
	return &v
}

// MiddleCPUPerGB is the middle process's CPU seconds per 10^9 bytes
// received.
func (r Run) MiddleCPUPerGB() *float64 {
	if r.MiddleCPUSeconds == nil || r.BytesReceived == 0 {
		return nil
	}
	v := *r.MiddleCPUSeconds / (float64(r.BytesReceived) / 1e9)
	return &v
}

// MachineCPUPerGB is the whole machine's CPU seconds per 10^9 bytes received.
func (r Run) MachineCPUPerGB() float64 {
	if r.BytesReceived == 0 {
		return 0
	}
	return r.MachineCPUSeconds / (float64(r.BytesReceived) / 1e9)
}

// summarize fills in the medians.
func (t *Throughput) summarize() {
	var bps, daemon, middle, machine []float64
	for _, r := range t.Runs {
		bps = append(bps, r.BitsPerSecond)
		machine = append(machine, r.MachineCPUPerGB())
		if v := r.DaemonCPUPerGB(); v != nil {
			daemon = append(daemon, *v)
		}
		if v := r.MiddleCPUPerGB(); v != nil {
			middle = append(middle, *v)
		}
	}
	if len(middle) > 0 {
		v := median(middle)
		t.MedianMiddleCPUPerGB = &v
	}
	t.MedianBitsPerSecond = median(bps)
	t.MedianMachineCPUPerGB = median(machine)
	if len(daemon) > 0 {
		v := median(daemon)
		t.MedianDaemonCPUPerGB = &v
	}
}

// PingResult is one latency measurement.
type PingResult struct {
	Tool     string    `json:"tool"`
	Sent     int       `json:"sent"`
	Received int       `json:"received"`
	RTTsMs   []float64 `json:"rtts_ms"`
	MedianMs float64   `json:"median_ms"`
	AvgMs    float64   `json:"avg_ms"`
	MinMs    float64   `json:"min_ms"`
	MaxMs    float64   `json:"max_ms"`
}

// MemoryResult is the memory-per-peer scenario.
type MemoryResult struct {
	Peers  int    `json:"peers"`
	Settle string `json:"settle"`
	// Tomoe0, TomoeIdle and TomoeActive are a userspace-mode tomoe node
	// with no peers, with Peers static peers registered, and after a ping
	// to each put all of them into the WireGuard device.
	Tomoe0      memSample `json:"tomoe_0_peers"`
	TomoeIdle   memSample `json:"tomoe_idle_peers"`
	TomoeActive memSample `json:"tomoe_active_peers"`
	// ActivePeers is how many peers the node reported active right after
	// the pings, ActivePeersAfter after the active reading.
	ActivePeers       int     `json:"active_peers"`
	ActivePeersAfter  int     `json:"active_peers_after"`
	ActivationSeconds float64 `json:"activation_seconds"`
	PingErrors        int     `json:"ping_errors"` // admin API errors, not timeouts
	// TomoeLate is the active node read again LateAfter the activation,
	// once wireguard-go has given up the handshakes and dropped the
	// packets staged for them (full runs only).
	TomoeLate       memSample `json:"tomoe_active_peers_late,omitempty"`
	LateAfter       string    `json:"late_after,omitempty"`
	ActivePeersLate int       `json:"active_peers_late,omitempty"`
	// HeapTopActive is pprof -top of the in-use heap with all peers active.
	HeapTopActive string `json:"heap_top_active,omitempty"`
	HeapTopLate   string `json:"heap_top_late,omitempty"`
	// WireGuard0 and WireGuardN are plain wireguard-go, up, with no peers
	// and with the same Peers keys configured (no traffic).
	WireGuard0 memSample `json:"wireguard_go_0_peers"`
	WireGuardN memSample `json:"wireguard_go_n_peers"`

	IdlePerPeerKB       float64  `json:"idle_rss_per_peer_kb"`
	ActivePerPeerKB     float64  `json:"active_rss_per_peer_kb"`
	IdleHeapPerPeerKB   float64  `json:"idle_heap_per_peer_kb"`
	ActiveHeapPerPeerKB float64  `json:"active_heap_per_peer_kb"`
	LatePerPeerKB       float64  `json:"late_rss_per_peer_kb,omitempty"`
	LateHeapPerPeerKB   float64  `json:"late_heap_per_peer_kb,omitempty"`
	WireGuardPerPeerKB  float64  `json:"wireguard_go_rss_per_peer_kb"`
	Notes               []string `json:"notes,omitempty"`
}

// ProfileResult is the profiled tomoe kernel-mode run.
type ProfileResult struct {
	Seconds int           `json:"seconds"`
	Streams int           `json:"streams"`
	Run     *Run          `json:"run"`
	Sides   []ProfileSide `json:"sides"`
}

// ProfileSide is one daemon's profile, summarised.
type ProfileSide struct {
	Role       string      `json:"role"`
	File       string      `json:"file"`
	Header     string      `json:"header"`
	TopFlat    string      `json:"top_flat"`
	TopCum     string      `json:"top_cum"`
	Components []Component `json:"components"`
}

// Component is a share of a profile's flat time.
type Component struct {
	Name        string  `json:"name"`
	FlatPercent float64 `json:"flat_percent"`
}

// PartRun is what each part after the data plane and memory (bridge, VPN,
// flood, virtual Ethernet, compare) records about its own run: `-only
// PART` replaces just that part of an earlier results.json, so each
// carries its own date and settings.
type PartRun struct {
	Date            string  `json:"date"` // RFC 3339, start of the part
	Quick           bool    `json:"quick"`
	Repeats         int     `json:"repeats"`
	RunSeconds      float64 `json:"run_seconds"`
	PingCount       int     `json:"ping_count"`
	DurationSeconds float64 `json:"duration_seconds"`
	LoadavgStart    string  `json:"loadavg_start"`
	LoadavgEnd      string  `json:"loadavg_end"`
}

// newPartRun starts a part's record: its date and load average now.
func newPartRun(started time.Time, quick bool, repeats int, runSeconds float64, pingCount int) PartRun {
	return PartRun{Date: started.Format(time.RFC3339), Quick: quick, Repeats: repeats, RunSeconds: runSeconds, PingCount: pingCount, LoadavgStart: loadavg()}
}

// BridgeResult is the bridge part: relayed and direct throughput through
// a middle namespace, cold lookups, and a bridge's capacity.
type BridgeResult struct {
	PartRun
	Streams     []int  `json:"streams"`
	Tomoe       string `json:"tomoe"`        // as Versions.Tomoe
	WireGuardGo string `json:"wireguard_go"` // as Versions.WireGuardGo
	// Scenarios are keyed wg-direct, wg-hub, tomoe-direct, tomoe-relay-udp
	// and tomoe-relay-tcp.
	Scenarios []*ScenarioResult `json:"scenarios"`
	// Lookup is on the line where the path can go direct; LookupRelay
	// on the one where it stays relayed over UDP.
	Lookup      *ColdLookupResult `json:"cold_lookup,omitempty"`
	LookupRelay *ColdLookupResult `json:"cold_lookup_relay,omitempty"`
	Capacity    *CapacityResult   `json:"capacity,omitempty"`
	Errors      []string          `json:"errors,omitempty"`
}

// ColdLookupResult is the first packet of a freshly started node to an
// address it does not know, repeated.
type ColdLookupResult struct {
	Repeats int `json:"repeats"`
	// RegisterMs is process start until the bridge status said registered.
	RegisterMs []float64 `json:"register_ms"`
	// RTTMs is the first echo's round trip as the node timed it (from
	// injecting the request, so lookup and handshake included); 0 for no
	// reply.
	RTTMs []float64 `json:"rtt_ms"`
	// CallMs is the wall time of the admin API ping call.
	CallMs []float64 `json:"call_ms"`
	// DirectMs is the first packet until `peers` showed path "direct";
	// 0 if it did not within the timeout. Empty where the path cannot be
	// direct.
	DirectMs []float64 `json:"direct_ms,omitempty"`
	Failures []string  `json:"failures,omitempty"`

	MedianRTTMs    float64 `json:"median_rtt_ms"`
	MaxRTTMs       float64 `json:"max_rtt_ms"`
	MedianCallMs   float64 `json:"median_call_ms"`
	MaxCallMs      float64 `json:"max_call_ms"`
	MedianDirectMs float64 `json:"median_direct_ms"`
	MaxDirectMs    float64 `json:"max_direct_ms"`
	MedianRegister float64 `json:"median_register_ms"`
}

// CapacityResult is one userspace-mode bridge with many simulated
// registered nodes (bench/bridgesim).
type CapacityResult struct {
	Nodes      int `json:"nodes"`      // simulated nodes
	Registered int `json:"registered"` // as the simulator counted Registered answers
	// Listed is len(`tomoe bridge nodes --json`) after the registrations.
	Listed            int       `json:"listed"`
	RegisterSeconds   float64   `json:"register_seconds"`
	RegisterResends   int       `json:"register_resends"`
	Refused           int       `json:"refused"`
	Before            memSample `json:"before"`           // no registrations
	After             memSample `json:"after"`            // all registered, idle
	AfterLookups      memSample `json:"after_lookups"`    // after the lookup load
	RSSPerNodeKB      float64   `json:"rss_per_node_kb"`  // (After - Before) / Registered
	HeapPerNodeKB     float64   `json:"heap_per_node_kb"` // likewise for the Go heap in use after GC
	LookupSeconds     float64   `json:"lookup_seconds"`
	Window            int       `json:"window"` // outstanding lookups kept
	Requesters        int       `json:"requesters"`
	LookupsSent       int64     `json:"lookups_sent"`
	LookupsAnswered   int64     `json:"lookups_answered"` // found, with the right key
	LookupsWrong      int64     `json:"lookups_wrong"`    // answered, but not found or the wrong key
	LookupsLost       int64     `json:"lookups_lost"`     // no answer within 1 s
	Introductions     int64     `json:"introductions"`    // Introduce messages the targets received
	LookupsPerSecond  float64   `json:"lookups_per_second"`
	LookupMedianMs    float64   `json:"lookup_median_ms"`
	LookupP99Ms       float64   `json:"lookup_p99_ms"`
	BridgeCPUSeconds  float64   `json:"bridge_cpu_seconds"`  // during the lookup load
	SimCPUSeconds     float64   `json:"sim_cpu_seconds"`     // likewise, the load generator
	MachineCPUSeconds float64   `json:"machine_cpu_seconds"` // likewise, all CPUs
	Notes             []string  `json:"notes,omitempty"`
}

// VPNResult is the VPN part: IPv4 subnet routes through a gateway, and
// userspace-mode access (SOCKS5, port forward) against kernel mode.
type VPNResult struct {
	PartRun
	Streams  int      `json:"streams"`
	Machine  Machine  `json:"machine"`
	Versions Versions `json:"versions"`
	// Routed are keyed raw-routed, wg-direct, wg-routed, tomoe-direct,
	// tomoe-routed-masq and tomoe-routed.
	Routed []*ScenarioResult `json:"routed"`
	// LANSaw is the source address the LAN host's iperf3 saw, per routed
	// tomoe scenario key (iperf3 --get-server-output).
	LANSaw map[string]string `json:"lan_saw,omitempty"`
	// ClientRoutes is the client's table 4610 (`ip route show table
	// 4610`) after the runs.
	ClientRoutes string `json:"client_routes,omitempty"`
	// Access are keyed kernel, socks5 and forward.
	Access []*ScenarioResult `json:"access"`
	// Profile is a CPU profile of the userspace node during one extra
	// SOCKS5 run (ProfileRun).
	Profile        *ProfileSide `json:"profile,omitempty"`
	ProfileRun     *Run         `json:"profile_run,omitempty"`
	ProfileSeconds int          `json:"profile_seconds,omitempty"`
	// Netstack are the userspace stack's settings read from the source
	// the node was built from.
	Netstack []Setting `json:"netstack,omitempty"`
	Errors   []string  `json:"errors,omitempty"`
}

// Setting is one setting read from the source tree.
type Setting struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"` // file
}

// medianProcCPUPerGB is the median over runs of process key's CPU seconds
// per 10^9 bytes received; nil if no run recorded it.
func (t *Throughput) medianProcCPUPerGB(key string) *float64 {
	if t == nil {
		return nil
	}
	var xs []float64
	for _, r := range t.Runs {
		if v := r.ProcCPUPerGB(key); v != nil {
			xs = append(xs, *v)
		}
	}
	if len(xs) == 0 {
		return nil
	}
	v := median(xs)
	return &v
}

// median of xs (not modified); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// scenario returns the result with key, or nil.
func (r *Results) scenario(key string) *ScenarioResult {
	for _, s := range r.Scenarios {
		if s.Key == key {
			return s
		}
	}
	return nil
}

// throughput returns the scenario's entry for streams, or nil.
func (s *ScenarioResult) throughput(streams int) *Throughput {
	if s == nil {
		return nil
	}
	for _, t := range s.Throughput {
		if t.Streams == streams {
			return t
		}
	}
	return nil
}

// FloodResult is the handshake-flood part: an allowed peer's throughput
// and ping to a victim while an attacker floods the victim with
// handshake initiations, for tomoe and plain wireguard-go.
type FloodResult struct {
	PartRun
	Streams       int      `json:"streams"`
	PingInterval  float64  `json:"ping_interval_s"`
	SettleSeconds float64  `json:"settle_seconds"` // flood start until the measurements
	Machine       Machine  `json:"machine"`
	Versions      Versions `json:"versions"`
	// The attacker's settings (bench/hsflood).
	Sources      int `json:"sources"`       // addresses of one64 and many64
	SmartSources int `json:"smart_sources"` // /64s of smart
	Pool         int `json:"pool"`          // initiations (keys) per flood
	Batch        int `json:"batch"`         // messages per sendmmsg
	// PacedRate is the packets per second of the paced flood.
	PacedRate float64 `json:"paced_rate"`
	// Cases are every victim ("tomoe", "wireguard-go") under every
	// flood ("none", "control", "one64", "many64", "smart").
	Cases []*FloodCase `json:"cases"`
	// Profiles are CPU profiles of the tomoe victim, ProfileSeconds
	// long, each during one extra iperf3 run under one flood.
	Profiles       []FloodProfile `json:"profiles,omitempty"`
	ProfileSeconds int            `json:"profile_seconds,omitempty"`
	Errors         []string       `json:"errors,omitempty"`
}

// FloodProfile is the tomoe victim's CPU profile under one flood.
type FloodProfile struct {
	Flood string      `json:"flood"`
	Run   Run         `json:"run"` // the iperf3 run it was taken in
	Side  ProfileSide `json:"side"`
}

// FloodCase is one victim under one kind of flood, repeated.
type FloodCase struct {
	Victim string     `json:"victim"`
	Flood  string     `json:"flood"`
	Runs   []FloodRun `json:"runs"`
	Errors []string   `json:"errors,omitempty"`
}

// FloodRun is one repeat: the flood starts and settles, then iperf3 runs
// (During), then ping (PingWindow), all under the flood.
type FloodRun struct {
	Repeat     int         `json:"repeat"`
	Start      *FloodStart `json:"start,omitempty"` // nil without a flood
	Throughput Run         `json:"throughput"`
	During     FloodWindow `json:"during_iperf3"`
	Ping       PingResult  `json:"ping"`
	PingWindow FloodWindow `json:"during_ping"`
}

// FloodStart is hsflood's answer to start.
type FloodStart struct {
	Mode        string  `json:"mode"`
	Sources     int     `json:"sources"`
	Pool        int     `json:"pool"`
	PoolSeconds float64 `json:"pool_seconds"`
}

// FloodWindow is what the counters moved by over one stretch of time.
type FloodWindow struct {
	Seconds float64 `json:"seconds"`
	// CPUSeconds is utime+stime of the victim's daemon, the peer's and
	// the attacker (hsflood).
	CPUSeconds        map[string]float64 `json:"cpu_seconds"`
	MachineCPUSeconds float64            `json:"machine_cpu_seconds"`
	// AttackerPackets are the initiations the attacker's kernel took
	// (sendmmsg's count); MAC2Packets those with a cookie's mac2 (smart);
	// CookiesOpened the cookie replies the smart attacker opened, and
	// SourcesWithCookie how many of its sources held one at the end.
	AttackerPackets   float64 `json:"attacker_packets"`
	MAC2Packets       float64 `json:"mac2_packets,omitempty"`
	CookiesOpened     float64 `json:"cookies_opened,omitempty"`
	SourcesWithCookie float64 `json:"sources_with_cookie,omitempty"`
	// Counters are the tomoe victim's handshake counters (x25519,
	// cookies_sent, initiations_RESULT); nil for wireguard-go.
	Counters map[string]float64 `json:"counters,omitempty"`
	// VictimUDP and AttackerUDP are the Udp6 counters of /proc/net/snmp6
	// in each namespace (InDatagrams, InErrors, RcvbufErrors, NoPorts,
	// OutDatagrams, ...).
	VictimUDP   map[string]float64 `json:"victim_udp"`
	AttackerUDP map[string]float64 `json:"attacker_udp"`
}

// rate is v per second of the window.
func (w FloodWindow) rate(v float64) float64 {
	if w.Seconds <= 0 {
		return 0
	}
	return v / w.Seconds
}

// find returns the case of victim under flood, or nil.
func (f *FloodResult) find(victim, flood string) *FloodCase {
	if f == nil {
		return nil
	}
	for _, c := range f.Cases {
		if c.Victim == victim && c.Flood == flood {
			return c
		}
	}
	return nil
}

// medianOf is the median over runs of x.
func (c *FloodCase) medianOf(x func(FloodRun) float64) float64 {
	if c == nil {
		return 0
	}
	var xs []float64
	for _, r := range c.Runs {
		xs = append(xs, x(r))
	}
	return median(xs)
}

func (c *FloodCase) medianBitsPerSecond() float64 {
	return c.medianOf(func(r FloodRun) float64 { return r.Throughput.BitsPerSecond })
}

// pings pools the round trips of all runs; sent and received add up.
func (c *FloodCase) pings() (rtts []float64, sent, received int) {
	if c == nil {
		return nil, 0, 0
	}
	for _, r := range c.Runs {
		rtts = append(rtts, r.Ping.RTTsMs...)
		sent += r.Ping.Sent
		received += len(r.Ping.RTTsMs)
	}
	return rtts, sent, received
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of xs;
// 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
