#!/usr/bin/env bash
# Builds cmd/tomoe for every system and architecture tomoe supports
# (issue 13 section 3), without cgo, and fails when one does not build.
# CI runs it before the tests (.ci/run); by hand:
#
#   scripts/crossbuild.sh            # every target
#   scripts/crossbuild.sh darwin/arm64 windows/amd64
#
# Built is not tested: README's "Platforms" says what runs where.
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
failed=()
for t in "${targets[@]}"; do
	goos=${t%/*} goarch=${t#*/}
	start=$SECONDS
	# GOARM=7: the armv7 of the Raspberry Pi OS and Debian armhf builds.
	if CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=7 go build -o "$out/tomoe-$goos-$goarch" ./cmd/tomoe; then
		echo "ok   $t ($((SECONDS - start)) s, $(du -k "$out/tomoe-$goos-$goarch" | cut -f1) KiB)"
	else
		echo "FAIL $t"
		failed+=("$t")
	fi
	rm -f "$out/tomoe-$goos-$goarch"
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "cmd/tomoe does not build for: ${failed[*]}"
	exit 1
fi
