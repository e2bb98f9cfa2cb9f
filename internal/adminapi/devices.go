package adminapi

import (
	"context"
	"net/http"
)

// Device is one plain WireGuard device this node hosts (GET /v1/devices).
type Device struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	Address   string `json:"address"`
	Added     string `json:"added"` // RFC 3339
	// Endpoint is where the device was last seen ("ip:port"), or null.
	Endpoint *string `json:"endpoint"`
	// LastHandshake is RFC 3339, or null if there has been none.
	LastHandshake *string `json:"last_handshake"`
	// Up is true while a session established by a handshake is valid.
	Up      bool   `json:"up"`
	RxBytes uint64 `json:"rx_bytes"`
	TxBytes uint64 `json:"tx_bytes"`
}

// DeviceAddRequest is POST /v1/devices/add.
type DeviceAddRequest struct {
	Name string `json:"name"`
	// Endpoint is "host:port" where the device reaches this node; empty:
	// the one this node knows for itself (an error if it knows none).
	Endpoint string `json:"endpoint,omitempty"`
}

// DeviceAddResponse carries the new device and its wg-quick configuration,
// the only copy of its private key: the node keeps none.
type DeviceAddResponse struct {
	Device Device `json:"device"`
	Config string `json:"config"`
	// Peers is the line other nodes' config needs on this node's peer
	// entry for them to accept the device's traffic from it.
	Peers string `json:"peers"`
}

// DeviceRemoveRequest is POST /v1/devices/remove.
type DeviceRemoveRequest struct {
	// Device is a name, public key or node address.
	Device string `json:"device"`
}

// Devices is GET /v1/devices.
func (c *Client) Devices(ctx context.Context) ([]Device, error) {
	var d []Device
	err := c.do(ctx, http.MethodGet, "/v1/devices", nil, &d)
	return d, err
}

// AddDevice is POST /v1/devices/add.
func (c *Client) AddDevice(ctx context.Context, req DeviceAddRequest) (DeviceAddResponse, error) {
	var r DeviceAddResponse
	err := c.do(ctx, http.MethodPost, "/v1/devices/add", req, &r)
	return r, err
}

// RemoveDevice is POST /v1/devices/remove.
func (c *Client) RemoveDevice(ctx context.Context, req DeviceRemoveRequest) (Device, error) {
	var d Device
	err := c.do(ctx, http.MethodPost, "/v1/devices/remove", req, &d)
	return d, err
}
