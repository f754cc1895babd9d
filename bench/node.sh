#!/usr/bin/env bash
# Issue 4 benchmarks: `cairn serve` (/v1) against nginx and curl|openssl on
# the same blob in the same run, over 127.0.0.1. Runs are interleaved.
#   bench/node.sh             (REPS=5; BENCH_TMP for scratch)
# Timed commands are single-quoted on purpose: bash -c expands them later.
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
bench_init curl openssl nginx ab python3

REPS=${REPS:-5}
GIB=$((1 << 30))
build_release
"$CAIRN" serve --help >/dev/null 2>&1 || die "$CAIRN has no 'serve' command yet (issue 4): git merge main"

log "storing a 1 GiB blob on node A"
export A=$TMP/node-a-data B=$TMP/node-b-data HEX
make_file "$TMP/one-gib.bin" "$GIB" 4
HEX=$("$CAIRN" --data-dir "$A" put "$TMP/one-gib.bin" | cut -d' ' -f1)
rm -f "$TMP/one-gib.bin"
cat "$A/objects/$HEX" >/dev/null

start_cairn_node a "$A"
export A_URL=$NODE_URL A_ADDR=$NODE_ADDR A_PID=$NODE_PID
# nginx serves the very file node A serves: its object.
start_nginx objects "$A/objects"
export NGINX_URL
[ "$(curl -sf "$A_URL/v1/blobs/$HEX" | openssl dgst -sha256 -r | cut -c1-64)" = "$HEX" ] || die "node A served wrong bytes"
[ "$(curl -sf "$NGINX_URL/$HEX" | openssl dgst -sha256 -r | cut -c1-64)" = "$HEX" ] || die "nginx served wrong bytes"

# Serving 1 GiB from the store vs nginx sendfile.
load_reset
srv_c=() srv_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed srv_b '' 'curl -sf -o /dev/null "$NGINX_URL/$HEX"'
    run_timed srv_c '' 'curl -sf -o /dev/null "$A_URL/v1/blobs/$HEX"'
done
record node.serve "GET /v1/blobs 1 GiB over loopback (curl to /dev/null) vs nginx, same file" \
    "$(gbps $GIB "$(median "${srv_c[@]}")")" "$(gbps $GIB "$(median "${srv_b[@]}")")" \
    "$(ratio_median srv_b srv_c time)" 0.9

# Verified pull-through: node B (empty, peer A) fetches, hashes, caches and
# streams the blob; baseline: download from A and hash, no caching.
fresh_b() {
    [ -n "${B_PID:-}" ] && stop_pid "$B_PID"
    rm -rf "$B"
    start_cairn_node b "$B" "$A_ADDR"
    B_URL=$NODE_URL B_PID=$NODE_PID
    export B_URL
}
load_reset
pt_c=() pt_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed pt_b 'sync -f "$TMP"' 'curl -sf "$A_URL/v1/blobs/$HEX" | openssl dgst -sha256 >/dev/null'
    run_timed pt_c 'fresh_b; sync -f "$TMP"' 'curl -sf -D "$TMP/fetch.h" -o /dev/null "$B_URL/v1/fetch/$HEX"'
    grep -qi "^x-cairn-source: peer" "$TMP/fetch.h" || die "node B did not fetch from its peer: $(cat "$TMP/fetch.h")"
    # The response ends once the digest matched; the fsync and link into
    # objects/ finish just after it, outside the timed command.
    wait_file "$B/objects/$HEX"
done
[ "$(openssl dgst -sha256 -r "$B/objects/$HEX" | cut -c1-64)" = "$HEX" ] || die "node B cached wrong bytes"
stop_pid "$B_PID"
record node.pull_through "verified pull-through of 1 GiB from a peer (GET B/v1/fetch) vs curl A | openssl dgst -sha256" \
    "$(gbps $GIB "$(median "${pt_c[@]}")")" "$(gbps $GIB "$(median "${pt_b[@]}")")" \
    "$(ratio_median pt_b pt_c time)" 0.8

# Pull-through with the cache at its watermark (issue 13): node B holds
# 1 GiB of unpinned blobs under a cap of 1.25 GiB, so taking the 1 GiB blob
# first evicts most of them; baseline: the same pull-through into the same
# filled node without a cache section (room to spare). Filling is untimed.
filled_b() {
    [ -n "${B_PID:-}" ] && stop_pid "$B_PID"
    rm -rf "$B"
    for ((f = 0; f < 8; f++)); do
        make_file "$TMP/fill.bin" $((128 << 20)) $((100 + f))
        "$CAIRN" --data-dir "$B" put "$TMP/fill.bin" >/dev/null
    done
    rm -f "$TMP/fill.bin"
    NODE_EXTRA=$1 start_cairn_node b "$B" "$A_ADDR"
    B_URL=$NODE_URL B_PID=$NODE_PID
    export B_URL
}
load_reset
ev_c=() ev_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed ev_b 'filled_b ""; sync -f "$TMP"' 'curl -sf -o /dev/null "$B_URL/v1/fetch/$HEX"'
    wait_file "$B/objects/$HEX"
    run_timed ev_c 'filled_b "cache:\n  max_bytes: $((GIB + GIB / 4))"; sync -f "$TMP"' \
        'curl -sf -o /dev/null "$B_URL/v1/fetch/$HEX"'
    wait_file "$B/objects/$HEX"
    left=$(find "$B/objects" -type f | wc -l)
    [ "$left" -lt 8 ] || die "node B evicted nothing for the 1 GiB blob ($left files in objects/)"
done
[ "$(openssl dgst -sha256 -r "$B/objects/$HEX" | cut -c1-64)" = "$HEX" ] || die "node B cached wrong bytes"
stop_pid "$B_PID"
record node.pull_through_evicting "verified pull-through of 1 GiB into a node at its cache cap (evicting ~1 GiB first) vs the same node with room" \
    "$(gbps $GIB "$(median "${ev_c[@]}")")" "$(gbps $GIB "$(median "${ev_b[@]}")")" \
    "$(ratio_median ev_b ev_c time)" 0.9

# HEAD rate on the blob, keep-alive, 64 connections.
load_reset
hd_c=() hd_b=()
for ((i = 0; i < REPS; i++)); do
    hd_b+=("$(ab_rate -t 15 -n 50000 "$NGINX_URL/$HEX")")
    hd_c+=("$(ab_rate -t 15 -n 50000 "$A_URL/v1/blobs/$HEX")")
    load_now
done
record node.head "HEAD /v1/blobs rate (ab -k -i -c64 -n 50000) vs nginx HEAD, same file" \
    "$(median "${hd_c[@]}") req/s" "$(median "${hd_b[@]}") req/s" \
    "$(ratio_median hd_b hd_c rate)" 0.7

# Peak RSS of a fresh node serving 16 concurrent 1 GiB downloads.
stop_pid "$A_PID"
start_cairn_node a2 "$A"
A_URL=$NODE_URL A_PID=$NODE_PID
export A_URL
load_reset
t16=$(time_sh 'seq 16 | xargs -P16 -I{} curl -sf --max-time 600 -o /dev/null "$A_URL/v1/blobs/$HEX"')
rss=$(vm_hwm_kib "$A_PID")
record node.rss16 "peak RSS (VmHWM) of a node serving 16 concurrent 1 GiB downloads (aggregate: $(gbps $((16 * GIB)) "$t16"))" \
    "$((rss / 1024)) MiB" "—" "$((rss / 1024))" 128 lower

print_results "$RESULTS"
