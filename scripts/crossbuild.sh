#!/usr/bin/env bash
# Checks that cmd/tomoe builds for every system and architecture tomoe
# supports (issue 13 section 3), without cgo, and fails when one does not.
# CI runs it before the tests (.ci/run); by hand:
#
#   scripts/crossbuild.sh                        # every target (below)
#   scripts/crossbuild.sh darwin/arm64 linux/arm # compile and link these
#
# With no arguments it type-checks all nine targets from source
# (scripts/typecheck: go/types with each target's build tags and word
# size, about 10 s a target: a function missing on one system, a constant
# overflowing a 32-bit int) and compiles and links two fully: linux/arm
# (32-bit) and windows/amd64 (another system's linker). .ci/run's darwin
# vet compiles the darwin packages too. A full cold build of each of the
# nine took about 105 CPU-seconds, most of CI's budget; the type check
# finds what those builds found in tomoe's own code.
#
# Full builds check that tomoe builds, not how it runs: the compiler's
# optimisations are off (-N -l), which saves a quarter of each cold build
# and changes nothing about what compiles, and two targets build at a time,
# since one build leaves much of a 2-core machine idle while it waits on
# its dependency chain. Release binaries (go run ./packaging) are built
# normally. Built is not tested: README's "Platforms" says what runs where.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	(cd scripts/typecheck && go run . -C ../.. \
		linux/amd64 linux/arm64 linux/arm linux/riscv64 \
		darwin/amd64 darwin/arm64 \
		windows/amd64 windows/arm64 \
		freebsd/amd64)
	targets=(linux/arm windows/amd64)
fi
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
