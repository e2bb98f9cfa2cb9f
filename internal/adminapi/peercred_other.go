//go:build !linux && !darwin && !freebsd && !windows

package adminapi

import (
	"fmt"
	"runtime"
)

// peerCred fails: tomoe knows no way to read a Unix socket peer's
// credentials on this system, so the admin socket admits nobody.
func peerCred(fd uintptr) (uid int, gids []int, err error) {
	return 0, nil, fmt.Errorf("admin socket: cannot check a peer's credentials on %s", runtime.GOOS)
}
