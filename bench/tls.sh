#!/usr/bin/env bash
# Issue 11 benchmark: a 1 GiB blob GET over HTTPS from `cairn serve` (tls
# section) against nginx over HTTPS, same certificate, same file, same
# client (curl, TLS 1.3), over 127.0.0.1. Runs are interleaved.
#   bench/tls.sh              (REPS=5; BENCH_TMP for scratch)
# Timed commands are single-quoted on purpose: bash -c expands them later.
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
bench_init curl openssl nginx python3

REPS=${REPS:-5}
GIB=$((1 << 30))
build_release

log "making a CA and a certificate for 127.0.0.1"
pki=$TMP/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$pki/node.key" -out "$pki/node.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$pki/ext"
openssl x509 -req -in "$pki/node.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -extfile "$pki/ext" -out "$pki/node.pem" 2>/dev/null
# Every curl of this script (wait_http too) trusts the bench CA.
export CURL_CA_BUNDLE=$pki/ca.pem

log "storing a 1 GiB blob"
export A=$TMP/node-data HEX
make_file "$TMP/one-gib.bin" "$GIB" 4
HEX=$("$CAIRN" --data-dir "$A" put "$TMP/one-gib.bin" | cut -d' ' -f1)
rm -f "$TMP/one-gib.bin"
cat "$A/objects/$HEX" >/dev/null

port=$(free_port)
mkdir -p "$TMP/node"
cat >"$TMP/node/config.yaml" <<YAML
node_id: tls
listen_addr: "127.0.0.1:$port"
data_dir: "$A"
enable_cdn_fallback: false
tls:
  cert_file: "$pki/node.pem"
  key_file: "$pki/node.key"
YAML
start_bg "$TMP/node/stderr.log" "$CAIRN" serve --config "$TMP/node/config.yaml"
NODE_PID=$STARTED_PID
export NODE_URL=https://127.0.0.1:$port
wait_http "$NODE_URL/v1/health" "$NODE_PID"

# nginx serves the node's object file over HTTPS on a second listener
# (its first, plain one is what start_nginx waits on).
sport=$(free_port)
start_nginx objects "$A/objects" "listen 127.0.0.1:$sport ssl; ssl_certificate $pki/node.pem; ssl_certificate_key $pki/node.key; ssl_protocols TLSv1.2 TLSv1.3;"
export NGINX_TLS=https://127.0.0.1:$sport
wait_http "$NGINX_TLS/$HEX" "$NGINX_PID"
[ "$(curl -sf "$NODE_URL/v1/blobs/$HEX" | openssl dgst -sha256 -r | cut -c1-64)" = "$HEX" ] || die "cairn served wrong bytes"
[ "$(curl -sf "$NGINX_TLS/$HEX" | openssl dgst -sha256 -r | cut -c1-64)" = "$HEX" ] || die "nginx served wrong bytes"
cipher() { curl -sf -o /dev/null -w '%{ssl_verify_result}' -v "$1" 2>&1 | sed -n 's/.*SSL connection using \(.*\)/\1/p' | head -1; }
log "cairn: $(cipher "$NODE_URL/v1/health"); nginx: $(cipher "$NGINX_TLS/$HEX")"

load_reset
tls_c=() tls_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed tls_b '' 'curl -sf -o /dev/null "$NGINX_TLS/$HEX"'
    run_timed tls_c '' 'curl -sf -o /dev/null "$NODE_URL/v1/blobs/$HEX"'
done
record tls.serve "GET /v1/blobs 1 GiB over HTTPS (curl, TLS 1.3, to /dev/null) vs nginx over HTTPS, same certificate and file" \
    "$(gbps $GIB "$(median "${tls_c[@]}")")" "$(gbps $GIB "$(median "${tls_b[@]}")")" \
    "$(ratio_median tls_b tls_c time)" 0.9

print_results "$RESULTS"
