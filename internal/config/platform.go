package config

import (
	"fmt"
	"regexp"
	"slices"
)

// What a node can do depends on the system it runs on. Userspace mode,
// with its proxies, connects and exposed services, runs anywhere Go does.
// Kernel mode runs on Linux, macOS (utun) and Windows (Wintun): tomoe
// gives the TUN its addresses and routes with the system's own tools off
// Linux, but what needs Linux's nftables, policy routing, uid rules or
// sock_diag is refused there, by validatePlatform, before anything is
// touched. See package routes and package firewall.

// kernelModeOS reports whether tomoe runs in kernel mode on goos.
func kernelModeOS(goos string) bool {
	return goos == "linux" || goos == "darwin" || goos == "windows"
}

// defaultMode is tun.mode's default on goos: kernel where tomoe has it.
func defaultMode(goos string) Mode {
	if kernelModeOS(goos) {
		return DefaultMode
	}
	return ModeUserspace
}

// defaultTUNName is tun.name's default on goos: macOS names its TUN
// devices utunN, and "utun" lets it pick N.
func defaultTUNName(goos string) string {
	if goos == "darwin" {
		return "utun"
	}
	return DefaultTUNName
}

// defaultDNS is tun.dns's default on goos: the overlay's DNS server needs
// Linux.
func defaultDNS(goos string) bool { return goos == "linux" }

var utunName = regexp.MustCompile(`^utun[0-9]*$`)

// validatePlatform reports what c asks for that goos cannot do.
func (c *Config) validatePlatform(goos string, bad func(key, format string, args ...any)) {
	if goos == "linux" {
		return
	}
	if c.TUN.Mode == ModeKernel {
		c.validateKernelPlatform(goos, bad)
	}
	if len(c.L2) > 0 {
		bad("l2", "virtual Ethernet is built on Linux only (a Linux bridge and VXLAN devices); remove [[l2]] on %s", goos)
	}
	if u := c.Run.User; u != "" && u != "root" {
		bad("run.user", "%q: giving up root for another user (package privdrop) needs Linux: remove the key, or start tomoe as the user it should run as", u)
	}
	// Local listeners: who owns a connection can be told off Linux only
	// for Unix sockets on macOS and FreeBSD (LOCAL_PEERCRED); Windows
	// restricts a Unix socket to tomoe's user by its file's ACL.
	anyUser := slices.Contains(c.Proxy.Users, "*")
	others := false
	for _, u := range c.Proxy.Users {
		others = others || u != "*"
	}
	if goos == "windows" && others {
		bad("proxy.users", "on windows local users are not told apart by uid: use [\"*\"] (every local user, on loopback TCP listeners) or leave it empty (only the user tomoe runs as, on Unix socket paths)")
	}
	check := func(key string, l LocalAddr) {
		switch {
		case !l.IsSet():
		case l.Path == "" && !anyUser:
			bad(key, "%q: on %s tomoe cannot tell which local user owns a loopback TCP connection (Linux's sock_diag can): admit every local user with proxy.users = [\"*\"], or listen on a Unix socket path", l, goos)
		case l.Path != "" && goos == "windows" && anyUser:
			bad(key, "%q: on windows a Unix socket serves only the user tomoe runs as (its file's ACL is the check): leave proxy.users empty, or listen on a loopback TCP port", l)
		}
	}
	for i, cn := range c.Connect {
		check(fmt.Sprintf("connect[%d].local", i), cn.Local)
	}
	check("proxy.socks5", c.Proxy.SOCKS5)
	check("proxy.http", c.Proxy.HTTP)
}

// validateKernelPlatform reports the kernel-mode features goos lacks.
func (c *Config) validateKernelPlatform(goos string, bad func(key, format string, args ...any)) {
	if !kernelModeOS(goos) {
		bad("tun.mode", "kernel mode is not supported on %s (tomoe configures a TUN device on linux, darwin and windows): set tun.mode = \"userspace\"", goos)
		return
	}
	if goos == "darwin" && !utunName.MatchString(c.TUN.Name) {
		bad("tun.name", "%q: macOS names TUN devices utunN: use \"utun\" (the system picks N) or \"utunN\"", c.TUN.Name)
	}
	linuxOnly := func(key, what string) {
		bad(key, "needs Linux (%s); on %s use tun.mode = \"userspace\" or remove the key", what, goos)
	}
	if c.Listen.Stealth {
		linuxOnly("listen.stealth", "nftables drops what is not tomoe's")
	}
	if len(c.Routes.Offer) > 0 {
		linuxOnly("routes.offer", "forwarding and masquerade into the LAN through nftables")
	}
	if len(c.Routes.Accept) > 0 {
		linuxOnly("routes.accept", "policy routing keeps the host's own networks and the tunnel's own packets out of tunnelled routes; a userspace node reaches accepted routes through its proxies")
	}
	if len(c.AllowedLocalUsers) > 0 {
		linuxOnly("allowed_local_users", "ip rules by uid")
	}
	if c.TUN.DNS {
		linuxOnly("tun.dns", "the DNS server's address and socket are bound to the TUN device")
	}
}
