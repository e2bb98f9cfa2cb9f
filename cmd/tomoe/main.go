// Command tomoe is the tomoe node (`tomoe up`) and the CLI that manages it.
package main

import (
	"os"

	"github.com/tomoe-net/tomoe/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	cli.Version = version
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
