package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestReloadDevicesOnExistingPeerEndsDirectSession: a reload that adds
// devices = [D] to a static peer already in the file (updated in place)
// ends D's direct (dynamic) session, as for a newly added peer: D's
// address is now the home's in the device, and D's own record would win
// lookups by address and take the AllowedIP back when re-activated.
func TestReloadDevicesOnExistingPeerEndsDirectSession(t *testing.T) {
	h, n, d := prepare(t, "home"), prepare(t, "n"), prepare(t, "device")
	h.start(t, "")
	kd := d.key.Public().String()
	n.startFile(t, peerDoc(h)+allowDoc(kd, "tcp", "7"))
	n.echoServer(t, 7)
	d.start(t, peerDoc(n))
	testnet.WaitFor(t, 15*time.Second, "the device's direct session", func() bool {
		c, err := d.dial(n.Address(), 7, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	n.writeConfig(t, peerDoc(h)+fmt.Sprintf("devices = [%q]\n", kd)+allowDoc(kd, "tcp", "7"))
	n.reload(t)
	n.peers.Lock()
	direct := n.peers.Get(d.key.Public())
	byDev := n.peers.ByDevice(d.key.Public().Address())
	n.peers.Unlock()
	if byDev == nil || byDev.Key != h.key.Public() {
		t.Fatalf("the device is not the home's after the reload: %v", byDev)
	}
	if direct != nil {
		t.Fatalf("the device %s kept its direct session after its home's entry gained devices = [it] (active %v)", d.key.Public().ShortString(), direct.Active)
	}
}
