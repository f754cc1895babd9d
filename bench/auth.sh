#!/usr/bin/env bash
# Issue "Cairn 6": the cost of authentication on the request path. Blob HEAD
# rate of a node with an `auth` section (Basic credentials checked by bcrypt
# once, then cached) vs the same node config without one, same blob, same
# run, interleaved.
#   bench/auth.sh             (REPS=5; BENCH_TMP for scratch)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
bench_init curl ab htpasswd python3

REPS=${REPS:-5}
build_release

DATA_OPEN=$TMP/open-data DATA_AUTH=$TMP/auth-data
make_file "$TMP/blob.bin" $((1 << 20)) 9
HEX=$("$CAIRN" --data-dir "$DATA_OPEN" put "$TMP/blob.bin" | cut -d' ' -f1)
"$CAIRN" --data-dir "$DATA_AUTH" put "$TMP/blob.bin" >/dev/null

start_cairn_node open "$DATA_OPEN"
OPEN_URL=$NODE_URL

# The second node: the README's auth shape, a bcrypt user who may pull.
htpasswd -cbB "$TMP/htpasswd" bench "bench-password" 2>/dev/null
port=$(free_port)
mkdir -p "$TMP/node-auth"
cat >"$TMP/node-auth/config.yaml" <<YAML
node_id: "auth"
listen_addr: "127.0.0.1:$port"
data_dir: "$DATA_AUTH"
enable_cdn_fallback: false
auth:
  htpasswd_file: "$TMP/htpasswd"
  anonymous: []
  users:
    bench: [pull]
YAML
start_bg "$TMP/node-auth/stderr.log" "$CAIRN" serve --config "$TMP/node-auth/config.yaml"
AUTH_PID=$STARTED_PID AUTH_URL=http://127.0.0.1:$port
wait_http "$AUTH_URL/v1/health" "$AUTH_PID" 401
[ "$(curl -s -o /dev/null -w '%{http_code}' -I "$AUTH_URL/v1/blobs/$HEX")" = 401 ] || die "the auth node answered without credentials"
[ "$(curl -s -o /dev/null -w '%{http_code}' -I -u bench:bench-password "$AUTH_URL/v1/blobs/$HEX")" = 200 ] || die "the auth node refused the right credentials"

load_reset
off=() on=()
for ((i = 0; i < REPS; i++)); do
    off+=("$(ab_rate -t 10 -n 50000 "$OPEN_URL/v1/blobs/$HEX")")
    on+=("$(ab_rate -t 10 -n 50000 -A bench:bench-password "$AUTH_URL/v1/blobs/$HEX")")
    load_now
done
record auth.head "HEAD /v1/blobs rate with Basic auth (bcrypt once, then cached) vs without auth, same blob (ab -k -i -c64)" \
    "$(median "${on[@]}") req/s" "$(median "${off[@]}") req/s" \
    "$(ratio_median off on rate)" 0.8

print_results "$RESULTS"
