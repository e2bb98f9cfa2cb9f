#!/usr/bin/env bash
# Builds cmd/tomoe for every system and architecture tomoe supports
# (issue 13 section 3), without cgo, and fails when one does not build.
# CI runs it before the tests (.ci/run); by hand:
#
#   scripts/crossbuild.sh            # every target
#   scripts/crossbuild.sh darwin/arm64 windows/amd64
#
# This checks that tomoe builds, not how it runs: the compiler's
# optimisations are off (-N -l), which saves a quarter of each cold build
# and changes nothing about what compiles, and two targets build at a time,
# since one build leaves much of a 2-core machine idle while it waits on
# its dependency chain. Release binaries (go run ./packaging) are built
# normally. Built is not tested: README's "Platforms" says what runs where.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(
	linux/amd64 linux/arm64 linux/arm linux/riscv64
	darwin/amd64 darwin/arm64
	windows/amd64 windows/arm64
	freebsd/amd64
)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

build() {
	local t=$1 goos=${1%/*} goarch=${1#*/} start=$SECONDS
	# GOARM=7: the armv7 of the Raspberry Pi OS and Debian armhf builds.
	if CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=7 go build -gcflags=all='-N -l' \
		-o "$out/tomoe-$goos-$goarch" ./cmd/tomoe 2>"$out/$goos-$goarch.err"; then
		echo "ok   $t ($((SECONDS - start)) s)"
	else
		echo "FAIL $t"
		cat "$out/$goos-$goarch.err"
		touch "$out/failed-$goos-$goarch"
	fi
	rm -f "$out/tomoe-$goos-$goarch"
}
export -f build
export out
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} bash -c 'build {}'

failed=$(cd "$out" && ls failed-* 2>/dev/null | sed 's/^failed-//; s/-/\//' || true)
if [ -n "$failed" ]; then
	echo "cmd/tomoe does not build for: $(echo $failed)"
	exit 1
fi
