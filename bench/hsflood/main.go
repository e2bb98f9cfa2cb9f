// Command hsflood is the attacker of the benchmark's handshake-flood part
// (go run ./bench -only flood). It sends WireGuard handshake initiations
// with a valid mac1 for a victim's public key, from throwaway keys, as
// fast as one core allows, each from one of many source addresses:
//
//	one64   addresses spread over one /64 (-one64; -sources of them)
//	many64  one address in each of -sources /64s of -many64
//	smart   one address in each of -smart-sources /64s of -many64, and it
//	        answers the victim's cookie replies: it opens each cookie and
//	        from then on sends that source's initiations with a valid
//	        mac2, as an attacker who owns its /64s can
//
// The addresses need not be configured: the socket has IPV6_FREEBIND,
// and each message carries its source in an IPV6_PKTINFO control message
// (marshalled once per address), sent with sendmmsg in batches of -batch
// (golang.org/x/net/ipv6 WriteBatch). For the victim's replies to come
// back, the prefixes must be local (`ip -6 route add local PREFIX dev lo`)
// and routed to this namespace on the victim's side.
//
// It prints {"ready":true} once its socket is open, then reads commands
// on stdin, one per line, answering each with one JSON line:
//
//	start MODE HOST:PORT KEY [RATE]  build -pool initiations to KEY (base64) and
//	                                 flood, at most RATE packets/s if given
//	stats                            the running flood's counters
//	stop                             stop, and its final counters
//
// It exits at the end of stdin.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/bench/cmdloop"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// options are the command-line flags.
type options struct {
	bind         string
	one64        string
	many64       string
	sources      int
	smartSources int
	pool         int
	batch        int
}

func main() {
	var o options
	flag.StringVar(&o.bind, "bind", "[::]:40000", "the UDP address to send from (and receive cookie replies on)")
	flag.StringVar(&o.one64, "one64", "2001:db8:a::/64", "the /64 of mode one64")
	flag.StringVar(&o.many64, "many64", "2001:db8:b::/48", "the prefix whose /64s modes many64 and smart use")
	flag.IntVar(&o.sources, "sources", 65536, "source addresses of modes one64 and many64")
	flag.IntVar(&o.smartSources, "smart-sources", 4096, "source addresses (/64s) of mode smart")
	flag.IntVar(&o.pool, "pool", 1024, "initiations built per start, each from its own key")
	flag.IntVar(&o.batch, "batch", 64, "messages per sendmmsg")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "hsflood:", err)
		os.Exit(1)
	}
}

// attacker is the program's state: its socket, source sets and the
// running flood.
type attacker struct {
	o       options
	conn    *net.UDPConn
	pc      *ipv6.PacketConn
	sources map[string]*Sources
	smart   map[string]bool
	flood   *Flood
}

func serve(ctx context.Context, o options) error {
	if o.batch < 1 || o.batch > 1024 || o.pool < 1 || o.sources < 1 || o.smartSources < 1 {
		return errors.New("-batch must be 1..1024; -pool, -sources and -smart-sources positive")
	}
	one, err := netip.ParsePrefix(o.one64)
	if err != nil {
		return fmt.Errorf("-one64: %w", err)
	}
	many, err := netip.ParsePrefix(o.many64)
	if err != nil {
		return fmt.Errorf("-many64: %w", err)
	}
	a := &attacker{o: o, sources: map[string]*Sources{}, smart: map[string]bool{"smart": true}}
	if a.sources["one64"], err = oneSlash64(one, o.sources); err != nil {
		return fmt.Errorf("-one64: %w", err)
	}
	if a.sources["many64"], err = manySlash64(many, o.sources); err != nil {
		return fmt.Errorf("-many64: %w", err)
	}
	if a.sources["smart"], err = manySlash64(many, o.smartSources); err != nil {
		return fmt.Errorf("-many64: %w", err)
	}
	if err := a.open(); err != nil {
		return err
	}
	defer a.conn.Close()
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "bind": a.conn.LocalAddr().String()})
	err = cmdloop.Serve(ctx, os.Stdin, out, a.command)
	if a.flood != nil {
		a.flood.Stop()
	}
	return err
}

// open makes the socket: IPV6_FREEBIND so that any source address goes,
// destination addresses of what arrives (for the smart flood), and large
// buffers.
func (a *attacker) open() error {
	addr, err := net.ResolveUDPAddr("udp6", a.o.bind)
	if err != nil {
		return fmt.Errorf("-bind: %w", err)
	}
	conn, err := net.ListenUDP("udp6", addr)
	if err != nil {
		return err
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return err
	}
	var serr error
	rc.Control(func(fd uintptr) {
		serr = errors.Join(
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20),
		)
	})
	if serr != nil {
		conn.Close()
		return fmt.Errorf("socket options (run as root): %w", serr)
	}
	pc := ipv6.NewPacketConn(conn)
	if err := pc.SetControlMessage(ipv6.FlagDst, true); err != nil {
		conn.Close()
		return err
	}
	a.conn, a.pc = conn, pc
	return nil
}

// poolAnswer is the answer to start.
type poolAnswer struct {
	Mode        string  `json:"mode"`
	Sources     int     `json:"sources"`
	Pool        int     `json:"pool"`
	PoolSeconds float64 `json:"pool_seconds"` // building the initiations
}

func (a *attacker) command(_ context.Context, f []string) (any, error) {
	switch {
	case f[0] == "start" && (len(f) == 4 || len(f) == 5):
		if a.flood != nil {
			return nil, errors.New("a flood is running: stop it first")
		}
		src := a.sources[f[1]]
		if src == nil {
			return nil, fmt.Errorf("mode %q: want one64, many64 or smart", f[1])
		}
		target, err := netip.ParseAddrPort(f[2])
		if err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		victim, err := identity.ParsePublicKey(f[3])
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		var rate float64
		if len(f) == 5 {
			if rate, err = strconv.ParseFloat(f[4], 64); err != nil || rate <= 0 {
				return nil, fmt.Errorf("rate %q: want packets per second", f[4])
			}
		}
		t0 := time.Now()
		pool, err := Pool(victim, a.o.pool)
		if err != nil {
			return nil, err
		}
		took := time.Since(t0).Seconds()
		a.flood = startFlood(f[1], a.conn, a.pc, target, victim, src, pool, a.smart[f[1]], a.o.batch, rate)
		return poolAnswer{Mode: f[1], Sources: len(src.Addrs), Pool: len(pool), PoolSeconds: took}, nil
	case f[0] == "stats" && len(f) == 1:
		if a.flood == nil {
			return nil, errors.New("no flood is running")
		}
		return a.flood.Stats(), nil
	case f[0] == "stop" && len(f) == 1:
		if a.flood == nil {
			return nil, errors.New("no flood is running")
		}
		a.flood.Stop()
		st := a.flood.Stats()
		a.flood = nil
		return st, nil
	}
	return nil, errors.New("want: start one64|many64|smart HOST:PORT KEY [RATE], stats, or stop")
}
