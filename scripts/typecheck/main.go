// Command typecheck type-checks cmd/tomoe, and everything it imports, for
// other systems and architectures without compiling it: go/types over the
// source, with each target's build tags and word size. It catches what a
// cross-build catches in tomoe's own code (a missing function on one
// system, a constant that overflows a 32-bit int) in seconds instead of
// a compile each; scripts/crossbuild.sh runs it for every target and
// still links a few targets fully.
//
//	go run . -C ../.. linux/riscv64 darwin/amd64
//
// It lives in a module of its own so that golang.org/x/tools stays out of
// tomoe's go.mod.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/tools/go/packages"
)

func main() {
	dir := flag.String("C", ".", "the tomoe module's directory")
	pkg := flag.String("pkg", "./cmd/tomoe", "the package to check, with its dependencies")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: typecheck [-C DIR] [-pkg PATTERN] GOOS/GOARCH...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	failed := 0
	for _, target := range flag.Args() {
		goos, goarch, ok := strings.Cut(target, "/")
		if !ok || goos == "" || goarch == "" {
			fmt.Fprintf(os.Stderr, "typecheck: %q is not GOOS/GOARCH\n", target)
			os.Exit(2)
		}
		start := time.Now()
		if n := check(*dir, *pkg, goos, goarch); n > 0 {
			fmt.Printf("FAIL %s (%d errors)\n", target, n)
			failed++
			continue
		}
		fmt.Printf("ok   %s (type-checked, %.0f s)\n", target, time.Since(start).Seconds())
	}
	if failed > 0 {
		os.Exit(1)
	}
}

// check loads pattern and its dependencies from source for goos/goarch,
// prints every error and returns how many there were.
func check(dir, pattern, goos, goarch string) int {
	cfg := &packages.Config{
		Mode: packages.NeedName | packages.NeedImports | packages.NeedDeps |
			packages.NeedSyntax | packages.NeedTypes | packages.NeedTypesInfo,
		Dir: dir,
		// GOARM=7: the armv7 of the Raspberry Pi OS and Debian armhf
		// builds. Without cgo, as the release builds.
		Env: append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "GOARM=7", "CGO_ENABLED=0"),
	}
	pkgs, err := packages.Load(cfg, pattern)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s/%s: %v\n", goos, goarch, err)
		return 1
	}
	if len(pkgs) == 0 {
		fmt.Fprintf(os.Stderr, "%s/%s: %s matched no package\n", goos, goarch, pattern)
		return 1
	}
	return packages.PrintErrors(pkgs)
}
