package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tomoe-net/tomoe/"

// upper are the packages leaves must not import: the composition root
// (node), what only it drives (engine), and the user's side (adminapi, the
// admin API; cli and webui, which only talk to it).
var upper = []string{"internal/node", "internal/engine", "internal/adminapi", "internal/cli", "internal/webui"}

// notLeaves are the packages of internal/ that may import upper ones:
// upper itself, demo, which runs whole nodes for `tomoe demo`, and vlab,
// which runs whole nodes on an in-memory internet for tests. Every other
// package of internal/ is a leaf, new ones included.
var notLeaves = append([]string{"internal/demo", "internal/vlab"}, upper...)

// pkg is what `go list -json` says of a package that the test needs.
type pkg struct {
	ImportPath string
	Imports    []string
}

// TestLeavesDoNotImportUpperPackages: a leaf package (identity, config,
// policy, routes, offers, packet, noise, ratelimit, cidr, statefile,
// fileperm, bridge and its subpackages, nat, services, netstack, tunwrap,
// transport, firewall, testnet: every package of internal/ but node,
// engine, adminapi, cli, demo and vlab) never imports node, engine, adminapi or
// cli, directly or through another package. Leaves are what the
// composition root wires; one that reached back up would tie the layers
// into a knot, and its tests would need a whole node.
func TestLeavesDoNotImportUpperPackages(t *testing.T) {
	pkgs := list(t)
	imports := make(map[string][]string, len(pkgs))
	for _, p := range pkgs {
		imports[p.ImportPath] = p.Imports
	}
	leaves := 0
	for _, p := range pkgs {
		name := strings.TrimPrefix(p.ImportPath, module)
		if !strings.HasPrefix(name, "internal/") || slices.Contains(notLeaves, name) || isNodeRoom(name) || strings.HasPrefix(name, "internal/cli/") {
			continue
		}
		leaves++
		if chain := pathTo(imports, p.ImportPath, upperSet()); chain != nil {
			t.Errorf("leaf package %s imports %s (%s): leaf packages never import node, engine, adminapi or cli",
				name, strings.TrimPrefix(chain[len(chain)-1], module), short(chain))
		}
	}
	if leaves < 20 {
		t.Fatalf("only %d leaf packages found: is `go list` listing the module?", leaves)
	}
}

// Subpackages of internal/cli (orgcmd) are the command line too: they may
// talk to the admin API.

// isNodeRoom reports whether name is one of the node's own packages
// (internal/node/peers, routing, ...): parts of the composition root with
// a state of their own, which serve their admin API area.
func isNodeRoom(name string) bool { return strings.HasPrefix(name, "internal/node/") }

// TestNodeRoomsStayBelowTheNode: the node's own packages may use the admin
// API's types (each serves its area), but never import the node, the
// engine or the CLI: the node wires them, not the other way round.
func TestNodeRoomsStayBelowTheNode(t *testing.T) {
	pkgs := list(t)
	imports := make(map[string][]string, len(pkgs))
	for _, p := range pkgs {
		imports[p.ImportPath] = p.Imports
	}
	above := map[string]bool{module + "internal/node": true, module + "internal/engine": true, module + "internal/cli": true}
	rooms := 0
	for _, p := range pkgs {
		name := strings.TrimPrefix(p.ImportPath, module)
		if !isNodeRoom(name) {
			continue
		}
		rooms++
		if chain := pathTo(imports, p.ImportPath, above); chain != nil {
			t.Errorf("node package %s imports %s (%s): the node's own packages never import node, engine or cli",
				name, strings.TrimPrefix(chain[len(chain)-1], module), short(chain))
		}
	}
	if rooms < 3 {
		t.Fatalf("only %d packages under internal/node/ found", rooms)
	}
}

func upperSet() map[string]bool {
	m := make(map[string]bool, len(upper))
	for _, u := range upper {
		m[module+u] = true
	}
	return m
}

// pathTo returns an import chain from from to a package in to, or nil.
// Breadth first: the chain it reports is a shortest one.
func pathTo(imports map[string][]string, from string, to map[string]bool) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, q := range imports[p] {
			if _, seen := prev[q]; seen {
				continue
			}
			prev[q] = p
			if to[q] {
				var chain []string
				for c := q; c != ""; c = prev[c] {
					chain = append(chain, c)
				}
				slices.Reverse(chain)
				return chain
			}
			queue = append(queue, q)
		}
	}
	return nil
}

func short(chain []string) string {
	out := make([]string, len(chain))
	for i, c := range chain {
		out[i] = strings.TrimPrefix(c, module)
	}
	return strings.Join(out, " -> ")
}

// list runs `go list -deps -json` over the module: every package of it
// and everything they import, each with its direct imports (not its
// tests').
func list(t *testing.T) []pkg {
	t.Helper()
	return goList[pkg](t, "-deps", "-json=ImportPath,Imports", module+"...")
}

// goList runs `go list` with args and decodes its stream of JSON objects.
func goList[T any](t *testing.T, args ...string) []T {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goCmd, append([]string{"list"}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var items []T
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var v T
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		items = append(items, v)
	}
	return items
}
