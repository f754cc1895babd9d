#!/usr/bin/env bash
# Issue 14 benchmarks: the durable tier on a real S3 server (moto) against
# boto3 talking to the same server in the same run.
#   bench/tier.sh             (REPS=3; BENCH_TMP for scratch)
# - tier.pull: node B (empty data dir, bucket behind it, no peers) serves a
#   1 GiB blob that is only in the bucket: GET /v1/fetch, verified, cached,
#   streamed; baseline: boto3 download_file of the same object into a file
#   on the same disk, as one streamed GET (boto3's ranged download is ~90x
#   slower on moto, which rereads the object for each range).
# - tier.push: PUT /v1/blobs/<digest> of 1 GiB to node A, answered once the
#   blob is in the bucket; baseline: boto3 upload_file (multipart, 8 MiB
#   parts, its default 10 threads). The node's peak RSS is recorded too.
# Timed commands are single-quoted on purpose: bash -c expands them later.
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
bench_init curl openssl python3

REPS=${REPS:-3}
GIB=$((1 << 30))
build_release
python3 -c 'import moto.server, boto3' 2>/dev/null || die "needs moto[server] and boto3 (pip install 'moto[server]' boto3)"

MOTO_PORT=$(free_port)
start_bg "$TMP/moto.log" python3 -m moto.server -H 127.0.0.1 -p "$MOTO_PORT"
MOTO_PID=$STARTED_PID
export S3=http://127.0.0.1:$MOTO_PORT BUCKET=cairn-bench
deadline=$((SECONDS + 30))
until curl -sf -X PUT "$S3/$BUCKET" -o /dev/null; do
    kill -0 "$MOTO_PID" 2>/dev/null || die "moto exited: $(tail -5 "$TMP/moto.log")"
    [ "$SECONDS" -lt "$deadline" ] || die "moto did not answer within 30s"
    sleep 0.1
done
printf '[default]\naws_access_key_id = bench\naws_secret_access_key = bench\n' >"$TMP/creds"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1
NODE_EXTRA="storage:\n  backend: s3\n  bucket: $BUCKET\n  prefix: tier\n  endpoint: \"$S3\"\n  credentials_file: \"$TMP/creds\""
export NODE_EXTRA

log "a 1 GiB blob"
make_file "$TMP/blob" "$GIB" 14
export HEX BLOB=$TMP/blob OUT=$TMP/downloaded
HEX=$(openssl dgst -sha256 -r "$BLOB" | cut -c1-64)

cat >"$TMP/boto.py" <<'EOF'
import os, sys, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url=os.environ["S3"])
op, key = sys.argv[1], sys.argv[2]
if op == "put":
    s3.upload_file(os.environ["BLOB"], os.environ["BUCKET"], key, Config=TransferConfig(multipart_chunksize=8 << 20))
elif op == "get":
    # One streamed GET into a file (boto3's ranged download is ~90x slower on moto).
    out = os.environ["OUT"]
    s3.download_file(os.environ["BUCKET"], key, out, Config=TransferConfig(multipart_threshold=1 << 40))
    assert os.path.getsize(out) == os.path.getsize(os.environ["BLOB"])
elif op == "rm":
    s3.delete_object(Bucket=os.environ["BUCKET"], Key=key)
EOF

start_cairn_node a "$TMP/a"
export A_URL=$NODE_URL A_PID=$NODE_PID A_DATA=$TMP/a

# Push: the first rep's upload is the one the bucket keeps; each rep
# deletes it (and the node's copy) first so every push uploads all of it.
load_reset
push_c=() push_b=() rss=()
for ((i = 0; i < REPS; i++)); do
    run_timed push_b 'python3 "$TMP/boto.py" rm baseline/blob' 'python3 "$TMP/boto.py" put baseline/blob'
    stop_pid "$A_PID"
    rm -rf "$A_DATA"
    python3 "$TMP/boto.py" rm "tier/objects/$HEX"
    start_cairn_node a "$A_DATA"
    A_URL=$NODE_URL A_PID=$NODE_PID
    run_timed push_c 'sync -f "$TMP"' \
        'test "$(curl -sf -o /dev/null -w "%{http_code}" -T "$BLOB" "$A_URL/v1/blobs/$HEX")" = 201'
    rss+=("$(vm_hwm_kib "$A_PID")")
done
record tier.push "PUT /v1/blobs 1 GiB, answered once in the bucket (moto) vs boto3 upload_file (multipart) to the same server" \
    "$(gbps $GIB "$(median "${push_c[@]}")")" "$(gbps $GIB "$(median "${push_b[@]}")")" \
    "$(ratio_median push_b push_c time)" 0.9
peak=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
record tier.push_rss "node peak RSS (VmHWM) while pushing 1 GiB with the tier on" \
    "$((peak / 1024)) MiB" "-" "$((peak / 1024))" 128 lower

# Pull-through: node B has an empty data dir and no peers; the blob is only
# in the bucket.
load_reset
pull_c=() pull_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed pull_b 'rm -f "$OUT"; sync -f "$TMP"' 'python3 "$TMP/boto.py" get "tier/objects/$HEX"'
    [ -n "${B_PID:-}" ] && stop_pid "$B_PID"
    rm -rf "$TMP/b"
    start_cairn_node b "$TMP/b"
    B_URL=$NODE_URL B_PID=$NODE_PID
    export B_URL
    run_timed pull_c 'sync -f "$TMP"' 'curl -sf -D "$TMP/fetch.h" -o /dev/null "$B_URL/v1/fetch/$HEX"'
    grep -qi "^x-cairn-source: bucket" "$TMP/fetch.h" || die "node B did not fetch from the bucket: $(cat "$TMP/fetch.h")"
    wait_file "$TMP/b/objects/$HEX"
    [ "$(openssl dgst -sha256 -r "$TMP/b/objects/$HEX" | cut -c1-64)" = "$HEX" ] || die "node B cached wrong bytes"
done
record tier.pull "GET /v1/fetch 1 GiB only in the bucket (verified, cached, served) vs boto3 download_file (one GET) to a file" \
    "$(gbps $GIB "$(median "${pull_c[@]}")")" "$(gbps $GIB "$(median "${pull_b[@]}")")" \
    "$(ratio_median pull_b pull_c time)" 0.9

print_results "$RESULTS"
