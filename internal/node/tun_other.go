//go:build !linux && !darwin && !windows

package node

// tunNeeds is what creating a kernel TUN device needs here: config
// validation refuses kernel mode on this system before that.
const tunNeeds = "kernel mode is not supported on this system"
