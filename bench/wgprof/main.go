// Command wgprof is plain wireguard-go, as the pinned module's library
// runs it, with a CPU profile to be had: the benchmark profiles it beside
// tomoe, and the wireguard-go command has no profiling hook. It takes
// the same arguments as `wireguard-go -f IFNAME` (foreground only), is
// configured the same way (wg(8) over the UAPI socket), and serves
// net/http/pprof on the unix socket named by $WGPROF_SOCKET.
//
//	WGPROF_SOCKET=/tmp/wg.pprof.sock wgprof -f wg0
package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // the point of this program
	"os"
	"os/signal"
	"syscall"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

func main() {
	if len(os.Args) != 3 || os.Args[1] != "-f" {
		fmt.Fprintln(os.Stderr, "usage: WGPROF_SOCKET=PATH wgprof -f IFNAME")
		os.Exit(2)
	}
	if err := run(os.Args[2], os.Getenv("WGPROF_SOCKET")); err != nil {
		fmt.Fprintln(os.Stderr, "wgprof:", err)
		os.Exit(1)
	}
}

func run(name, sock string) error {
	if sock == "" {
		return errors.New("WGPROF_SOCKET is not set")
	}
	os.Remove(sock)
	pl, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer pl.Close()
	go http.Serve(pl, nil) // http.DefaultServeMux has /debug/pprof/

	tdev, err := tun.CreateTUN(name, device.DefaultMTU)
	if err != nil {
		return fmt.Errorf("create TUN %s: %w", name, err)
	}
	logger := device.NewLogger(device.LogLevelError, "("+name+") ")
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), logger)
	defer dev.Close()
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return fmt.Errorf("UAPI: %w", err)
	}
	uapi, err := ipc.UAPIListen(name, f)
	if err != nil {
		return fmt.Errorf("UAPI: %w", err)
	}
	defer uapi.Close()
	go func() {
		for {
			c, err := uapi.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, os.Interrupt)
	select {
	case <-term:
	case <-dev.Wait():
	}
	return nil
}
