#!/usr/bin/env bash
# Runs every fuzz target of the tree for a while (default 10 minutes each,
# one target at a time on all cores) and writes a summary table. Not part of
# CI: a long run done by hand, whose results README's testing section
# records. A crasher Go finds is kept by `go test` itself as a seed under the
# package's testdata/fuzz/<target>/: commit it with the fix.
#
#   scripts/fuzz.sh                 # every target, 10m each
#   FUZZTIME=30s scripts/fuzz.sh    # a quick pass
#   scripts/fuzz.sh ./internal/bridge   # the targets of some packages
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10m}
out=${FUZZOUT:-fuzz-results.md}
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

mapfile -t targets < <(go test -list '^Fuzz' "${pkgs[@]}" 2>/dev/null | awk '
	/^Fuzz/ { t[n++] = $1 }
	/^ok / { for (i = 0; i < n; i++) print $2, t[i]; n = 0 }')
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets found in ${pkgs[*]}" >&2
	exit 2
fi

{
	echo "| package | target | time | execs | new interesting | result |"
	echo "|---|---|---|---|---|---|"
} >"$out"
failed=0
for line in "${targets[@]}"; do
	read -r pkg target <<<"$line"
	dir=${pkg#github.com/tomoe-net/tomoe/}
	echo "--- $dir $target ($fuzztime)" >&2
	log=$(mktemp)
	go test "./$dir" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" >"$log" 2>&1
	rc=$?
	last=$(grep -E '^fuzz: elapsed' "$log" | tail -n 1)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	newi=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
	if [ $rc -eq 0 ]; then
		result=ok
	else
		result="FAILED: $(grep -m1 -E 'Failing input written to|panic:|--- FAIL' "$log" | tr '|' '/')"
		failed=$((failed + 1))
		cat "$log" >&2
	fi
	echo "| $dir | $target | $fuzztime | ${execs:-?} | ${newi:-?} | $result |" >>"$out"
	rm -f "$log"
done
echo "fuzz.sh: ${#targets[@]} targets, $failed failed; summary in $out" >&2
[ $failed -eq 0 ]
