//go:build darwin || freebsd

package adminapi

import "golang.org/x/sys/unix"

// peerCred returns the effective uid and groups of the process that
// connected to the Unix socket fd (LOCAL_PEERCRED, the credentials the
// kernel took at connect time; getpeereid(3) reads the same).
func peerCred(fd uintptr) (uid int, gids []int, err error) {
	cred, err := unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return 0, nil, err
	}
	n := min(int(cred.Ngroups), len(cred.Groups))
	for _, g := range cred.Groups[:max(n, 0)] {
		gids = append(gids, int(g))
	}
	return int(cred.Uid), gids, nil
}
