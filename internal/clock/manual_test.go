package clock

import (
	"slices"
	"sync"
	"testing"
	"time"
)

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sent is the value a Manual timer sent on c. A Manual clock sends
// within Advance, so the value is there already, or was never sent.
func sent(t *testing.T, c <-chan time.Time) time.Time {
	t.Helper()
	select {
	case v := <-c:
		return v
	default:
		t.Fatal("nothing was sent")
		return time.Time{}
	}
}

// Timers fire in the order of their due times, ties in the order they
// were armed, each with Now at its due time; Now ends at the Advance's
// end, and timers beyond it wait.
func TestManualFiresInOrder(t *testing.T) {
	m := NewManual(start)
	var got []string
	at := func(name string, d time.Duration) {
		m.AfterFunc(d, func() {
			got = append(got, name+"@"+m.Now().Sub(start).String())
		})
	}
	at("c", 3*time.Second)
	at("a", time.Second)
	at("b1", 2*time.Second)
	at("b2", 2*time.Second)
	at("later", 10*time.Second)
	m.Advance(5 * time.Second)
	want := []string{"a@1s", "b1@2s", "b2@2s", "c@3s"}
	if !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if now := m.Now(); !now.Equal(start.Add(5 * time.Second)) {
		t.Fatalf("Now %v after Advance(5s)", now)
	}
	if n := m.Pending(); n != 1 {
		t.Fatalf("%d pending, want 1 (later)", n)
	}
	m.Advance(5 * time.Second)
	if got[len(got)-1] != "later@10s" {
		t.Fatalf("fired %v", got)
	}
}

// A timer armed by a firing timer fires in the same Advance if it comes
// due within it, in its place in the order.
func TestManualTimerArmedWhileFiring(t *testing.T) {
	m := NewManual(start)
	var got []time.Duration
	note := func() { got = append(got, m.Now().Sub(start)) }
	m.AfterFunc(time.Second, func() {
		note()
		m.AfterFunc(time.Second, note) // due at 2s
	})
	m.AfterFunc(3*time.Second, note)
	m.Advance(4 * time.Second)
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(got, want) {
		t.Fatalf("fired at %v, want %v", got, want)
	}
}

func TestManualAfterFuncStopReset(t *testing.T) {
	m := NewManual(start)
	fired := 0
	tm := m.AfterFunc(time.Second, func() { fired++ })
	if !tm.Stop() {
		t.Fatal("Stop of an armed timer reported false")
	}
	if tm.Stop() {
		t.Fatal("second Stop reported true")
	}
	m.Advance(2 * time.Second)
	if fired != 0 {
		t.Fatal("a stopped timer fired")
	}
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a stopped timer reported it armed")
	}
	m.Advance(999 * time.Millisecond)
	if fired != 0 {
		t.Fatal("fired early: Reset counts from Now, not from the first arming")
	}
	if !tm.Reset(time.Second) { // pushed back before it came due
		t.Fatal("Reset of an armed timer reported false")
	}
	m.Advance(999 * time.Millisecond)
	if fired != 0 {
		t.Fatal("fired at the time it had before Reset")
	}
	m.Advance(time.Millisecond)
	if fired != 1 {
		t.Fatalf("fired %d times, want 1", fired)
	}
	if tm.Stop() {
		t.Fatal("Stop of a fired timer reported true")
	}
	if tm.C() != nil {
		t.Fatal("an AfterFunc timer has a channel")
	}
}

// A channel timer sends its due time; Stop and Reset drop a value not
// received, as *time.Timer does since Go 1.23.
func TestManualTimerChannel(t *testing.T) {
	m := NewManual(start)
	tm := m.NewTimer(time.Second)
	select {
	case <-tm.C():
		t.Fatal("fired before its time")
	default:
	}
	m.Advance(3 * time.Second)
	if m.Unread() != 1 {
		t.Fatalf("Unread %d, want 1", m.Unread())
	}
	if v := sent(t, tm.C()); !v.Equal(start.Add(time.Second)) {
		t.Fatalf("sent %v, want its due time", v)
	}
	if m.Unread() != 0 {
		t.Fatalf("Unread %d after the receive", m.Unread())
	}

	tm.Reset(time.Second)
	m.Advance(time.Second) // fired, not received
	if !tm.Stop() {
		t.Fatal("Stop with a value unreceived reported false")
	}
	select {
	case v := <-tm.C():
		t.Fatalf("received %v after Stop", v)
	default:
	}
	tm.Reset(time.Second)
	m.Advance(time.Second)
	if !tm.Reset(time.Second) {
		t.Fatal("Reset with a value unreceived reported false")
	}
	select {
	case v := <-tm.C():
		t.Fatalf("received %v, from before Reset", v)
	default:
	}
	m.Advance(time.Second)
	if v := sent(t, tm.C()); !v.Equal(m.Now()) {
		t.Fatalf("sent %v, want %v", v, m.Now())
	}
}

// A timer armed with d <= 0 is due now: the next Advance fires it.
func TestManualZeroDelay(t *testing.T) {
	m := NewManual(start)
	fired := false
	m.AfterFunc(0, func() { fired = true })
	tm := m.NewTimer(-time.Second)
	if fired {
		t.Fatal("fired outside an Advance")
	}
	m.Advance(0)
	if !fired {
		t.Fatal("not fired by Advance(0)")
	}
	if v := sent(t, tm.C()); !v.Equal(start) {
		t.Fatalf("sent %v", v)
	}
	m.Advance(-time.Hour)
	if !m.Now().Equal(start) {
		t.Fatal("a negative Advance moved the clock")
	}
}

// A ticker fires every period; ticks its receiver has not taken are
// dropped; Reset changes the period from now; Stop ends it.
func TestManualTicker(t *testing.T) {
	m := NewManual(start)
	tk := m.NewTicker(100 * time.Millisecond)
	for i := 1; i <= 3; i++ {
		m.Advance(100 * time.Millisecond)
		if v := sent(t, tk.C()); !v.Equal(start.Add(time.Duration(i) * 100 * time.Millisecond)) {
			t.Fatalf("tick %d at %v", i, v.Sub(start))
		}
	}
	m.Advance(950 * time.Millisecond) // nine ticks due, none received: one held, eight dropped
	if v := sent(t, tk.C()); !v.Equal(start.Add(400 * time.Millisecond)) {
		t.Fatalf("held tick at %v, want the first one due (400ms)", v.Sub(start))
	}
	m.Advance(50 * time.Millisecond) // the ticks keep their phase: one due at 1.3 s
	if v := sent(t, tk.C()); !v.Equal(start.Add(1300 * time.Millisecond)) {
		t.Fatalf("tick at %v, want 1.3s", v.Sub(start))
	}
	select {
	case v := <-tk.C():
		t.Fatalf("a second tick %v held", v)
	default:
	}
	if m.Pending() != 1 {
		t.Fatal("the ticker is not armed any more")
	}
	now := m.Now()
	tk.Reset(time.Second)
	m.Advance(999 * time.Millisecond)
	select {
	case v := <-tk.C():
		t.Fatalf("tick %v before the new period", v)
	default:
	}
	m.Advance(time.Millisecond)
	if v := sent(t, tk.C()); !v.Equal(now.Add(time.Second)) {
		t.Fatalf("tick at %v, want a second after Reset", v.Sub(now))
	}
	tk.Stop()
	m.Advance(time.Hour)
	select {
	case v := <-tk.C():
		t.Fatalf("tick %v after Stop", v)
	default:
	}
	if m.Pending() != 0 {
		t.Fatal("a stopped ticker is still armed")
	}
}

// Timers armed, stopped and reset from many goroutines while another
// advances: the race detector watches, and every timer armed for within
// the advance fires exactly once.
func TestManualConcurrent(t *testing.T) {
	m := NewManual(start)
	const n = 50
	var mu sync.Mutex
	fired := map[int]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tm := m.AfterFunc(time.Hour, func() { mu.Lock(); fired[i]++; mu.Unlock() })
			tm.Stop()
			tm.Reset(time.Duration(i) * time.Millisecond)
			tk := m.NewTicker(time.Millisecond)
			tk.Stop()
			_ = m.Now()
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 {
			m.Advance(0)
		}
	}()
	wg.Wait()
	<-done
	m.Advance(time.Hour)
	for i := range n {
		if fired[i] != 1 {
			t.Fatalf("timer %d fired %d times", i, fired[i])
		}
	}
}

func TestReal(t *testing.T) {
	if Real() != Real() || Or(nil) != Real() {
		t.Fatal("Real is not one comparable value")
	}
	m := NewManual(start)
	if Or(m) != Clock(m) {
		t.Fatal("Or replaced a clock that was given")
	}
	c := Real()
	if d := time.Since(c.Now()); d < 0 || d > time.Minute {
		t.Fatalf("Real().Now is %v from time.Now", d)
	}
	done := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { close(done) })
	tm := c.NewTimer(time.Millisecond)
	tk := c.NewTicker(time.Millisecond)
	defer tk.Stop()
	<-done
	<-tm.C()
	<-tk.C()
}
