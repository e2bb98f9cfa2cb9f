package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// uiPages are the web UI's pages, by the name their screenshot gets.
var uiPages = []struct{ name, path string }{
	{"overview", "/"}, {"peers", "/peers"}, {"policy", "/policy"}, {"routes", "/routes"},
	{"services", "/services"}, {"bridges", "/bridges"}, {"events", "/events"}, {"console", "/console"},
}

// browser is a headless Chromium tab and what its console said.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	msgs []string // console errors and warnings, exceptions, browser log errors
}

// newBrowser starts Debian's chromium, or skips the test when it is not
// installed.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Skip("chromium is not installed (apt-get install chromium): the web UI browser test needs a real browser")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("user-data-dir", t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleLog, "info", "debug":
				continue
			}
			b.mu.Lock()
			b.msgs = append(b.msgs, fmt.Sprintf("%s: %s (%s)", m.Type, m.Text, m.URL))
			b.mu.Unlock()
		}
	}()
	return b
}

// do runs actions, failing the test on an error.
func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true in the page,
// across navigations (a submitted form loads a new page).
func (b *browser) waitJS(t *testing.T, what, expr string, d time.Duration) {
	t.Helper()
	testnet.WaitFor(t, d, what, func() bool {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		return err == nil && ok
	})
}

func (b *browser) console() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.msgs...)
}

// The web UI in a real browser: log in with the URL `tomoe ui` prints,
// see a peer appear live, add a rule with the form and see a real TCP
// connection through it, revoke it with a click and see the connection
// cut; a second use of the login URL and a forged cross-site POST are
// refused; every page works at 360 px without console errors.
func TestWebUIInBrowser(t *testing.T) {
	parallel(t, 55*time.Second)
	b := newBrowser(t)
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go testnet.Echo(echo)

	alice, bob := newNodeDir(t, "alice"), newNodeDir(t, "bob")
	// alice exposes the echo service on port 7000 and lets bob in for
	// ICMP only: bob's handshake is admitted, his TCP is not.
	alice.write(t, "web = \"127.0.0.1:0\"\n[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n[bridge]\nenable = true\n"+
		fmt.Sprintf("[[expose]]\nport = 7000\ntarget = %q\n", echo.Addr().String())+allowBlock(bob.addr(), "icmp", ""))
	startUp(t, alice)
	var ast adminapi.Status
	alice.cliJSON(t, &ast, "status")
	fwd := filepath.Join(bob.dir, "fwd.sock")
	bob.write(t, "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n"+
		peerBlock(alice, fmt.Sprintf("127.0.0.1:%d", ast.ListenPort))+allowBlock(alice.addr(), "icmp", "")+
		fmt.Sprintf("[[connect]]\nlocal = %q\nremote = \"[%s]:7000\"\n", fwd, alice.addr()))

	if r := run(t, "", "ui", "--bogus", "--socket", alice.socket()); r.code != 2 {
		t.Fatalf("tomoe ui --bogus: %+v", r)
	}
	// Log in with the printed URL; it lands on the overview.
	loginURL := strings.TrimSpace(alice.cli(t, "ui"))
	if !strings.HasPrefix(loginURL, "http://127.0.0.1:") || !strings.Contains(loginURL, "/login?token=") {
		t.Fatalf("tomoe ui printed %q", loginURL)
	}
	base := loginURL[:strings.Index(loginURL, "/login")]
	b.do(t, "log in", chromedp.Navigate(loginURL))
	b.waitJS(t, "the overview", `location.pathname === "/" && document.body.innerText.includes(`+jsString(alice.addr())+`)`, 10*time.Second)
	if !eval[bool](t, b, `document.querySelector("img[src='/qr.png']").naturalWidth > 100`) {
		t.Fatal("the overview's QR code did not load")
	}

	// The same URL again, from anywhere: refused.
	resp, err := http.Get(loginURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("second use of the login URL: %s", resp.Status)
	}

	// The peers page, open while bob starts: his row appears without a reload.
	b.do(t, "peers page", chromedp.Navigate(base+"/peers"))
	b.waitJS(t, "the live stream", `document.getElementById("live").textContent.startsWith("Live: following")`, 10*time.Second)
	eval[bool](t, b, `window.notReloaded = true`)
	startUp(t, bob)
	mustRun(t, "ping", alice.addr(), "-c", "1", "-W", "8s", "--socket", bob.socket())
	bobRow := `document.querySelector('tr[data-peer="` + bob.addr() + `"]')`
	b.waitJS(t, "bob's row on the peers page", bobRow+` !== null && `+bobRow+`.textContent.includes("up") && window.notReloaded === true`, 15*time.Second)

	// bob's TCP to alice's service is refused: no rule admits it.
	dial := func() (net.Conn, error) { return net.DialTimeout("unix", fwd, 2*time.Second) }
	if c, err := dial(); err == nil {
		err = testnet.RoundTrip(c, "before", 2*time.Second)
		c.Close()
		if err == nil {
			t.Fatal("bob reached alice's service before any rule allowed it")
		}
	}

	// Add the rule with the form, by keyboard-reachable fields.
	b.do(t, "policy page", chromedp.Navigate(base+"/policy"))
	b.do(t, "fill the rule form",
		chromedp.SendKeys("#rule-from", bob.pub().String()),
		chromedp.SetValue("#rule-proto", "tcp"),
		chromedp.SendKeys("#rule-ports", "7000"),
		chromedp.Click("#add-rule button[type=submit]"),
	)
	ruleRow := `document.querySelector('tr[data-from="` + bob.pub().String() + `"][data-action="allow"]')`
	b.waitJS(t, "the new rule's row", ruleRow+` !== null && document.querySelector(".flash").textContent.includes("allowed")`, 10*time.Second)
	var conn net.Conn
	testnet.WaitFor(t, 15*time.Second, "bob's TCP connection through the new rule", func() bool {
		c, err := dial()
		if err != nil {
			return false
		}
		if testnet.RoundTrip(c, "hello", 2*time.Second) != nil {
			c.Close()
			return false
		}
		conn = c
		return true
	})
	defer conn.Close()

	// Explain says so.
	b.do(t, "explain", chromedp.SendKeys("#ex-from", bob.addr()), chromedp.SendKeys("#ex-port", "7000"), chromedp.Click("#explain button[type=submit]"))
	b.waitJS(t, "the explanation", `document.getElementById("explain-answer") !== null && document.getElementById("explain-answer").textContent.startsWith("allow")`, 10*time.Second)

	// The events page follows changes made elsewhere (here by the CLI),
	// and its filter hides the others.
	b.do(t, "events page", chromedp.Navigate(base+"/events"))
	b.waitJS(t, "the live stream", `document.getElementById("live").textContent.startsWith("Live: following")`, 10*time.Second)
	carol := newNodeDir(t, "carol") // a key only, never started
	alice.cli(t, "policy", "allow", carol.addr(), "--proto", "udp", "--ports", "9")
	b.waitJS(t, "the policy_allow event", `document.getElementById("event-log").textContent.includes("policy_allow")`, 10*time.Second)
	b.do(t, "filter", chromedp.SendKeys("#event-filter", "no-such-event"))
	b.waitJS(t, "the filter", `[...document.querySelectorAll("#event-log li")].every(li => li.hidden)`, 5*time.Second)
	alice.cli(t, "policy", "revoke", carol.addr())

	// The other pages' forms: an accept rule, an exposed service, a
	// bridge join token.
	b.do(t, "routes page", chromedp.Navigate(base+"/routes"),
		chromedp.SendKeys("#accept-from", bob.addr()), chromedp.SendKeys("#accept-prefix", "10.9.0.0/24"),
		chromedp.Click("#accept-route button[type=submit]"))
	b.waitJS(t, "the accept rule", `document.body.innerText.includes("10.9.0.0/24") && document.querySelector(".flash").textContent.includes("accept 10.9.0.0/24 done")`, 10*time.Second)
	b.do(t, "services page", chromedp.Navigate(base+"/services"),
		chromedp.SendKeys("#exp-port", "7001"), chromedp.SendKeys("#exp-target", echo.Addr().String()),
		chromedp.Click("#expose button[type=submit]"))
	b.waitJS(t, "the exposed service", `document.body.innerText.includes("]:7001") && document.querySelector(".flash").textContent.includes("exposed tcp/7001")`, 10*time.Second)
	b.do(t, "bridges page", chromedp.Navigate(base+"/bridges"), chromedp.Click("#join-token button[type=submit]"))
	b.waitJS(t, "the join token", `document.querySelector(".flash") !== null && document.querySelector(".flash").textContent.includes("join token (shown once; 1 uses")`, 10*time.Second)
	var sv adminapi.Services
	alice.cliJSON(t, &sv, "expose")
	var rt adminapi.Routes
	alice.cliJSON(t, &rt, "routes")
	if len(sv.Expose) != 2 || len(rt.Accept) != 1 || rt.Accept[0].Prefix != "10.9.0.0/24" {
		t.Fatalf("after the forms: services %+v, routes %+v", sv, rt)
	}

	// Each page at 360 px: nothing wider than the screen, every field
	// labelled; and a screenshot of each for docs/ui/.
	shots := os.Getenv("TOMOE_UI_SCREENSHOTS")
	if shots != "" {
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, width := range []int64{1024, 360} {
		b.do(t, "viewport", chromedp.EmulateViewport(width, 800))
		for _, p := range uiPages {
			b.do(t, p.name, chromedp.Navigate(base+p.path))
			b.waitJS(t, p.name+" loaded", `document.readyState === "complete" && document.querySelector("main h1") !== null`, 10*time.Second)
			if w := eval[int](t, b, `document.documentElement.scrollWidth`); width == 360 && w > 360 {
				t.Errorf("%s at 360 px is %d px wide: %s", p.name, w, eval[string](t, b, `[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > 361).map(e => e.tagName + "." + e.className + "#" + e.id).slice(0, 8).join(" ")`))
			}
			if !eval[bool](t, b, `[...document.querySelectorAll("input:not([type=hidden]), select")].every(e => e.labels.length > 0) &&
				[...document.querySelectorAll("button")].every(e => e.textContent.trim() !== "")`) {
				t.Errorf("%s: a field without a label or a button without a name", p.name)
			}
			if p.name == "peers" && width == 1024 {
				// The page pings peers that are up (bob lets alice's ICMP
				// in) and draws their byte rate.
				b.waitJS(t, "bob's RTT and rate graph", bobRow+` !== null && / ms/.test(`+bobRow+`.textContent) && `+bobRow+`.querySelector("svg polyline") !== null && `+bobRow+`.querySelector("svg polyline").getAttribute("points").split(" ").length >= 3`, 20*time.Second)
			}
			file := p.name + ".png"
			if width == 360 {
				file = p.name + "-360.png"
			}
			if shots != "" && (width == 1024 || p.name == "overview" || p.name == "peers") {
				if p.name == "events" && width == 1024 {
					// Something to show: events arrive while the page is open.
					alice.cli(t, "policy", "allow", carol.addr(), "--proto", "udp", "--ports", "9")
					alice.cli(t, "policy", "revoke", carol.addr())
					b.waitJS(t, "the events", `document.querySelectorAll("#event-log li").length >= 2`, 10*time.Second)
				}
				ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
				png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
				cancel()
				if err != nil {
					t.Fatalf("screenshot %s: %v", p.name, err)
				}
				if err := os.WriteFile(filepath.Join(shots, file), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Undo by clicks.
	b.do(t, "unaccept", chromedp.Navigate(base+"/routes"), chromedp.Click(`form[data-prefix="10.9.0.0/24"] button`))
	b.waitJS(t, "the accept rule gone", `document.querySelector(".flash") !== null && document.querySelector(".flash").textContent.includes("unaccept") && !document.body.innerText.includes("10.9.0.0/24 from")`, 10*time.Second)
	b.do(t, "remove the service", chromedp.Navigate(base+"/services"), chromedp.Click(`form[data-port="7001"] button`))
	b.waitJS(t, "the service gone", `document.querySelector(".flash") !== null && document.querySelector(".flash").textContent.includes("removed tcp/7001") && !document.body.innerText.includes("]:7001")`, 10*time.Second)
	alice.cliJSON(t, &sv, "expose")
	alice.cliJSON(t, &rt, "routes")
	if len(sv.Expose) != 1 || len(rt.Accept) != 0 {
		t.Fatalf("after the clicks: services %+v, routes %+v", sv, rt)
	}

	// Revoke with a click: the open connection is cut, a new one refused.
	b.do(t, "wide again", chromedp.EmulateViewport(1024, 800))
	b.do(t, "policy page", chromedp.Navigate(base+"/policy"))
	b.do(t, "revoke", chromedp.Click(`tr[data-from="`+bob.pub().String()+`"] button`))
	b.waitJS(t, "the rule gone", ruleRow+` === null && document.querySelector(".flash").textContent.includes("revoked")`, 10*time.Second)
	if err := testnet.RoundTrip(conn, "after revoke", 3*time.Second); err == nil {
		t.Fatal("the open connection still works after the revocation")
	}
	if c, err := dial(); err == nil {
		err = testnet.RoundTrip(c, "new after revoke", 2*time.Second)
		c.Close()
		if err == nil {
			t.Fatal("a new connection works after the revocation")
		}
	}

	if msgs := b.console(); len(msgs) > 0 {
		t.Errorf("console messages on the UI's pages:\n%s", strings.Join(msgs, "\n"))
	}

	// A forged cross-site POST: a page on another origin (another port
	// of this host: the same site, so the browser sends the session
	// cookie) submits a form to the UI. Refused with 403; nothing changed.
	var before []adminapi.Rule
	alice.cliJSON(t, &before, "policy", "list")
	evil := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/policy/add"><input name="from" value="*"><input name="proto" value="tcp"><input name="ports" value="1-65535"><input name="csrf" value="guess"></form><script>document.getElementById("f").submit()</script>`, base)
	})}
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go evil.Serve(eln)
	defer evil.Close()
	b.do(t, "the forged page", chromedp.Navigate("http://"+eln.Addr().String()+"/"))
	b.waitJS(t, "the forged POST's answer", `location.href === `+jsString(base+"/policy/add")+` && document.body.innerText.includes("forbidden")`, 10*time.Second)
	var after []adminapi.Rule
	alice.cliJSON(t, &after, "policy", "list")
	if len(after) != len(before) {
		t.Fatalf("the forged POST changed the policy: %+v -> %+v", before, after)
	}

	// A node without [admin] web: `tomoe ui` says how to turn it on.
	if r := run(t, "", "ui", "--socket", bob.socket()); r.code != 1 || !strings.Contains(r.stderr, `web = "127.0.0.1:4680"`) {
		t.Fatalf("tomoe ui on a node without the web UI: %+v", r)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string { return fmt.Sprintf("%q", s) }
