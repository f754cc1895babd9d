#!/usr/bin/env bash
# Soak (issue "Cairn 5"; not run by CI): mixed load from several clients
# against a 3-node cluster with a URL origin, for SOAK_SECONDS (default 1800):
# /v1 pushes with manifests, local pulls, pull-through, syncs, /v2 pushes and
# pulls; `cairn gc` on a live node every GC_EVERY seconds; one node killed
# with SIGKILL and restarted every KILL_EVERY seconds, round robin.
# At the end every node stops, and each data dir must verify clean with no
# temp data left. Every blob body is hashed by the client: a wrong body fails
# the run. Prints request counts, errors by kind, p50/p99 and peak RSS.
#   bench/soak.sh                 (SOAK_SECONDS, KILL_EVERY, GC_EVERY, SOAK_CLIENTS)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
bench_init curl openssl python3

SOAK_SECONDS=${SOAK_SECONDS:-1800}
KILL_EVERY=${KILL_EVERY:-180}
GC_EVERY=${GC_EVERY:-60}
build_release

STATE=$TMP/state
mkdir -p "$STATE/origin"
log "origin: 40 blobs of 64 KiB - 16 MiB"
python3 - "$STATE/origin" >"$STATE/origin.list" <<'EOF'
import hashlib, os, random, sys
rng = random.Random(7)
for i in range(40):
    b = rng.randbytes(rng.randint(64 << 10, 16 << 20))
    h = hashlib.sha256(b).hexdigest()
    with open(os.path.join(sys.argv[1], h), "wb") as f:
        f.write(b)
    print(h)
EOF
ORIGIN_PORT=$(free_port)
start_bg "$TMP/origin.log" python3 -m http.server --bind 127.0.0.1 --directory "$STATE/origin" "$ORIGIN_PORT"
ORIGIN_PID=$STARTED_PID
wait_http "http://127.0.0.1:$ORIGIN_PORT/" "$ORIGIN_PID"

NAMES=(a b c)
declare -A PORT PID DATA
for n in "${NAMES[@]}"; do
    PORT[$n]=$(free_port)
    DATA[$n]=$TMP/data-$n
done

start_node() {
    local n=$1 dir=$TMP/node-$1 peers="" p
    mkdir -p "$dir" "${DATA[$n]}"
    for p in "${NAMES[@]}"; do
        [ "$p" = "$n" ] || peers+="\n  - \"127.0.0.1:${PORT[$p]}\""
    done
    printf 'node_id: "%s"\nlisten_addr: "127.0.0.1:%s"\ndata_dir: "%s"\npeer_timeout: "5s"\nhealth_interval: "5s"\norigins:\n  - url: "http://127.0.0.1:%s/{digest}"\npeers:%b\n' \
        "$n" "${PORT[$n]}" "${DATA[$n]}" "$ORIGIN_PORT" "$peers" >"$dir/config.yaml"
    start_bg "$dir/stderr.$(date +%s).log" "$CAIRN" serve --config "$dir/config.yaml"
    PID[$n]=$STARTED_PID
    wait_http "http://127.0.0.1:${PORT[$n]}/v1/health" "${PID[$n]}"
}

for n in "${NAMES[@]}"; do start_node "$n"; done
python3 - "$STATE/nodes.json" "$TMP" "${NAMES[@]}" <<EOF
import json, sys
out, tmp, names = sys.argv[1], sys.argv[2], sys.argv[3:]
ports = dict(zip("abc", "${PORT[a]} ${PORT[b]} ${PORT[c]}".split()))
json.dump({n: {"url": f"http://127.0.0.1:{ports[n]}", "addr": f"127.0.0.1:{ports[n]}", "data": f"{tmp}/data-{n}"}
           for n in names}, open(out, "w"))
EOF

PEAK_KIB=0
sample_rss() {
    local n k
    for n in "${NAMES[@]}"; do
        k=$(awk '/^VmRSS:/ { print $2 }' "/proc/${PID[$n]}/status" 2>/dev/null || echo 0)
        [ "${k:-0}" -gt "$PEAK_KIB" ] && PEAK_KIB=$k
    done
    return 0
}

log "soak: ${SOAK_SECONDS}s, $((SOAK_SECONDS / KILL_EVERY)) kills, gc every ${GC_EVERY}s"
python3 "$BENCH_DIR/soak.py" "$SOAK_SECONDS" "$STATE" >"$TMP/report.json" &
DRIVER=$!
start=$SECONDS kills=0 gcs=0 gc_fail=0 victim=0 next_kill=$KILL_EVERY next_gc=$GC_EVERY next_rss=60
while kill -0 "$DRIVER" 2>/dev/null; do
    sample_rss
    el=$((SECONDS - start))
    if [ "$el" -ge "$next_kill" ]; then
        n=${NAMES[$((victim % 3))]}
        victim=$((victim + 1)) next_kill=$((next_kill + KILL_EVERY)) kills=$((kills + 1))
        log "kill -9 node $n"
        kill -KILL "${PID[$n]}"
        wait "${PID[$n]}" 2>/dev/null || true
        start_node "$n"
    fi
    if [ "$el" -ge "$next_rss" ]; then
        next_rss=$((next_rss + 60))
        log "RSS MiB: $(for n in "${NAMES[@]}"; do printf '%s=%s ' "$n" "$(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/${PID[$n]}/status" 2>/dev/null)"; done)"
    fi
    if [ "$el" -ge "$next_gc" ]; then
        n=${NAMES[$((RANDOM % 3))]}
        next_gc=$((next_gc + GC_EVERY)) gcs=$((gcs + 1))
        "$CAIRN" --data-dir "${DATA[$n]}" gc --grace 2m >>"$TMP/gc.log" 2>&1 || { gc_fail=$((gc_fail + 1)); log "gc on $n failed"; }
    fi
    sleep 1
done
driver_rc=0
wait "$DRIVER" || driver_rc=$?

log "stopping the nodes; checking every data dir"
left=0 bad=0
for n in "${NAMES[@]}"; do stop_pid "${PID[$n]}"; done
for n in "${NAMES[@]}"; do
    t=$({ find "${DATA[$n]}/tmp" -mindepth 1 2>/dev/null || true; } | wc -l)
    u=$({ find "${DATA[$n]}/registry/uploads" -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l)
    left=$((left + t))
    log "node $n: $t entries in tmp/, $u upload sessions left"
    if ! "$CAIRN" --data-dir "${DATA[$n]}" verify >"$TMP/verify-$n.log" 2>&1; then
        bad=$((bad + 1))
        log "node $n: verify FAILED: $(tail -n 5 "$TMP/verify-$n.log")"
    fi
done

cat "$TMP/report.json"
echo "kills: $kills, gc runs: $gcs (failed: $gc_fail), peak node RSS: $((PEAK_KIB / 1024)) MiB," \
    "tmp entries left: $left, data dirs failing verify: $bad, driver exit: $driver_rc"
[ "$driver_rc" -eq 0 ] && [ "$bad" -eq 0 ] && [ "$left" -eq 0 ] && [ "$gc_fail" -eq 0 ] || die "soak failed"
log "soak passed"
