package services

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"
)

// SOCKS5 reply codes (RFC 1928 section 6). The node's Dialer errors can
// return them through SOCKSReplier.
const (
	SOCKSSucceeded           byte = 0x00
	SOCKSGeneralFailure      byte = 0x01
	SOCKSNotAllowed          byte = 0x02 // connection not allowed by ruleset
	SOCKSNetworkUnreachable  byte = 0x03
	SOCKSHostUnreachable     byte = 0x04
	SOCKSConnectionRefused   byte = 0x05
	SOCKSTTLExpired          byte = 0x06
	SOCKSCommandNotSupported byte = 0x07
	SOCKSAddressNotSupported byte = 0x08
)

// SOCKSReplier is implemented by Dialer and Resolver errors that decide
// their SOCKS5 reply code themselves (a policy denial can say
// SOCKSNotAllowed, "no peer for this address" SOCKSHostUnreachable). It is
// found anywhere in the error's chain (errors.As) and takes precedence over
// the built-in mapping. The HTTP CONNECT proxy derives its status and cause
// from the same code.
type SOCKSReplier interface {
	SOCKSReply() byte
}

// dialFailure is what a failed resolve or dial tells each proxy's client.
type dialFailure struct {
	reply  byte   // SOCKS5 reply code
	status int    // HTTP CONNECT response status
	cause  string // short cause for the HTTP body and logs
}

// gVisor's gonet adapter returns connect failures as errors.New(tcpip.Error
// String()), so in userspace mode these texts stand in for the errnos.
const (
	gvisorRefused     = "connection was refused"
	gvisorNetUnreach  = "network is unreachable"
	gvisorHostUnreach = "no route to host"
	gvisorTimeout     = "operation timed out"
)

// classifyDialError maps a connect error to a SOCKS5 reply and HTTP status:
// an error's own SOCKSReply first, then resolver failures and timeouts
// (host unreachable / 504), refused (0x05), network unreachable (0x03), host
// unreachable (0x04), anything else general failure (0x01).
func classifyDialError(err error) dialFailure {
	var r SOCKSReplier
	if errors.As(err, &r) {
		return failureFromReply(r.SOCKSReply())
	}
	var re *resolveError
	switch {
	case errors.As(err, &re):
		return dialFailure{SOCKSHostUnreachable, http.StatusBadGateway, "unknown host"}
	case isTimeout(err):
		return dialFailure{SOCKSHostUnreachable, http.StatusGatewayTimeout, "timed out"}
	case errors.Is(err, syscall.ECONNREFUSED) || hasText(err, gvisorRefused):
		return failureFromReply(SOCKSConnectionRefused)
	case errors.Is(err, syscall.ENETUNREACH) || hasText(err, gvisorNetUnreach):
		return failureFromReply(SOCKSNetworkUnreachable)
	case errors.Is(err, syscall.EHOSTUNREACH) || hasText(err, gvisorHostUnreach):
		return failureFromReply(SOCKSHostUnreachable)
	}
	return failureFromReply(SOCKSGeneralFailure)
}

// failureFromReply gives the HTTP status and cause for a SOCKS5 reply code.
func failureFromReply(code byte) dialFailure {
	f := dialFailure{reply: code, status: http.StatusBadGateway}
	switch code {
	case SOCKSNotAllowed:
		f.cause = "not allowed"
	case SOCKSNetworkUnreachable:
		f.cause = "network unreachable"
	case SOCKSHostUnreachable:
		f.cause = "no route to host"
	case SOCKSConnectionRefused:
		f.cause = "connection refused"
	case SOCKSTTLExpired:
		f.status, f.cause = http.StatusGatewayTimeout, "timed out"
	default:
		f.cause = "connect failed"
	}
	return f
}

// isTimeout reports whether err is a deadline or connect timeout.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) || hasText(err, gvisorTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hasText reports whether some error in err's Unwrap chain has exactly the
// message text.
func hasText(err error, text string) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if err.Error() == text {
			return true
		}
	}
	return false
}
