package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
)

func TestPrintConsole(t *testing.T) {
	now := time.Now().UTC().Format(time.RFC3339)
	v := adminapi.ConsoleView{
		Nodes: []adminapi.ConsoleNode{
			{Address: "fc00::1", Name: "ops@acme", Self: true, State: "online", Since: now, Version: "1", Rules: []adminapi.Rule{}},
			{Address: "fc00::2", Name: "web1.acme", State: "online", Since: now, Version: "1", Peers: 3, Direct: 2, Relayed: 1, Rules: []adminapi.Rule{{}}},
			{Address: "fc00::3", State: "unreachable", Since: now, Error: "context deadline exceeded"},
		},
		Matrix: []adminapi.ConsoleCell{
			{From: "fc00::1", To: "fc00::2", Allow: []string{"tcp 22"}, Deny: []string{"udp"}},
			{From: "fc00::3", To: "fc00::2", Allow: []string{}},
		},
	}
	var out bytes.Buffer
	printConsole(&globals{stdout: &out}, v)
	t.Log("\n" + out.String())
	for _, want := range []string{"ops@acme (this node)", "unreachable: context deadline exceeded", "3 (2/1)", "tcp 22,!udp", "from\\to"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
	// The unreachable node's row says "-" (default deny) under node 2.
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "3 ") && strings.Fields(line)[1] != "-" {
			t.Errorf("row of node 3: %q", line)
		}
	}
}
