#!/usr/bin/env bash
# repeat-tests.sh N BUILD_DIR EXECUTABLE [CATCH2 TEST SPEC...]: runs the named tests of one test
# executable N times in a row and stops at the first failure; prints the pass count. With
# LOAD=1, `stress` keeps every CPU busy meanwhile, as a loaded machine would. For proving that a
# test's verdict does not depend on the machine's speed, e.g. under TSan:
#   LOAD=1 scripts/repeat-tests.sh 50 build/tsan engine_tests "32 MiB pass intact*"
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 N BUILD_DIR EXECUTABLE [TEST SPEC...]" >&2; exit 2; }
n=$1 dir=$2 exe=$3
shift 3
# One Catch2 test spec: names joined by commas ("or"), a comma inside a name escaped.
spec=""
for name in "$@"; do spec+="${spec:+,}${name//,/\\,}"; done
# A file's tests are named by the hidden tag "[#file]", which Catch2 v2 only knows with -#.
files=()
case "$spec" in *"[#"*) files=(-#) ;; esac
if [ "${LOAD:-0}" = 1 ]; then
  command -v stress >/dev/null || { echo "LOAD=1 needs stress (apt-get install stress)" >&2; exit 2; }
  stress --cpu "$(nproc)" --quiet &
  load=$!
  trap 'kill $load 2>/dev/null' EXIT
fi
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
cases=""
for i in $(seq 1 "$n"); do
  if ! out=$("$dir/tests/$exe" "${files[@]}" ${spec:+"$spec"} 2>&1); then
    echo "$out" | tail -40
    echo "FAILED on run $i of $n: $exe $*"
    exit 1
  fi
  cases=$(echo "$out" | sed -n 's/.*in \([0-9]*\) test cases*).*/\1/p' | tail -1)
  # Catch2 v2 exits 0 when the spec matches nothing: a run of no test proves nothing.
  if [ -z "$cases" ] || [ "$cases" = 0 ]; then
    echo "$out" | tail -5
    echo "NO TEST RAN on run $i: $exe $* matches no test case"
    exit 1
  fi
  echo "run $i of $n passed ($cases test cases)" >&2
done
echo "passed $n of $n runs of $cases test cases of $exe$([ "${LOAD:-0}" = 1 ] && echo ", loaded"): $*"
