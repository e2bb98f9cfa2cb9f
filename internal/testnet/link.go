package testnet

import (
	"os"
	"path/filepath"
	"strings"
)

// Veth links ns to peer with a veth pair, ifname in ns and peerIfname in
// peer, and brings both ends up. Duplicate address detection is off on
// both ends, so IPv6 works at once (neighbour discovery waits otherwise
// for the link-local addresses). The pair goes away with the namespaces.
func (ns *Netns) Veth(ifname string, peer *Netns, peerIfname string) {
	ns.t.Helper()
	ns.Run("ip", "link", "add", ifname, "type", "veth", "peer", "name", peerIfname, "netns", peer.Name)
	ns.Sysctl("net/ipv6/conf/"+ifname+"/accept_dad", "0")
	peer.Sysctl("net/ipv6/conf/"+peerIfname+"/accept_dad", "0")
	ns.Run("ip", "link", "set", ifname, "up")
	peer.Run("ip", "link", "set", peerIfname, "up")
}

// Sysctl sets a sysctl of the namespace, named by its path under
// /proc/sys ("net/ipv4/ip_forward"; slashes, so that interface names with
// dots work), failing the test if it cannot.
func (ns *Netns) Sysctl(path, value string) {
	ns.t.Helper()
	// /proc/sys/net shows the namespace of the thread that opens it.
	var err error
	ns.Do(func() {
		err = os.WriteFile(filepath.Join("/proc/sys", path), []byte(value+"\n"), 0o644)
	})
	if err != nil {
		ns.t.Fatalf("netns %s: sysctl %s = %s: %v", ns.Name, strings.ReplaceAll(path, "/", "."), value, err)
	}
}

// Forwarding turns on IPv4 and IPv6 forwarding in the namespace, making it
// a router.
func (ns *Netns) Forwarding() {
	ns.t.Helper()
	ns.Sysctl("net/ipv4/ip_forward", "1")
	ns.Sysctl("net/ipv6/conf/all/forwarding", "1")
}
