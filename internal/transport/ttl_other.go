//go:build !linux

package transport

import "golang.zx2c4.com/wireguard/conn"

// newStdBind returns the host's UDP sockets; only Linux's can send with
// a chosen TTL here.
func newStdBind() conn.Bind { return conn.NewStdNetBind() }
