package e2e

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
)

// Another user cannot use the admin API: the socket is 0600, and even if
// its mode is opened up, the node closes connections from other users.
func TestAdminSocketRefusesOtherUsers(t *testing.T) {
	parallel(t, 5*time.Second)
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to run a client as another user; CI runs as root")
	}
	n := newNodeDir(t, "adm")
	os.Chmod(n.dir, 0o755) // let the other user reach the socket file itself
	n.write(t, "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n")
	startUp(t, n)
	info, err := os.Stat(n.socket())
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", info.Mode(), err)
	}
	asNobody := func() (string, int) {
		cmd := exec.Command(tomoeBin, "status", "--socket", n.socket())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	if out, code := asNobody(); code != 1 || !strings.Contains(out, "permission denied") {
		t.Fatalf("another user with the 0600 socket: exit %d\n%s", code, out)
	}
	os.Chmod(n.socket(), 0o666)
	if out, code := asNobody(); code != 1 || strings.Contains(out, n.addr()) || strings.Contains(out, "permission denied") {
		t.Fatalf("another user with a world-writable socket got through: exit %d\n%s", code, out)
	}
	n.cli(t, "status") // the node's own user still can
}

// The node answers nothing that is not a valid handshake from an allowed
// key: garbage, a forged initiation, and a real initiation from a key no
// rule allows all get silence.
func TestSilentToUnauthenticatedPackets(t *testing.T) {
	parallel(t, 10*time.Second)
	n := newNodeDir(t, "quiet")
	n.write(t, "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n")
	startUp(t, n)
	var st adminapi.Status
	n.cliJSON(t, &st, "status")
	target := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: st.ListenPort}

	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	probes := [][]byte{{}, []byte("hello?"), make([]byte, 148), make([]byte, 1400)}
	rnd := make([]byte, 148)
	rand.Read(rnd)
	rnd[0], rnd[1], rnd[2], rnd[3] = 1, 0, 0, 0 // initiation-shaped, bad mac1
	probes = append(probes, rnd)
	for i := byte(1); i <= 4; i++ {
		m := make([]byte, 64)
		m[0] = i
		probes = append(probes, m)
	}
	for _, p := range probes {
		sock.WriteToUDP(p, target)
	}

	// A genuine WireGuard peer whose key no rule allows.
	stranger, _ := identity.GeneratePrivateKey()
	tt := tuntest.NewChannelTUN()
	dev := device.NewDevice(tt.TUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer dev.Close()
	raw, pub := stranger.Raw(), n.pub()
	if err := dev.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=0\npublic_key=%x\nendpoint=%s\nallowed_ip=fc00::/8\n", raw[:], pub[:], target)); err != nil {
		t.Fatal(err)
	}
	dev.Up()
	tt.Outbound <- packet.EchoRequest(stranger.Public().Address(), n.pub().Address(), 1, 1, nil)

	sock.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2048)
	if k, from, err := sock.ReadFromUDP(buf); err == nil {
		t.Fatalf("the node answered a probe: %d bytes from %v: %x", k, from, buf[:k])
	}
	time.Sleep(time.Second)
	s, _ := dev.IpcGet()
	if !strings.Contains(s, "last_handshake_time_sec=0\n") {
		t.Fatalf("the stranger completed a handshake:\n%s", s)
	}
	n.cliJSON(t, &st, "status")
	if st.Counters.HandshakeDenied == 0 {
		t.Fatalf("the stranger's handshake was not counted: %+v", st.Counters)
	}
}
