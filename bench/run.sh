#!/usr/bin/env bash
# Every system benchmark (store, node, registry) with one release build, then
# one markdown table of all results. A script that fails (e.g. a command not
# merged yet) is reported and the others still run.
#   bench/run.sh [store|node|registry|tls ...]      e.g. REPS=3 bench/run.sh store
# Timed commands are single-quoted on purpose: bash -c expands them later.
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
bench_init cargo python3

build_release
export CAIRN BENCH_RESULTS=$TMP/all.tsv
: >"$BENCH_RESULTS"
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(store node registry auth tls)

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M')
failed=()
for s in "${scripts[@]}"; do
    [ -x "$BENCH_DIR/$s.sh" ] || die "no benchmark bench/$s.sh"
    log "== bench/$s.sh"
    "$BENCH_DIR/$s.sh" >/dev/null || failed+=("$s")
done

echo "Date: $started to $(date -u '+%H:%M') UTC"
echo "Machine: $(machine_line)"
cmd="bench/run.sh${*:+ $*}"
echo "Command: \`$cmd\` (REPS=${REPS:-default})"
echo "Load average (1/5/15 min): $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
echo
print_results "$BENCH_RESULTS"
if [ ${#failed[@]} -gt 0 ]; then
    echo
    echo "Failed: ${failed[*]} (see the log above)"
    exit 1
fi
