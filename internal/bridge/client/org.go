package client

import (
	"fmt"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// The client is only a transport for the node's organisation engine
// (certificates, revocation lists, organisation policies: package
// orgsync): SendOrg seals one orgsync message to a bridge, and
// Config.OrgMessage receives those a bridge sends; Config.OnRegistered
// says when a bridge has (again) registered this node, so that the engine
// presents its certificates and its hello.

// SendOrg sends payload (one encoded orgsync message, at most
// wire.MaxOrgData bytes) to the bridge with key bridge, over the path this
// node is registered by (UDP or TCP). It fails if bridge is not one of
// this client's bridges or this node is not registered with it now; a
// message sent may still be lost (the protocol retries).
func (c *Client) SendOrg(bridge identity.PublicKey, payload []byte) error {
	if len(payload) == 0 || len(payload) > wire.MaxOrgData {
		return fmt.Errorf("organisation message of %d bytes: 1..%d", len(payload), wire.MaxOrgData)
	}
	b := c.bridgeByKey(bridge)
	if b == nil {
		return fmt.Errorf("send to bridge %s: not one of this node's bridges", bridge.ShortString())
	}
	if !b.registered() {
		return fmt.Errorf("send to bridge %s (%s): not registered with it now", bridge.ShortString(), b.cfg.Endpoint)
	}
	b.send(wire.Message{Kind: wire.KindOrg, Data: payload})
	return nil
}

// Bridges lists the keys of the bridges this node is registered with now.
func (c *Client) Bridges() []identity.PublicKey {
	var out []identity.PublicKey
	for _, b := range c.bridges {
		if b.registered() {
			out = append(out, b.cfg.Key)
		}
	}
	return out
}
