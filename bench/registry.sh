#!/usr/bin/env bash
# Issue 5 benchmarks: Cairn's OCI registry (`cairn registry serve`) against
# the CNCF distribution registry (Debian docker-registry) and nginx, same
# image and files, same run, 127.0.0.1 only. Runs are interleaved.
#   bench/registry.sh         (REPS=3, RATE_SECS=5; BENCH_TMP for scratch)
# Timed commands are single-quoted on purpose: bash -c expands them later.
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
bench_init skopeo docker-registry nginx curl wrk ab openssl python3

REPS=${REPS:-3}
RATE_SECS=${RATE_SECS:-5}
GIB=$((1 << 30))
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
build_release
"$CAIRN" registry --help >/dev/null 2>&1 || die "$CAIRN has no 'registry' command yet (issue 5): git merge main"

log "building an OCI image layout with a 1 GiB gzip layer"
export LAYOUT=$TMP/layout PULL=$TMP/pull C=$TMP/cairn-data LAYER MANIFEST
key=$(printf 'cairn-layer-5' | openssl dgst -sha256 -r | cut -c1-32)
read -r LAYER MANIFEST < <({ openssl enc -aes-128-ctr -nosalt -K "$key" -iv 0 </dev/zero 2>/dev/null || true; } \
    | python3 "$BENCH_DIR/tools.py" oci "$LAYOUT" "$GIB" v1)
[ -n "$MANIFEST" ] || die "could not build the OCI layout"
LAYER_BYTES=$(stat -c %s "$LAYOUT/blobs/sha256/$LAYER")

fresh_dist() {
    [ -n "${DIST_PID:-}" ] && stop_pid "$DIST_PID"
    rm -rf "$TMP/dist-d"
    start_distribution d
    DIST=${DIST_URL#http://}
    export DIST DIST_URL
}
fresh_cairn() {
    [ -n "${CREG_PID:-}" ] && stop_pid "$CREG_PID"
    rm -rf "$C"
    start_cairn_registry c "$C"
    CREG=${CREG_URL#http://}
    export CREG CREG_URL
}

# skopeo push of the image into an empty registry. As a ceiling for the
# client, skopeo also copies the image to a dir: on tmpfs, a sink that does
# no work (skopeo still reads, hashes and writes every byte).
SINK=$(mktemp -d /dev/shm/cairn-bench-push.XXXXXX)
export SINK
trap 'rm -rf "$SINK"; bench_cleanup' EXIT
load_reset
push_c=() push_b=() push_n=()
for ((i = 0; i < REPS; i++)); do
    run_timed push_b 'fresh_dist; sync -f "$TMP"' 'skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:v1" "docker://$DIST/bench/big:v1"'
    run_timed push_c 'fresh_cairn; sync -f "$TMP"' 'skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:v1" "docker://$CREG/bench/big:v1"'
    run_timed push_n 'rm -rf "$SINK/img"' 'skopeo copy -q "oci:$LAYOUT:v1" "dir:$SINK/img"'
done
[ -f "$C/objects/$LAYER" ] || die "the layer pushed to Cairn is not objects/$LAYER"
[ -f "$SINK/img/$LAYER" ] || die "the copy to dir: lacks the layer $LAYER"
rm -rf "$SINK/img"
record registry.push "skopeo copy push, image with a 1 GiB layer, vs distribution" \
    "$(gbps "$LAYER_BYTES" "$(median "${push_c[@]}")")" "$(gbps "$LAYER_BYTES" "$(median "${push_b[@]}")")" \
    "$(ratio_median push_b push_c time)" 2
record registry.push_ceiling "skopeo copy push to Cairn vs to a dir: on tmpfs (the client's ceiling)" \
    "$(gbps "$LAYER_BYTES" "$(median "${push_c[@]}")")" "$(gbps "$LAYER_BYTES" "$(median "${push_n[@]}")")" \
    "$(ratio_median push_n push_c time)" -

# skopeo pull of the same image into an empty OCI layout. As a ceiling for
# the client, nginx also serves the image as static files laid out like the
# registry's pull URLs (the same blob files, hard-linked).
S=$TMP/static/v2/bench/big
mkdir -p "$S/manifests" "$S/blobs"
cp "$LAYOUT/blobs/sha256/$MANIFEST" "$S/manifests/v1"
for b in "$LAYOUT"/blobs/sha256/*; do ln "$b" "$S/blobs/sha256:$(basename "$b")"; done
start_nginx static "$TMP/static" "location = /v2/ { default_type application/json; return 200 '{}'; }
        location /v2/bench/big/manifests/ { default_type $OCI_MANIFEST; }"
STATIC=${NGINX_URL#http://}
export STATIC
load_reset
pull_c=() pull_b=() pull_n=()
for ((i = 0; i < REPS; i++)); do
    run_timed pull_b 'rm -rf "$PULL"; sync -f "$TMP"' 'skopeo copy -q --src-tls-verify=false "docker://$DIST/bench/big:v1" "oci:$PULL:v1"'
    run_timed pull_c 'rm -rf "$PULL"; sync -f "$TMP"' 'skopeo copy -q --src-tls-verify=false "docker://$CREG/bench/big:v1" "oci:$PULL:v1"'
    [ -f "$PULL/blobs/sha256/$LAYER" ] || die "the pulled layout lacks the layer $LAYER"
    run_timed pull_n 'rm -rf "$PULL"; sync -f "$TMP"' 'skopeo copy -q --src-tls-verify=false "docker://$STATIC/bench/big:v1" "oci:$PULL:v1"'
done
rm -rf "$PULL"
record registry.pull "skopeo copy pull, image with a 1 GiB layer, vs distribution" \
    "$(gbps "$LAYER_BYTES" "$(median "${pull_c[@]}")")" "$(gbps "$LAYER_BYTES" "$(median "${pull_b[@]}")")" \
    "$(ratio_median pull_b pull_c time)" 2
record registry.pull_ceiling "skopeo copy pull from Cairn vs from nginx serving the same image as static files (the client's ceiling)" \
    "$(gbps "$LAYER_BYTES" "$(median "${pull_c[@]}")")" "$(gbps "$LAYER_BYTES" "$(median "${pull_n[@]}")")" \
    "$(ratio_median pull_n pull_c time)" -

# nginx serves the same layer file and, as the small static file, the
# manifest's bytes.
start_nginx layout "$LAYOUT/blobs/sha256"
export NGINX_URL
[ "$(curl -sf "$CREG_URL/v2/bench/big/blobs/sha256:$LAYER" | openssl dgst -sha256 -r | cut -c1-64)" = "$LAYER" ] \
    || die "Cairn served wrong layer bytes"
load_reset
get_c=() get_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed get_b '' 'curl -sf -o /dev/null "$NGINX_URL/$LAYER"'
    run_timed get_c '' 'curl -sf -o /dev/null "$CREG_URL/v2/bench/big/blobs/sha256:$LAYER"'
done
record registry.blob_get "GET /v2 blob 1 GiB (curl to /dev/null) vs nginx, same file" \
    "$(gbps "$LAYER_BYTES" "$(median "${get_c[@]}")")" "$(gbps "$LAYER_BYTES" "$(median "${get_b[@]}")")" \
    "$(ratio_median get_b get_c time)" 0.9

# Request rates: manifest GET by tag (wrk) and blob HEAD (ab).
load_reset
man_c=() man_d=() man_n=() head_c=() head_d=() head_n=()
for ((i = 0; i < REPS; i++)); do
    man_d+=("$(wrk_rate "$RATE_SECS" "$DIST_URL/v2/bench/big/manifests/v1" -H "Accept: $OCI_MANIFEST")")
    man_c+=("$(wrk_rate "$RATE_SECS" "$CREG_URL/v2/bench/big/manifests/v1" -H "Accept: $OCI_MANIFEST")")
    man_n+=("$(wrk_rate "$RATE_SECS" "$NGINX_URL/$MANIFEST" -H "Accept: $OCI_MANIFEST")")
    load_now
    head_d+=("$(ab_rate -t "$RATE_SECS" -n 50000 "$DIST_URL/v2/bench/big/blobs/sha256:$LAYER")")
    head_c+=("$(ab_rate -t "$RATE_SECS" -n 50000 "$CREG_URL/v2/bench/big/blobs/sha256:$LAYER")")
    head_n+=("$(ab_rate -t "$RATE_SECS" -n 50000 "$NGINX_URL/$MANIFEST")")
    load_now
done
record registry.manifest_get_vs_dist "manifest GET by tag rate (wrk -t2 -c64 -d${RATE_SECS}s) vs distribution" \
    "$(median "${man_c[@]}") req/s" "$(median "${man_d[@]}") req/s" "$(ratio_median man_d man_c rate)" 10
record registry.manifest_get_vs_nginx "manifest GET by tag rate (wrk -t2 -c64 -d${RATE_SECS}s) vs nginx GET of the manifest file" \
    "$(median "${man_c[@]}") req/s" "$(median "${man_n[@]}") req/s" "$(ratio_median man_n man_c rate)" 0.5
record registry.head_vs_dist "blob HEAD rate (ab -k -i -c64, ${RATE_SECS}s or 50000) vs distribution" \
    "$(median "${head_c[@]}") req/s" "$(median "${head_d[@]}") req/s" "$(ratio_median head_d head_c rate)" 10
record registry.head_vs_nginx "blob HEAD rate (ab -k -i -c64, ${RATE_SECS}s or 50000) vs nginx HEAD of a small file" \
    "$(median "${head_c[@]}") req/s" "$(median "${head_n[@]}") req/s" "$(ratio_median head_n head_c rate)" 0.5

print_results "$RESULTS"
