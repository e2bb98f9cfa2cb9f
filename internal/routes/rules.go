//go:build linux

package routes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/cidr"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// tomoe's ip rules (both families) have priorities in the block
// FirstRulePriority..LastRulePriority: before the main table's rule
// (32766), and clear of Tailscale's block (5210..5270) and of wg-quick's
// (32764, 32765). Configure deletes whatever is in the block, the rules
// of a tomoe that crashed.
//
//	4600  fwmark Mark goto 4699                       with UIDs
//	4610  not fwmark Mark lookup Table suppress_prefixlength 0
//	      (with UIDs: uidrange U-U lookup Table suppress_prefixlength 0, per uid)
//	4620  to P unreachable                            with UIDs, per P
//	4630  lookup main suppress_prefixlength 0         with a default route in Table
//	4640  not fwmark Mark lookup Table                with a default route in Table
//	      (with UIDs: uidrange U-U lookup Table, per uid)
//	4699  nop                                         with UIDs: the goto's target
//
// 4610 makes tomoe's specific routes win over the host's, except over the
// host's own networks: Table holds a throw route for each of those inside
// a tunnelled route (host.go), which sends the lookup on to the next rules
// and the main table (with UIDs, the 4620 rules leave them out too). 4630
// makes the host's own specific routes (its LAN, the route to a peer's
// endpoint) win over an exit node's default route, which 4640 then gives
// to the rest. 4630 and 4640 exist only for a family whose default route is in
// Table, so that without an exit node the host routes as it did without
// tomoe (4630 would otherwise put main's specific routes ahead of the
// host's own rules after tomoe's block).
//
// Traffic from tomoe's own underlay sockets, marked with Mark, skips
// tomoe's rules, so that an exit node's default route, or a tunnelled
// route that contains a peer's endpoint, never captures the packets that
// carry the tunnel. Without UIDs each rule says "not fwmark Mark". With
// UIDs that does not work: "not" inverts a rule's whole selector, so "not
// fwmark Mark uidrange U-U" would match every other user's traffic; instead
// marked packets jump past the block (4600 to 4699).
//
// With UIDs, tomoe's routes are for the listed users and uid 0 only. Other
// users get ENETUNREACH ("network is unreachable") for the overlay
// (fc00::/8), the site prefixes (0300::/8) and every tunnelled prefix,
// rather than falling through to the main table and out of the physical
// interface; that holds even where the host has a route of its own for a
// tunnelled prefix. An exit node's default route applies to the listed
// users and uid 0 only: everyone else keeps the main table's default
// route. uid 0 is always allowed because traffic without a user is uid 0:
// forwarded packets (LAN devices reaching the overlay through this node's
// site prefix, replies from an offered LAN, and with an exit route the
// LAN's internet traffic if this host routes for it), and packets the
// kernel sends itself (TCP resets, ICMP errors). Root's daemons listening
// on the overlay also answer from uid-0 sockets; a daemon running as
// another user must be listed to answer its overlay clients.
const (
	FirstRulePriority = 4600
	LastRulePriority  = 4699

	prefMark    = 4600
	prefTomoe   = 4610
	prefUnreach = 4620
	prefMain    = 4630
	prefDefault = 4640
	prefEnd     = 4699
)

// ruleAction is what an ip rule does when it matches.
type ruleAction uint8

const (
	lookupTable ruleAction = unix.FR_ACT_TO_TBL
	jumpToEnd   ruleAction = unix.FR_ACT_GOTO
	nop         ruleAction = unix.FR_ACT_NOP
	unreachable ruleAction = unix.FR_ACT_UNREACHABLE
)

// rule is one ip rule. It is comparable, so sets of rules can be diffed.
type rule struct {
	family   int // unix.AF_INET or unix.AF_INET6
	pref     int
	action   ruleAction
	table    int  // lookupTable only
	suppress bool // suppress_prefixlength 0
	mark     bool // fwmark Mark
	notMark  bool // not fwmark Mark (inverts the whole selector)
	hasUID   bool
	uid      uint32       // uidrange uid-uid, if hasUID
	dst      netip.Prefix // to dst, if valid
}

func (r rule) String() string {
	s := fmt.Sprintf("%d: ", r.pref)
	if r.family == unix.AF_INET {
		s = "ipv4 " + s
	} else {
		s = "ipv6 " + s
	}
	if r.notMark {
		s += "not "
	}
	if r.mark || r.notMark {
		s += fmt.Sprintf("fwmark %#x ", Mark)
	}
	if r.hasUID {
		s += fmt.Sprintf("uidrange %d-%d ", r.uid, r.uid)
	}
	if r.dst.IsValid() {
		s += "to " + r.dst.String() + " "
	}
	switch r.action {
	case lookupTable:
		s += fmt.Sprintf("lookup %d", r.table)
		if r.suppress {
			s += " suppress_prefixlength 0"
		}
	case jumpToEnd:
		s += fmt.Sprintf("goto %d", prefEnd)
	case nop:
		s += "nop"
	case unreachable:
		s += "unreachable"
	}
	return s
}

// wantRules returns the rules for uids (see the block's comment) and the
// routes in Table, in the order they are to be added: the goto's target
// first, then by priority, so that at no point does a half-installed set
// send traffic where the whole set would not.
func wantRules(uids []uint32, routes, throws []netip.Prefix) []rule {
	var out []rule
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		hasDefault := slices.ContainsFunc(routes, func(p netip.Prefix) bool { return p.Bits() == 0 && family(p) == fam })
		if len(uids) == 0 {
			out = append(out, rule{family: fam, pref: prefTomoe, action: lookupTable, table: Table, suppress: true, notMark: true})
			if hasDefault {
				out = append(out,
					rule{family: fam, pref: prefMain, action: lookupTable, table: unix.RT_TABLE_MAIN, suppress: true},
					rule{family: fam, pref: prefDefault, action: lookupTable, table: Table, notMark: true})
			}
			continue
		}
		users := allowedUIDs(uids)
		out = append(out, rule{family: fam, pref: prefEnd, action: nop})
		out = append(out, rule{family: fam, pref: prefMark, action: jumpToEnd, mark: true})
		for _, u := range users {
			out = append(out, rule{family: fam, pref: prefTomoe, action: lookupTable, table: Table, suppress: true, hasUID: true, uid: u})
		}
		for _, p := range unreachablePrefixes(fam, routes, throws) {
			out = append(out, rule{family: fam, pref: prefUnreach, action: unreachable, dst: p})
		}
		if hasDefault {
			out = append(out, rule{family: fam, pref: prefMain, action: lookupTable, table: unix.RT_TABLE_MAIN, suppress: true})
			for _, u := range users {
				out = append(out, rule{family: fam, pref: prefDefault, action: lookupTable, table: Table, hasUID: true, uid: u})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b rule) int { return rank(a) - rank(b) })
	return out
}

func rank(r rule) int {
	if r.action == nop {
		return 0
	}
	return r.pref
}

// allowedUIDs is uids and 0, sorted, without duplicates.
func allowedUIDs(uids []uint32) []uint32 {
	out := append([]uint32{0}, uids...)
	slices.Sort(out)
	return slices.Compact(out)
}

// unreachablePrefixes are the destinations of family fam that users other
// than the allowed ones must not reach: the overlay and site spaces, and
// every non-default route in Table without the host's networks that throw
// routes give back to the main table (throws), leaving out those another
// one contains.
func unreachablePrefixes(fam int, routes, throws []netip.Prefix) []netip.Prefix {
	var all []netip.Prefix
	if fam == unix.AF_INET6 {
		all = append(all, identity.OverlayPrefix, identity.SitePrefixSpace)
	}
	for _, p := range routes {
		if family(p) == fam && p.Bits() > 0 {
			all = append(all, cidr.Subtract(p, throws)...)
		}
	}
	slices.SortFunc(all, comparePrefix)
	var out []netip.Prefix
	for _, p := range slices.Compact(all) {
		if !slices.ContainsFunc(out, func(q netip.Prefix) bool { return q.Bits() <= p.Bits() && q.Contains(p.Addr()) }) {
			out = append(out, p)
		}
	}
	return out
}

// comparePrefix orders by address, then shorter first, so that a prefix
// comes before those it contains.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// request encodes r as an RTM_NEWRULE or RTM_DELRULE message. (The
// netlink package's Rule drops suppress_prefixlength for tables above
// 255, so tomoe encodes its rules itself.)
func (r rule) request(typ int) *nl.NetlinkRequest {
	flags := unix.NLM_F_ACK
	if typ == unix.RTM_NEWRULE {
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	}
	req := nl.NewNetlinkRequest(typ, flags)
	// struct fib_rule_hdr has the layout of struct rtmsg; its action is
	// rtmsg's type.
	hdr := &nl.RtMsg{RtMsg: unix.RtMsg{Family: uint8(r.family), Type: uint8(r.action)}}
	if r.notMark {
		hdr.Flags |= unix.FIB_RULE_INVERT
	}
	var attrs []*nl.RtAttr
	u32 := func(typ int, v uint32) {
		attrs = append(attrs, nl.NewRtAttr(typ, binary.NativeEndian.AppendUint32(nil, v)))
	}
	u32(unix.FRA_PRIORITY, uint32(r.pref))
	if r.dst.IsValid() {
		hdr.Dst_len = uint8(r.dst.Bits())
		attrs = append(attrs, nl.NewRtAttr(unix.FRA_DST, r.dst.Addr().AsSlice()))
	}
	if r.action == lookupTable {
		u32(unix.FRA_TABLE, uint32(r.table))
		if r.suppress {
			u32(unix.FRA_SUPPRESS_PREFIXLEN, 0)
		}
	}
	if r.action == jumpToEnd {
		u32(unix.FRA_GOTO, prefEnd)
	}
	if r.mark || r.notMark {
		u32(unix.FRA_FWMARK, Mark)
		u32(unix.FRA_FWMASK, 0xffffffff)
	}
	if r.hasUID {
		attrs = append(attrs, nl.NewRtAttr(unix.FRA_UID_RANGE, binary.NativeEndian.AppendUint32(binary.NativeEndian.AppendUint32(nil, r.uid), r.uid)))
	}
	req.AddData(hdr)
	for _, a := range attrs {
		req.AddData(a)
	}
	return req
}

// addRule installs r; a rule that exists already counts as installed.
func (i *Interface) addRule(r rule) error {
	if err := i.execRule(r.request(unix.RTM_NEWRULE)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("ip rule add %v: %w", r, err)
	}
	return nil
}

// delRule removes r; a rule that is gone already counts as removed.
func (i *Interface) delRule(r rule) error {
	if err := i.execRule(r.request(unix.RTM_DELRULE)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("ip rule del %v: %w", r, err)
	}
	return nil
}

func (i *Interface) execRule(req *nl.NetlinkRequest) error {
	req.Sockets = i.ruleSock
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// syncRulesLocked makes the installed rules those for routes: it adds the
// missing ones (in wantRules' order), then deletes those no longer wanted
// (in reverse order). On error i.rules still says what is installed.
func (i *Interface) syncRulesLocked(routes []netip.Prefix) error {
	want := wantRules(i.uids, routes, throwsFor(routes, i.host.Networks))
	for _, r := range want {
		if slices.Contains(i.rules, r) {
			continue
		}
		if err := i.addRule(r); err != nil {
			return err
		}
		i.rules = append(i.rules, r)
	}
	var stale []rule
	for _, r := range i.rules {
		if !slices.Contains(want, r) {
			stale = append(stale, r)
		}
	}
	slices.SortStableFunc(stale, func(a, b rule) int { return rank(b) - rank(a) })
	for _, r := range stale {
		if err := i.delRule(r); err != nil {
			return err
		}
		i.rules = slices.DeleteFunc(i.rules, func(x rule) bool { return x == r })
	}
	return nil
}

// deleteStaleRules deletes every rule in tomoe's priority block, of both
// families: what a tomoe that did not get to Close left behind.
func (i *Interface) deleteStaleRules() error {
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := i.h.RuleList(fam)
		if err != nil {
			return fmt.Errorf("list ip rules: %w", err)
		}
		for _, r := range rules {
			if r.Priority < FirstRulePriority || r.Priority > LastRulePriority {
				continue
			}
			// A request with only the priority matches any rule there.
			req := nl.NewNetlinkRequest(unix.RTM_DELRULE, unix.NLM_F_ACK)
			req.AddData(&nl.RtMsg{RtMsg: unix.RtMsg{Family: uint8(fam)}})
			req.AddData(nl.NewRtAttr(unix.FRA_PRIORITY, binary.NativeEndian.AppendUint32(nil, uint32(r.Priority))))
			if err := i.execRule(req); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete stale ip rule %d: %w", r.Priority, err)
			}
		}
	}
	return nil
}
