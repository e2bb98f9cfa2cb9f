package node

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tomoe-net/tomoe/internal/policy"
)

// Metrics returns a registry whose collector reads
// the node's counters when scraped, so nothing is updated per packet for
// the sake of metrics.
func (n *Node) Metrics() prometheus.Gatherer {
	n.metricsOnce.Do(func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &nodeCollector{n: n})
		n.registry = reg
	})
	return n.registry
}

var (
	descInfo       = prometheus.NewDesc("tomoe_info", "Node identity (value 1).", []string{"public_key", "address", "mode", "version"}, nil)
	descPeers      = prometheus.NewDesc("tomoe_peers", "Known peers by state.", []string{"state"}, nil)
	descPeerRx     = prometheus.NewDesc("tomoe_peer_receive_bytes_total", "Bytes received from a peer (WireGuard counters).", []string{"peer"}, nil)
	descPeerTx     = prometheus.NewDesc("tomoe_peer_transmit_bytes_total", "Bytes sent to a peer (WireGuard counters).", []string{"peer"}, nil)
	descPeerHS     = prometheus.NewDesc("tomoe_peer_last_handshake_seconds", "Unix time of a peer's last handshake.", []string{"peer"}, nil)
	descPeerDenied = prometheus.NewDesc("tomoe_peer_denied_packets_total", "Inbound packets from a peer dropped by policy.", []string{"peer"}, nil)
	descPackets    = prometheus.NewDesc("tomoe_packets_total", "Packets passed by the filter.", []string{"direction"}, nil)
	descDropped    = prometheus.NewDesc("tomoe_dropped_packets_total", "Packets dropped by the filter, by reason.", []string{"reason"}, nil)
	descInit       = prometheus.NewDesc("tomoe_handshake_initiations_total", "Handshake initiations screened before WireGuard, by outcome (admitted and denied: keys not in the device).", []string{"result"}, nil)
	descCookies    = prometheus.NewDesc("tomoe_handshake_cookies_sent_total", "Cookie replies sent to initiations without a valid mac2 while under load.", nil, nil)
	descX25519     = prometheus.NewDesc("tomoe_handshake_x25519_total", "X25519 operations spent opening handshake initiations.", nil, nil)
	descHeld       = prometheus.NewDesc("tomoe_held_packets_total", "Packets that waited for their destination's peer.", nil, nil)
	descUnreach    = prometheus.NewDesc("tomoe_unreachable_sent_total", "ICMP unreachable errors given to local programs.", nil, nil)
	descHairpin    = prometheus.NewDesc("tomoe_device_forwarded_packets_total", "Packets forwarded between a hosted device and the overlay.", nil, nil)
	descFlows      = prometheus.NewDesc("tomoe_conntrack_flows", "Tracked flows this node opened.", nil, nil)
	descRemoteFl   = prometheus.NewDesc("tomoe_conntrack_remote_flows", "Tracked connectionless flows peers opened (they admit nothing by themselves).", nil, nil)
	descRoamed     = prometheus.NewDesc("tomoe_peer_roams_total", "Times a peer's direct path moved to a new address.", nil, nil)
	descReadAhead  = prometheus.NewDesc("tomoe_tun_read_ahead_packets_total", "Packets read from the kernel TUN after the first of a batch, without waiting (Linux kernel mode only).", nil, nil)
	descMalformed  = prometheus.NewDesc("tomoe_tun_malformed_frames_total", "Frames read ahead from the kernel TUN and dropped because they could not be split into packets (Linux kernel mode only).", nil, nil)
	descOrgMsgs    = prometheus.NewDesc("tomoe_org_messages_total", "Organisation protocol messages, by outcome (received; bad: malformed or a refused certificate; dropped: queue full; limited: over a peer's budget, in or out).", []string{"result"}, nil)
)

type nodeCollector struct{ n *Node }

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descPeers, descPeerRx, descPeerTx, descPeerHS, descPeerDenied, descPackets, descDropped, descInit, descCookies, descX25519, descHeld, descUnreach, descHairpin, descFlows, descRemoteFl, descRoamed, descReadAhead, descMalformed, descOrgMsgs} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	pub := n.pub
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, pub.String(), pub.Address().String(), n.cfg.TUN.Mode.String(), n.version)
	n.refresh(context.Background())
	var active, up, static float64
	n.peers.Lock()
	for p := range n.peers.All() {
		if p.Active {
			active++
		}
		if p.Up {
			up++
		}
		if p.Static {
			static++
		}
		if !p.Active && p.RX == 0 && p.TX == 0 {
			continue
		}
		a := p.Addr.String()
		ch <- prometheus.MustNewConstMetric(descPeerRx, prometheus.CounterValue, float64(p.RX), a)
		ch <- prometheus.MustNewConstMetric(descPeerTx, prometheus.CounterValue, float64(p.TX), a)
		if !p.LastHS.IsZero() {
			ch <- prometheus.MustNewConstMetric(descPeerHS, prometheus.GaugeValue, float64(p.LastHS.Unix()), a)
		}
	}
	total := float64(n.peers.Len())
	n.peers.Unlock()
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, total, "known")
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, static, "static")
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, active, "active")
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, up, "up")
	for addr, count := range n.filter.DeniedAll() {
		ch <- prometheus.MustNewConstMetric(descPeerDenied, prometheus.CounterValue, float64(count), addr.String())
	}
	ws := n.wrapper.Stats()
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(ws.OutPackets.Load()), "out")
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(ws.InPackets.Load()), "in")
	for v := policy.DropMalformed; v < policy.NumVerdicts; v++ {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(ws.Dropped[v].Load()), v.String())
	}
	bs := n.bind.Stats()
	ch <- prometheus.MustNewConstMetric(descInit, prometheus.CounterValue, float64(bs.InitiationsAdmitted.Load()), "admitted")
	ch <- prometheus.MustNewConstMetric(descInit, prometheus.CounterValue, float64(bs.InitiationsDenied.Load()), "denied")
	ch <- prometheus.MustNewConstMetric(descInit, prometheus.CounterValue, float64(bs.InitiationsInvalid.Load()), "invalid")
	ch <- prometheus.MustNewConstMetric(descInit, prometheus.CounterValue, float64(bs.InitiationsLimited.Load()), "rate_limited")
	ch <- prometheus.MustNewConstMetric(descInit, prometheus.CounterValue, float64(bs.InitiationsReplayed.Load()), "replayed")
	ch <- prometheus.MustNewConstMetric(descInit, prometheus.CounterValue, float64(bs.InitiationsDropped.Load()), "queue_full")
	ch <- prometheus.MustNewConstMetric(descCookies, prometheus.CounterValue, float64(bs.CookiesSent.Load()))
	ch <- prometheus.MustNewConstMetric(descX25519, prometheus.CounterValue, float64(bs.X25519.Load()))
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.CounterValue, float64(ws.Held.Load()))
	ch <- prometheus.MustNewConstMetric(descUnreach, prometheus.CounterValue, float64(ws.Unreachable.Load()))
	ch <- prometheus.MustNewConstMetric(descHairpin, prometheus.CounterValue, float64(ws.Hairpinned.Load()))
	local, remote := n.filter.Conntrack().Counts()
	ch <- prometheus.MustNewConstMetric(descFlows, prometheus.GaugeValue, float64(local))
	ch <- prometheus.MustNewConstMetric(descRemoteFl, prometheus.GaugeValue, float64(remote))
	ch <- prometheus.MustNewConstMetric(descRoamed, prometheus.CounterValue, float64(bs.Roamed.Load()))
	if extra, malformed, ok := n.wrapper.ReadAhead(); ok {
		ch <- prometheus.MustNewConstMetric(descReadAhead, prometheus.CounterValue, float64(extra))
		ch <- prometheus.MustNewConstMetric(descMalformed, prometheus.CounterValue, float64(malformed))
	}
	if n.orgs.Enabled() {
		oc := n.orgs.Counters()
		ch <- prometheus.MustNewConstMetric(descOrgMsgs, prometheus.CounterValue, float64(oc.Received), "received")
		ch <- prometheus.MustNewConstMetric(descOrgMsgs, prometheus.CounterValue, float64(oc.Bad), "bad")
		ch <- prometheus.MustNewConstMetric(descOrgMsgs, prometheus.CounterValue, float64(oc.Dropped), "dropped")
		ch <- prometheus.MustNewConstMetric(descOrgMsgs, prometheus.CounterValue, float64(oc.Limited), "limited")
	}
}
