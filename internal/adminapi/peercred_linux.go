package adminapi

import "golang.org/x/sys/unix"

// peerCred returns the uid and gid of the process that connected to the
// Unix socket fd (SO_PEERCRED, taken by the kernel at connect time).
func peerCred(fd uintptr) (uid int, gids []int, err error) {
	cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, nil, err
	}
	return int(cred.Uid), []int{int(cred.Gid)}, nil
}
