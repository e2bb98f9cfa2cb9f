// Command builder writes tomoe's .deb and .rpm packages with nfpm used as
// a library. It is its own module, so that nfpm's dependencies (git,
// OpenPGP, templating, compression) stay out of tomoe's go.mod; run it
// through `go run ./packaging` from tomoe's tree, which passes -root and
// -wd.
//
// For each architecture it cross-builds cmd/tomoe (CGO_ENABLED=0,
// -trimpath, the version in main.version) and packages it with the files
// under packaging/files: the systemd unit, the example config and the
// maintainer scripts that create the user and group tomoe.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/goreleaser/nfpm/v2/rpm"
)

// target is one architecture: Go's names for the build, nfpm's for the
// package (nfpm maps it to amd64/arm64/armhf and x86_64/aarch64/armv7hl).
type target struct {
	name   string // as given on the command line
	goarch string
	goarm  string
	nfpm   string
}

var targets = map[string]target{
	"amd64": {"amd64", "amd64", "", "amd64"},
	"arm64": {"arm64", "arm64", "", "arm64"},
	"armv7": {"armv7", "arm", "7", "arm7"},
}

// versionRE is what a version must look like to be both a Debian upstream
// version and an RPM version: a digit first, no hyphen (Debian would take
// what follows as the revision, RPM refuses it).
var versionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("packaging", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	root := fs.String("root", "", "tomoe's source tree (set by go run ./packaging)")
	wd := fs.String("wd", "", "the directory relative paths are relative to (set by go run ./packaging)")
	out := fs.String("out", "", "where the packages go (default ROOT/dist)")
	archs := fs.String("arch", "amd64,arm64,armv7", "architectures, comma-separated: amd64, arm64, armv7, host")
	formats := fs.String("format", "deb,rpm", "package formats, comma-separated: deb, rpm")
	version := fs.String("version", "", "the version (default from git: the newest v* tag, else 0.0.0~gitDATE.COMMIT)")
	maintainer := fs.String("maintainer", "tomoe developers <tomoe@localhost>", "the packages' Maintainer/Packager field")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "usage: go run ./packaging [-arch LIST] [-format LIST] [-version V] [-out DIR]")
			fs.PrintDefaults()
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *root == "" {
		return usageError{errors.New("-root is missing: run it as `go run ./packaging` from tomoe's tree")}
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) || *wd == "" {
			return p
		}
		return filepath.Join(*wd, p)
	}
	b := &builder{root: abs(*root), out: abs(*out), maintainer: *maintainer}
	if *out == "" {
		b.out = filepath.Join(b.root, "dist")
	}
	var err error
	if b.targets, err = parseTargets(*archs); err != nil {
		return usageError{err}
	}
	if b.formats, err = parseFormats(*formats); err != nil {
		return usageError{err}
	}
	if b.version = *version; b.version == "" {
		if b.version, err = gitVersion(b.root); err != nil {
			return err
		}
	}
	if !versionRE.MatchString(b.version) {
		return usageError{fmt.Errorf("version %q: use digits, letters, '.', '+' and '~', starting with a digit (no '-')", b.version)}
	}
	if b.mtime, err = commitTime(b.root); err != nil {
		return err
	}
	written, err := b.build()
	for _, p := range written {
		fmt.Fprintln(stdout, p)
	}
	return err
}

func parseTargets(list string) ([]target, error) {
	var ts []target
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "host" {
			name = runtime.GOARCH
			if name == "arm" {
				name = "armv7"
			}
		}
		t, ok := targets[name]
		if !ok {
			return nil, fmt.Errorf("-arch %q: use amd64, arm64, armv7 or host", name)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

func parseFormats(list string) ([]string, error) {
	var fs []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f != "deb" && f != "rpm" {
			return nil, fmt.Errorf("-format %q: use deb or rpm", f)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// gitVersion derives the version from the newest v* tag: v1.2.3 is 1.2.3,
// and 4 commits after it 1.2.3+git4.COMMIT; with no tag, 0.0.0~gitDATE.COMMIT
// (~ sorts before any release). A tree with uncommitted changes adds
// ".dirty".
func gitVersion(root string) (string, error) {
	commit, err := git(root, "rev-parse", "--short=12", "HEAD")
	if err != nil {
		return "", fmt.Errorf("version from git (give -version instead): %w", err)
	}
	var v string
	if d, err := git(root, "describe", "--tags", "--match", "v[0-9]*", "--long"); err == nil {
		// vX.Y.Z-N-gHASH
		parts := strings.Split(d, "-")
		n := len(parts)
		tag := strings.TrimPrefix(strings.Join(parts[:n-2], "-"), "v")
		v = tag
		if parts[n-2] != "0" {
			v += "+git" + parts[n-2] + "." + commit
		}
		v = strings.ReplaceAll(v, "-", "~") // v1.0.0-rc1 sorts before 1.0.0
	} else {
		date, err := git(root, "log", "-1", "--format=%cd", "--date=format:%Y%m%d")
		if err != nil {
			return "", fmt.Errorf("version from git (give -version instead): %w", err)
		}
		v = "0.0.0~git" + date + "." + commit
	}
	if st, err := git(root, "status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		v += ".dirty"
	}
	return v, nil
}

// commitTime is HEAD's commit time, the files' time in the packages, so
// that the same commit gives the same packages; SOURCE_DATE_EPOCH wins.
func commitTime(root string) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		var err error
		if s, err = git(root, "log", "-1", "--format=%ct"); err != nil {
			return time.Now().UTC().Truncate(time.Second), nil
		}
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

type builder struct {
	root, out  string
	version    string
	maintainer string
	mtime      time.Time
	targets    []target
	formats    []string
}

func (b *builder) build() ([]string, error) {
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "tomoe-packaging-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var written []string
	for _, t := range b.targets {
		bin := filepath.Join(tmp, "tomoe-"+t.name)
		if err := b.compile(t, bin); err != nil {
			return written, err
		}
		for _, format := range b.formats {
			p, err := b.pack(t, format, bin)
			if err != nil {
				return written, fmt.Errorf("%s %s: %w", format, t.name, err)
			}
			written = append(written, p)
		}
	}
	return written, nil
}

// compile cross-builds cmd/tomoe for t: static (no cgo), without the
// build machine's paths, stripped, with the version stamped in.
func (b *builder) compile(t target, bin string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.version="+b.version, "-o", bin, "./cmd/tomoe")
	cmd.Dir = b.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+t.goarch, "GOARM="+t.goarm, "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w", t.name, err)
	}
	return nil
}

// pack writes one package. The .deb is named tomoe_VERSION_ARCH.deb
// (Debian's architecture names), the .rpm as RPM names it
// (tomoe-VERSION-1.ARCH.rpm).
func (b *builder) pack(t target, format, bin string) (string, error) {
	info := b.info(t, format, bin)
	var packager nfpm.Packager
	var name string
	switch format {
	case "deb":
		packager = deb.Default
		name = fmt.Sprintf("tomoe_%s_%s.deb", b.version, debArch(t))
	case "rpm":
		packager = rpm.DefaultRPM
		name = rpm.DefaultRPM.ConventionalFileName(b.info(t, format, bin))
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return "", err
	}
	path := filepath.Join(b.out, name)
	f, err := os.CreateTemp(b.out, "."+name+".*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if err := packager.Package(info, f); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(f.Name(), path)
}

func debArch(t target) string {
	switch t.nfpm {
	case "arm7":
		return "armhf"
	default:
		return t.nfpm
	}
}

// The package's layout. Ownership by name: the preinstall script creates
// the user and group tomoe before the files are unpacked.
func (b *builder) info(t target, format, bin string) *nfpm.Info {
	src := func(p string) string { return filepath.Join(b.root, "packaging", "files", p) }
	config := files.TypeConfig // dpkg: a conffile, never overwritten once changed
	if format == "rpm" {
		config = files.TypeConfigNoReplace
	}
	info := &nfpm.Info{
		Name:          "tomoe",
		Arch:          t.nfpm,
		Platform:      "linux",
		Version:       b.version,
		VersionSchema: "none",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    b.maintainer,
		Vendor:        "tomoe",
		Homepage:      "https://github.com/tomoe-net/tomoe",
		License:       "Apache-2.0",
		MTime:         b.mtime,
		Description: "zero-trust peer-to-peer overlay network\n" +
			"Every device holds one key pair and its IPv6 address is a hash of its\n" +
			"public key. Traffic is WireGuard-encrypted end to end, devices behind NAT\n" +
			"meet through bridges, and every node decides for itself who may reach it.\n" +
			"This package runs a node as the systemd service tomoe.",
		Overridables: nfpm.Overridables{
			Umask: 0o022,
			Contents: files.Contents{
				{Source: bin, Destination: "/usr/bin/tomoe",
					FileInfo: &files.ContentFileInfo{Mode: 0o755, Owner: "root", Group: "root"}},
				{Source: src("tomoe.service"), Destination: "/usr/lib/systemd/system/tomoe.service",
					FileInfo: &files.ContentFileInfo{Mode: 0o644, Owner: "root", Group: "root"}},
				{Destination: "/etc/tomoe", Type: files.TypeDir,
					FileInfo: &files.ContentFileInfo{Mode: 0o750, Owner: "root", Group: "tomoe"}},
				// The config may hold a bridge token: root and the group tomoe only.
				{Source: src("tomoe.toml"), Destination: "/etc/tomoe/tomoe.toml", Type: config,
					FileInfo: &files.ContentFileInfo{Mode: 0o640, Owner: "root", Group: "tomoe"}},
				{Destination: "/var/lib/tomoe", Type: files.TypeDir,
					FileInfo: &files.ContentFileInfo{Mode: 0o700, Owner: "tomoe", Group: "tomoe"}},
			},
			Scripts: nfpm.Scripts{
				PreInstall:  src("scripts/preinstall.sh"),
				PostInstall: src("scripts/postinstall.sh"),
				PreRemove:   src("scripts/preremove.sh"),
				PostRemove:  src("scripts/postremove.sh"),
			},
		},
	}
	switch format {
	case "deb":
		// groupadd and useradd run in the preinst.
		info.Deb.Predepends = []string{"passwd"}
	case "rpm":
		info.Depends = []string{"shadow-utils"}
		info.RPM.Summary = "zero-trust peer-to-peer overlay network"
		info.RPM.Packager = b.maintainer
		info.RPM.Group = "System Environment/Daemons"
	}
	return info
}
