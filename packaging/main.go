// Command packaging writes tomoe's .deb and .rpm packages into dist/:
//
//	go run ./packaging                       # amd64, arm64, armv7; .deb and .rpm
//	go run ./packaging -arch host -format deb -out /tmp/pkg
//
// The work is done by packaging/builder, a module of its own that uses
// nfpm as a library; this command only starts it, so that nfpm and its
// dependencies stay out of tomoe's go.mod and binary. What the packages
// hold: packaging/builder (the layout) and packaging/files (the unit,
// the example config, the maintainer scripts).
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode()) // the builder said why
		}
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return fmt.Errorf("find tomoe's source tree (run this inside it): %w", err)
	}
	root := strings.TrimSpace(string(out))
	cmd := exec.Command("go", append([]string{"run", ".", "-root", root, "-wd", wd}, args...)...)
	cmd.Dir = filepath.Join(root, "packaging", "builder")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}
