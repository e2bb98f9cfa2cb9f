package transport

import "github.com/tomoe-net/tomoe/internal/noise"

// WireGuard message layout, by the names the Bind uses (package noise has
// the handshake itself).
const (
	msgInitiation = noise.TypeInitiation
	msgResponse   = noise.TypeResponse
	msgCookie     = noise.TypeCookie
	msgTransport  = noise.TypeTransport

	initiationSize = noise.InitiationSize
	responseSize   = noise.ResponseSize
)
