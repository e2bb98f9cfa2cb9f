//go:build !linux

package transport

import (
	"fmt"
	"runtime"
)

// setMark fails: fwmarks are Linux's. The node asks for none elsewhere
// (routes.Mark is 0 there).
func setMark(fd uintptr, mark uint32) error {
	return fmt.Errorf("socket mark %#x: SO_MARK needs Linux, not available on %s", mark, runtime.GOOS)
}
