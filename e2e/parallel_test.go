package e2e

import (
	"flag"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Most tests here run in parallel: each builds its own namespaces (names
// made unique by testnet), node directories, sockets and users, so none
// sees another's, and they spend their time waiting on handshakes, timers
// and settling, not computing. A test stays serial (and then runs alone,
// before the parallel ones start) when it floods (TestL2Segment's frames,
// TestVPN's port scans) or when other tests' load could stretch what it
// waits for past its deadline (TestBridgeNATLab's hole punching,
// TestJoinByRequestProcesses's certificate grace). What tests running
// together share on the host, /etc/netns, is guarded (resolvConf).

// defaultParallel is how many parallel tests run at once unless -parallel
// says otherwise. go test's default, GOMAXPROCS, suits tests that compute;
// these mostly wait, so more of them than the machine has CPUs run side by
// side in much less time.
const defaultParallel = 4

// turns hands the parallel tests their turns.
var turns turnQueue

// setParallel, called by TestMain, takes the scheduling of parallel tests
// over from go test unless -parallel was given: go test starts waiting
// tests in no particular order, and the longest (TestOrgNetwork, two
// minutes) starting last would add its whole time to the package's.
func setParallel() {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if explicit {
		return // go test limits and orders them
	}
	turns.max = max(defaultParallel, runtime.GOMAXPROCS(0))
	// go test then lets every parallel test go on to wait for its turn.
	flag.Set("test.parallel", "1000")
}

// parallel runs t in parallel with the other parallel tests, in its turn:
// about says how long t takes (on a 2-core machine, with the race
// detector), and the longest waiting test goes first. The time go test
// reports for t includes its wait for a turn (with -parallel given, there
// is none: go test orders the tests).
func parallel(t *testing.T, about time.Duration) {
	turns.register()
	t.Parallel()
	if waited := turns.acquire(about); waited > time.Second {
		t.Logf("waited %v for a turn", waited.Round(time.Second))
	}
	// Registered first, run last: the turn ends after the test's own
	// clean-up (its processes stopped, its namespaces deleted).
	t.Cleanup(turns.release)
}

// turnQueue lets at most max parallel tests run at once, the longest
// waiting one first. It hands out no turn while a test that called
// register has not yet called acquire: when go test releases the parallel
// tests, all at once, the first turns go to the longest, whichever asks
// first. With max 0 (-parallel given) it only counts: go test limits
// and orders the tests, and a test goes on as soon as it asks.
type turnQueue struct {
	max int

	mu      sync.Mutex // guards the fields below
	absent  int        // tests registered but not yet waiting
	running int
	waiting []*turnWaiter
}

type turnWaiter struct {
	about time.Duration
	turn  chan struct{} // closed when its turn comes
}

func (q *turnQueue) register() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.absent++
}

// acquire waits for the caller's turn and says how long it waited.
func (q *turnQueue) acquire(about time.Duration) time.Duration {
	start := time.Now()
	w := &turnWaiter{about: about, turn: make(chan struct{})}
	q.mu.Lock()
	q.absent--
	if q.max == 0 {
		q.running++
		q.mu.Unlock()
		return 0
	}
	q.waiting = append(q.waiting, w)
	q.startLocked()
	q.mu.Unlock()
	<-w.turn
	return time.Since(start)
}

func (q *turnQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.running--
	q.startLocked()
}

// startLocked gives turns to the longest waiting tests while turns are
// free, once no registered test is missing.
func (q *turnQueue) startLocked() {
	if q.absent > 0 {
		return
	}
	for len(q.waiting) > 0 && q.running < q.max {
		i := 0
		for j, w := range q.waiting {
			if w.about > q.waiting[i].about {
				i = j
			}
		}
		w := q.waiting[i]
		q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
		q.running++
		close(w.turn)
	}
}
