// Package vnet is an in-memory internet for tests and simulations: hosts
// with addresses on networks, links with delay, loss and bandwidth, and
// NAT boxes whose mapping and filtering follow RFC 4787's terms. Nothing
// touches the kernel, so it needs no root and a test of many sites runs in
// seconds in one process. The real-kernel NAT lab (testnet.NATLab) stays
// the proof that a scenario holds on Linux; vnet is its fast twin.
//
// # What it owns
//
// A World holds Networks (segments with one IP prefix each: "the
// internet", a site's LAN), Hosts attached to one Network by a Link, and
// NATs joining an inside Network to an outside one through a public
// address. Packets are routed hop by hop: host -> link -> network ->
// link -> NAT -> link -> network -> link -> host, each link applying its
// LinkConfig, each NAT its NATConfig. A Network routes to the link that
// holds the destination address, else to its gateway (the inside of the
// NAT it sits behind), else drops. NATs nest (a NAT's outside Network may
// be another NAT's inside one: carrier-grade NAT). Packets carry a TTL
// (DefaultTTL, or what Bind.SendTTL asks): each NAT forwarding one takes
// one off, a Network given hops (SetHops: the routers of the internet
// between two sites) takes that many, and a packet whose TTL would run
// out is dropped, as a low-TTL opener dies past its own NAT.
//
// On a Host:
//   - NewBind gives a wireguard-go conn.Bind. Its ReceiveFuncs return
//     *conn.StdNetEndpoint and its Send takes them, as conn.StdNetBind
//     does, so a Bind that wraps StdNetBind can wrap it instead. Its
//     SendTTL sends with a TTL of the caller's choosing.
//   - ListenUDP gives a net.PacketConn for other datagram traffic.
//   - Dial and Listen give TCP-like streams: reliable, in order, delayed by
//     the path's links, through the same NATs (outbound only), reset when
//     a link on their path goes down or a NAT on it changes address.
//
// # Contracts
//
//   - Datagrams are never duplicated or reordered; they are lost only by a
//     link's Loss, a full queue (link or socket), or a rule (route, NAT,
//     block). Drops are silent to the sender, as on a real network, and
//     counted in World.Stats.
//   - Delay and bandwidth are modelled per link and direction; a link is a
//     FIFO, so a packet never overtakes an earlier one on the same link.
//   - Time comes from a clock.Clock: real time by default, or a
//     clock.Manual that a test advances, which makes delays, shaping and
//     NAT timeouts exact.
//     Loss and random port choice come from generators seeded by
//     Config.Seed, one per link direction and per NAT, so a run that sends
//     the same packets in the same order sees the same losses and ports.
//   - A zero-delay, unshaped, lossless path is crossed on the sender's
//     goroutine: no goroutine or timer per packet. A link with delay or
//     bandwidth queues packets and delivers them from a timer, one firing
//     per batch of due packets.
//   - Locks are per link direction, per NAT and per socket; a network is
//     looked up without one. Nothing holds one lock while taking another
//     on the data path, and no lock or counter written per packet is
//     shared by the whole world (BenchmarkPath measures the path).
//   - World.Close closes every socket, Bind, stream and listener and stops
//     every timer: nothing outlives it.
package vnet
