package services

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
)

// UIDSet is the set of local users a ListenLocal listener serves. The node's
// own uid is always allowed (the uid it started as and, after it gave root
// up, the one it runs as), so the zero UIDSet admits the node's user only.
type UIDSet struct {
	// Any admits every local user ("*").
	Any bool
	// UIDs admits these uids.
	UIDs map[uint32]bool
}

// Allows reports whether uid may use the listener.
func (s UIDSet) Allows(uid uint32) bool {
	return s.Any || s.UIDs[uid] || uint64(uid) == uint64(os.Getuid()) || uint64(uid) == uint64(startUID)
}

// startUID is the uid the process started as: the node's user, also
// after `tomoe up` started as root gave root up (run.user).
var startUID = os.Getuid()

// String describes the set: "*", or "self" followed by the allowed uids.
func (s UIDSet) String() string {
	if s.Any {
		return "*"
	}
	uids := make([]uint32, 0, len(s.UIDs))
	for uid, ok := range s.UIDs {
		if ok {
			uids = append(uids, uid)
		}
	}
	slices.Sort(uids)
	parts := []string{"self"}
	for _, uid := range uids {
		parts = append(parts, strconv.FormatUint(uint64(uid), 10))
	}
	return strings.Join(parts, ",")
}

// ParseUsers builds a UIDSet from user names ("alice"), numeric uids
// ("1000", which need not exist in the user database) and "*" (any local
// user). An empty list allows the node's own user only.
func ParseUsers(users []string) (UIDSet, error) {
	s := UIDSet{UIDs: make(map[uint32]bool)}
	for _, u := range users {
		u = strings.TrimSpace(u)
		switch {
		case u == "":
			return UIDSet{}, errors.New(`users: empty entry: use a user name, a numeric uid or "*"`)
		case u == "*":
			s.Any = true
			continue
		}
		if strings.Trim(u, "0123456789") == "" {
			n, err := strconv.ParseUint(u, 10, 32)
			if err != nil {
				return UIDSet{}, fmt.Errorf("users: %q is not a valid uid (0..4294967295)", u)
			}
			s.UIDs[uint32(n)] = true
			continue
		}
		pw, err := user.Lookup(u)
		if err != nil {
			if _, ok := errors.AsType[user.UnknownUserError](err); ok {
				return UIDSet{}, fmt.Errorf("users: no local user %q: use an existing user name or a numeric uid", u)
			}
			return UIDSet{}, fmt.Errorf("users: look up %q: %w", u, err)
		}
		n, err := strconv.ParseUint(pw.Uid, 10, 32)
		if err != nil {
			return UIDSet{}, fmt.Errorf("users: user %q has a non-numeric uid %q", u, pw.Uid)
		}
		s.UIDs[uint32(n)] = true
	}
	return s, nil
}
