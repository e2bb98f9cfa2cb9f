// Package vlab builds labs of real tomoe nodes on an in-memory internet
// (testnet/vnet): sites behind NATs of given kinds, public hosts for
// bridges, and on each host a whole node (node.New in userspace mode)
// whose underlay is that host's Bind, streams and address
// (node.Options.Transport). It is the fast twin of the real-kernel NAT
// lab (testnet.NATLab and e2e's TestBridgeNATLab): the same topology and
// the same scenarios, without root, in one process, under the race
// detector. The netns lab stays the proof that a scenario holds on Linux;
// vlab is where it is cheap to run often.
//
// # Topology
//
// As testnet.NATLab: an internet, 203.0.113.0/24, with public hosts at
// 203.0.113.1 to .9 in the order they are added, and sites whose NAT
// router n (counting from 1) is 203.0.113.(10+n) outside and 10.n.0.1
// inside, with one host at 10.n.0.2. Every node listens on UDP 4610;
// a bridge also on TCP 4610.
//
// # What a test reads
//
// A Node's path to a peer (PathTo: direct, relayed over UDP or over TCP,
// and through which bridge), its bridge registration (Bridge), and on a
// bridge the nodes it serves (BridgeNode): all through the node's admin
// API areas, the same code `tomoe peers --json` and `tomoe bridge nodes
// --json` run.
//
// # Time
//
// Nodes keep real time (their keepalives, probe rounds, handshakes; their
// Options.Clock is left nil), so a lab's World does too; a scenario that
// waits on a node's timer (a bridge keepalive is 15 s) takes that long.
//
// # Lifecycle
//
// New registers the lab's teardown with the test: the nodes are closed in
// the reverse of the order they first started (so the nodes behind NATs
// say goodbye to their bridges while the bridges still run), then the
// World, which closes whatever is left open on it. Nothing outlives the
// test. Node.Restart closes a node and starts it again on the same host,
// port, key and state, as a restarted process would. Only tests import
// this package.
package vlab
