package layering

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Sizes the tree keeps to, so that it goes on reading as the design: a
// package is one job (about 1,500 lines of code at most, tests aside) and
// a file is one part of it (800 lines at most, tests included).
const (
	maxPackageLines = 1500
	maxFileLines    = 800
)

// largePackages are the packages allowed over maxPackageLines, each with
// the reason it is one package all the same. A package leaves this list
// when it shrinks (the test says so), and joins it only with a reason.
var largePackages = map[string]string{
	"bench/sim": "one program, `go run ./bench/sim`: the simulated world, its scenarios (exchange, revocations, revocation lists) and " +
		"the report share the world's node table and result types; TODO: the scenarios can move to packages of their own behind a " +
		"World interface (the crl scenario made it cross the limit)",
	"bench": "one program, `go run ./bench`, whose scenario families (throughput, handshake flood, bridge) share its environment, " +
		"runner, profiles and the writer of RESULTS.md; its own parts (loadgen, tcpload, hsflood, usbench, bridgesim, sim) are packages already",
	"internal/testnet/vnet": "one simulated internet: networks, hosts, links, NATs, sockets and streams all move one packet type " +
		"through one World's lock-free lookups; split, each part would export its internals to the others",
	"internal/policy": "rules (identities, destinations, expiry), their compiled matcher, the store and the packet filter with its " +
		"connection table decide one question together; TODO: the filter and conntrack (the packet path) can move to a package of " +
		"their own once the node imports them from there (policy v2 made the package cross the limit)",
	"internal/transport": "one conn.Bind, WireGuard's hot path: the endpoint screen, the relay paths, the handshake pipeline and the " +
		"replay store all share its peer table and its lock, and a split would put an interface call on every packet",
	"internal/services": "the node's services as users reach them: local listeners checked by owner, the SOCKS5 and HTTP CONNECT " +
		"proxies and exposed TCP and UDP services share one connection tracker, splice and dial-error classification",
	"internal/node": "the composition root: it builds and orders the parts' lifecycle (TUN or stack, wrapper, engine, Bind, bridges, " +
		"services, admin API) and is the glue between them where a decision needs several at once: admission (policy x peer table x Bind), " +
		"peer activation (table -> device -> wrapper -> routes), the status and policy areas that read all of them; the jobs with a " +
		"state of their own are packages beside it (node/peers, node/routing, node/changes, node/localsvc)",
	"internal/bridge": "the bridge role: registration, lookups and introductions, relay and the organisation table (server_org.go) " +
		"share one registration table and its lock; to do: the organisation table becomes a package of its own (internal/bridge/orgs) " +
		"behind a Join/Leave/Handle interface",
	"internal/adminapi": "the admin API's one contract: the request and response types of every endpoint (types.go, services.go), " +
		"the mux with its guards (socket, overlay), the event stream and the client that speaks it; split, an endpoint's types, its " +
		"route and its client call would live apart. TODO: the types could move by area into subpackages (orgs and joins, services) " +
		"once the CLI and the web UI import them from there (enrolment by request made it cross the limit)",
	"internal/config": "the one schema of the config file: its typed values, the decoder that names a bad key's line and column, " +
		"and the rules between keys; split, a key's type, its default and its checks would live apart",
}

// srcPkg is what `go list -json` says of one of the module's packages.
type srcPkg struct {
	ImportPath   string
	Dir          string
	GoFiles      []string
	TestGoFiles  []string
	XTestGoFiles []string
}

// TestSizes: no package over maxPackageLines of code (tests aside) unless
// largePackages gives its reason, and no file over maxFileLines.
func TestSizes(t *testing.T) {
	pkgs := listSources(t)
	if len(pkgs) < 20 {
		t.Fatalf("only %d packages listed: is `go list` listing the module?", len(pkgs))
	}
	seen := map[string]bool{}
	for _, p := range pkgs {
		name := strings.TrimPrefix(p.ImportPath, module)
		code := 0
		for _, f := range p.GoFiles {
			code += fileLines(t, p.Dir, f)
		}
		_, allowed := largePackages[name]
		seen[name] = true
		switch {
		case code > maxPackageLines && !allowed:
			t.Errorf("package %s has %d lines of code (over %d): split it along its jobs, or give largePackages its reason", name, code, maxPackageLines)
		case code <= maxPackageLines && allowed:
			t.Errorf("package %s has %d lines of code, within %d: take it off largePackages", name, code, maxPackageLines)
		}
		for _, files := range [][]string{p.GoFiles, p.TestGoFiles, p.XTestGoFiles} {
			for _, f := range files {
				if n := fileLines(t, p.Dir, f); n > maxFileLines {
					t.Errorf("%s/%s has %d lines (over %d): split it", name, f, n, maxFileLines)
				}
			}
		}
	}
	for name := range largePackages {
		if !seen[name] {
			t.Errorf("largePackages names %s, which is not a package of the module", name)
		}
	}
}

func fileLines(t *testing.T, dir, file string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	n := bytes.Count(b, []byte{'\n'})
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	return n
}

// listSources runs `go list -json` over the module's own packages.
func listSources(t *testing.T) []srcPkg {
	t.Helper()
	return goList[srcPkg](t, "-json=ImportPath,Dir,GoFiles,TestGoFiles,XTestGoFiles", module+"...")
}
