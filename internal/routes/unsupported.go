//go:build !linux && !darwin && !windows

package routes

import (
	"errors"
	"net/netip"
	"runtime"
	"syscall"
)

var goos = runtime.GOOS

var errKernelMode = errors.New("kernel mode is not supported on " + runtime.GOOS + ": set tun.mode = \"userspace\"")

func configureOS(name string, addr, ipv4 netip.Addr, mtu int) error { return errKernelMode }

func routeOS(add bool, name string, p netip.Prefix) error { return errKernelMode }

func bindToDevice(dev, network string, c syscall.RawConn) error { return errKernelMode }
