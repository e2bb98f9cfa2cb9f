package bridge

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// The newest Register time accepted from each key outlives a restart, so
// that a Register captured before it cannot be replayed after it. It is
// written on a timer, not at every keepalive (one fsync per interval, not
// one per node every 15 s), and when the bridge closes.
//
// What a crash loses: the times accepted since the last write, at most
// timesSaveInterval old. A Register captured in that interval can then be
// replayed once after the restart, and only while it is within
// wire.MaxClockSkew of the bridge's clock; it points the node's registration
// at the replayer until the node's next keepalive (at most 15 s), whose
// newer time then refuses every captured one. Capturing it needs a place
// on the path, from which dropping the node's packets denies the same
// service: the crash adds nothing an attacker there could not do anyway.
const timesSaveInterval = 30 * time.Second

// registerTimesFile is the on-disk form of Server.lastTime.
type registerTimesFile struct {
	Version int            `json:"version"`
	Saved   time.Time      `json:"saved"` // the bridge's clock
	Times   []registerTime `json:"times"`
}

type registerTime struct {
	Key  identity.PublicKey `json:"key"`
	Time time.Time          `json:"time"` // the node's clock, from its newest accepted Register or Unregister
}

// registerTimesPath is where the times of a bridge with state file state
// are kept: beside it, "bridge.json" giving "bridge.register-times.json".
// "" keeps them in memory only.
func registerTimesPath(state string) string {
	if state == "" {
		return ""
	}
	return strings.TrimSuffix(state, filepath.Ext(state)) + ".register-times.json"
}

func registerTimesFileOf(path string) statefile.File {
	return statefile.File{Path: path, What: "bridge register times", Forget: "the newest Register time of each node (a Register captured in the minutes before the restart could then be replayed once)"}
}

// loadTimes reads the persisted times into s.lastTime, keeping only keys
// the bridge admits now (the next write forgets those older than the
// clock window). A time ahead of the window (the bridge's clock went
// back, or the file was edited) is taken as the window's end, so that no
// key is locked out for longer than wire.MaxClockSkew.
func (s *Server) loadTimes() error {
	if s.timesPath == "" {
		return nil
	}
	f := registerTimesFileOf(s.timesPath)
	var st registerTimesFile
	if found, err := f.Load(&st, &st.Version); err != nil || !found {
		return err
	}
	ceiling := s.now().Add(wire.MaxClockSkew)
	for i, rt := range st.Times {
		if rt.Key.IsZero() {
			return f.Corrupt(fmt.Errorf("times[%d]: no key", i))
		}
		if !s.adm.Admits(rt.Key) || rt.Time.Before(time.Unix(0, 0)) {
			continue // not admitted, or older than any window
		}
		if rt.Time.After(ceiling) {
			rt.Time = ceiling // also keeps UnixNano in range
		}
		s.lastTime[rt.Key] = rt.Time.UnixNano()
	}
	return nil
}

// saveTimesDue writes the times if they changed and timesSaveInterval has
// passed since the last write (the janitor calls it), or at once if
// force (at Close). Times older than the clock window are forgotten first
// (also by a bridge without a file): the window refuses whatever they
// would, so the map holds the keys active in the last minutes only.
func (s *Server) saveTimesDue(now time.Time, force bool) {
	s.timesMu.Lock()
	defer s.timesMu.Unlock()
	if !force && now.Sub(s.timesSaved) < timesSaveInterval {
		return
	}
	s.timesSaved = now
	floor := now.Add(-wire.MaxClockSkew).UnixNano()
	s.mu.Lock()
	for k, t := range s.lastTime {
		if t < floor {
			delete(s.lastTime, k)
		}
	}
	if s.timesPath == "" || !s.timesDirty {
		s.mu.Unlock()
		return
	}
	st := registerTimesFile{Version: statefile.Version, Saved: now.UTC(), Times: make([]registerTime, 0, len(s.lastTime))}
	for k, t := range s.lastTime {
		st.Times = append(st.Times, registerTime{Key: k, Time: time.Unix(0, t).UTC()})
	}
	s.timesDirty = false
	s.mu.Unlock()
	slices.SortFunc(st.Times, func(x, y registerTime) int { return x.Time.Compare(y.Time) })
	if err := registerTimesFileOf(s.timesPath).Save(st); err != nil {
		s.mu.Lock()
		s.timesDirty = true // try again at the next interval
		s.mu.Unlock()
		s.logLimited(slog.LevelWarn, "bridge: cannot store register times", "err", err)
		return
	}
	s.timesSaves.Add(1)
}
