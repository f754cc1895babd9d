# shellcheck shell=bash
# Shared helpers for the system benchmarks in bench/. Source it, then call
# bench_init. Every helper is bounded in time; every process a script starts
# is tracked by PID and stopped on exit, and generated inputs are deleted.
#
# Conventions: times are seconds (floats); a "ratio" is Cairn's speed over
# the baseline's speed measured in the same run (>1 means Cairn is faster).
# Results are appended as TSV rows to $BENCH_RESULTS and printed as a
# markdown table by print_results.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
BENCH_PIDS=()

die() {
    echo "bench: $*" >&2
    exit 1
}

log() {
    echo "[$(date -u +%H:%M:%S)] $*" >&2
}

# Create the scratch dir, the results file and the exit trap.
# Sets TMP (scratch, deleted on exit), RESULTS (TSV rows of this script).
bench_init() {
    local base=${BENCH_TMP:-/work/benchtmp}
    mkdir -p "$base"
    TMP=$(mktemp -d "$base/$(basename "$0" .sh).XXXXXX")
    # nginx workers and docker-registry may run as other users.
    chmod 755 "$TMP"
    RESULTS=${BENCH_RESULTS:-$TMP/results.tsv}
    touch "$RESULTS"
    export TMP RESULTS
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || die "needs $tool (Debian: apt-get install openssl curl nginx docker-registry skopeo wrk apache2-utils time)"
    done
}

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        stop_pid "$pid"
    done
    [ -n "${TMP:-}" ] && rm -rf "$TMP"
}

# Build the release binary once per run (bench/run.sh sets CAIRN to skip).
build_release() {
    if [ -z "${CAIRN:-}" ]; then
        log "building cairn (release)"
        (cd "$REPO_ROOT" && cargo build --release -q -p cairn) || die "release build failed"
        CAIRN=$REPO_ROOT/target/release/cairn
    fi
    [ -x "$CAIRN" ] || die "no cairn binary at $CAIRN"
    export CAIRN
}

# seeded_stream BYTES SEED: deterministic incompressible bytes on stdout
# (AES-CTR keystream keyed by the seed), so every run hashes the same content.
seeded_stream() {
    local bytes=$1 seed=$2 key
    key=$(printf '%s' "cairn-bench-$seed" | openssl dgst -sha256 -r | cut -c1-32)
    # openssl dies of SIGPIPE when head has enough; callers check the size.
    { openssl enc -aes-128-ctr -nosalt -K "$key" -iv 0 </dev/zero 2>/dev/null || true; } | head -c "$bytes"
}

# make_file PATH BYTES SEED: a file of seeded_stream bytes.
make_file() {
    local path=$1 bytes=$2 seed=$3
    seeded_stream "$bytes" "$seed" >"$path"
    [ "$(stat -c %s "$path")" -eq "$bytes" ] || die "make_file $path: wrong size"
}

# make_tree DIR FILES SEED: FILES distinct files of 1-64 KiB in 100-file
# subdirectories, sizes and bytes from the seed.
make_tree() {
    local dir=$1 files=$2 seed=$3 key
    key=$(printf '%s' "cairn-tree-$seed" | openssl dgst -sha256 -r | cut -c1-32)
    { openssl enc -aes-128-ctr -nosalt -K "$key" -iv 0 </dev/zero 2>/dev/null || true; } \
        | python3 "$BENCH_DIR/tools.py" tree "$dir" "$files" "$seed" || die "make_tree $dir failed"
}

# time_sh 'SHELL COMMAND': run it with bash -c (exported variables are
# visible) and print its wall time in seconds, read from a monotonic clock.
# A failing command fails the benchmark.
time_sh() {
    python3 "$BENCH_DIR/tools.py" time "set -o pipefail; $1" || die "command failed: $1"
}

# run_timed ARRAY 'PREP' 'COMMAND': PREP runs untimed in this shell, then
# COMMAND's time is appended to ARRAY. Tracks the highest 1-minute load.
run_timed() {
    local -n _acc=$1
    eval "$2"
    load_now
    _acc+=("$(time_sh "$3")")
}

BENCH_LOAD_MAX=0
# Call before each measurement: the rows recorded after it report the highest
# 1-minute load average seen from here on.
load_reset() {
    BENCH_LOAD_MAX=0
}
load_now() {
    local l
    l=$(cut -d' ' -f1 /proc/loadavg)
    BENCH_LOAD_MAX=$(awk -v a="$BENCH_LOAD_MAX" -v b="$l" 'BEGIN { print (b > a) ? b : a }')
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# pair_ratios BASE_ARRAY CAIRN_ARRAY time|rate: per-repetition ratios
# (base/cairn for times, cairn/base for rates), one per line.
pair_ratios() {
    local -n _b=$1 _c=$2
    local i
    for i in "${!_b[@]}"; do
        if [ "$3" = time ]; then
            awk -v b="${_b[$i]}" -v c="${_c[$i]}" 'BEGIN { printf "%.4f\n", b / c }'
        else
            awk -v b="${_b[$i]}" -v c="${_c[$i]}" 'BEGIN { printf "%.4f\n", c / b }'
        fi
    done
}

# ratio_median BASE_ARRAY CAIRN_ARRAY time|rate: median of pair_ratios.
ratio_median() {
    local r
    mapfile -t r < <(pair_ratios "$@")
    median "${r[@]}"
}

# max_each A B OUT: element-wise maximum (e.g. the slower of two baselines).
max_each() {
    local -n _x=$1 _y=$2 _o=$3
    local i
    _o=()
    for i in "${!_x[@]}"; do
        _o+=("$(awk -v a="${_x[$i]}" -v b="${_y[$i]}" 'BEGIN { print (a > b) ? a : b }')")
    done
}

# Two decimals, truncated, so a shown ratio never rounds up past its target.
trunc2() { awk -v r="$1" 'BEGIN { printf "%.2f", int(r * 100) / 100 }'; }

gbps() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.2f GB/s", b / t / 1e9 }'; }
secs() { awk -v t="$1" 'BEGIN { printf "%.3f s", t }'; }

# record ID WHAT CAIRN BASELINE RATIO TARGET [higher|lower]
# Appends one result row; "met" compares RATIO with TARGET (>= for higher,
# the default; < for lower, used for memory limits in MiB). TARGET "-" marks
# a row that only gives context (e.g. what the client itself can reach).
record() {
    local id=$1 what=$2 cairn=$3 base=$4 ratio=$5 target=$6 dir=${7:-higher} met load
    if [ "$target" = - ]; then
        met="(context)"
        ratio="$(trunc2 "$ratio")×"
    elif [ "$dir" = higher ]; then
        met=$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (r >= t) ? "yes" : "**no**" }')
        target="≥ ${target}×"
        ratio="$(trunc2 "$ratio")×"
    else
        met=$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (r + 0 < t + 0) ? "yes" : "**no**" }')
        target="< ${target} MiB"
        ratio="${ratio} MiB"
    fi
    load_now
    load=$BENCH_LOAD_MAX
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$what" "$cairn" "$base" "$ratio" "$target" "$met" "$load" >>"$RESULTS"
    log "$id: $what: cairn $cairn, baseline $base, ratio $ratio (target $target): $met, max load $load"
}

print_results() {
    echo "| id | measurement | Cairn | baseline | ratio (median) | target | met | max load |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{ for (i = 1; i <= NF; i++) gsub(/\|/, "\\|", $i)
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$1"
}

# Peak RSS in KiB of a command run directly (GNU time).
rss_peak_kib() {
    local out=$TMP/time.$$
    /usr/bin/time -f '%M' -o "$out" "$@" >/dev/null || die "command failed: $*"
    tail -n1 "$out"
}

# Peak RSS (VmHWM) in KiB of a running process.
vm_hwm_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

free_port() {
    python3 "$BENCH_DIR/tools.py" port
}

# wait_http URL PID [CODE_REGEX]: poll until URL answers with a status
# matching CODE_REGEX (default 2xx), failing early if PID exits and after a
# 20 s deadline.
wait_http() {
    local url=$1 pid=$2 want=${3:-2..} deadline=$((SECONDS + 20))
    until curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$url" | grep -qE "^$want\$"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "${STARTED_LOG:-/dev/null}" >&2
            die "process $pid exited before $url answered"
        fi
        [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "${STARTED_LOG:-/dev/null}" >&2; die "$url did not answer within 20s"; }
        sleep 0.05
    done
}

# wait_file PATH: poll until PATH exists, failing after a 60 s deadline
# (a fetched blob is linked into objects/ after its response has ended).
wait_file() {
    local path=$1 deadline=$((SECONDS + 60))
    until [ -e "$path" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "$path did not appear within 60s"
        sleep 0.05
    done
}

# start_bg LOG CMD...: start a tracked background process; its PID is in
# $STARTED_PID, its output in $STARTED_LOG.
start_bg() {
    STARTED_LOG=$1
    shift
    "$@" >"$STARTED_LOG" 2>&1 &
    STARTED_PID=$!
    BENCH_PIDS+=("$STARTED_PID")
}

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# start_nginx NAME ROOT [SERVER_DIRECTIVES]: nginx serving ROOT on 127.0.0.1
# with sendfile and keep-alive, as a static file server would be deployed.
# Sets NGINX_URL and NGINX_PID.
start_nginx() {
    local name=$1 root=$2 extra=${3:-} dir=$TMP/nginx-$1 port user=""
    mkdir -p "$dir"
    port=$(free_port)
    [ "$(id -u)" -eq 0 ] && user="user root;"
    cat >"$dir/nginx.conf" <<EOF
$user
daemon off;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types { application/json json; }
    default_type application/octet-stream;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        root $root;
        $extra
    }
}
EOF
    start_bg "$dir/stderr.log" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
    NGINX_PID=$STARTED_PID
    NGINX_URL=http://127.0.0.1:$port
    wait_http "$NGINX_URL/" "$NGINX_PID" '[1-5]..'
}

# start_distribution NAME: the CNCF distribution registry (Debian package
# docker-registry) with its packaged defaults (filesystem storage, in-memory
# blob descriptor cache), storage in a fresh temp dir. Sets DIST_URL, DIST_PID.
start_distribution() {
    local name=$1 dir=$TMP/dist-$1 port
    rm -rf "$dir"
    mkdir -p "$dir/storage"
    port=$(free_port)
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    start_bg "$dir/stderr.log" docker-registry serve "$dir/config.yml"
    DIST_PID=$STARTED_PID
    DIST_URL=http://127.0.0.1:$port
    wait_http "$DIST_URL/v2/" "$DIST_PID"
}

# start_cairn_node NAME DATA_DIR [PEER_ADDR...]: `cairn serve` with a config
# file; waits for /v1/health. Sets NODE_URL, NODE_ADDR, NODE_PID.
start_cairn_node() {
    local name=$1 data=$2 dir=$TMP/node-$1 port peers=""
    shift 2
    mkdir -p "$dir" "$data"
    port=$(free_port)
    for p in "$@"; do peers+="\n  - \"$p\""; done
    printf 'node_id: "%s"\nlisten_addr: "127.0.0.1:%s"\ndata_dir: "%s"\npeer_timeout: "10s"\nenable_cdn_fallback: false\npeers:%b\n' \
        "$name" "$port" "$data" "${peers:- []}" >"$dir/config.yaml"
    # NODE_EXTRA: more config lines (e.g. a cache section).
    [ -z "${NODE_EXTRA:-}" ] || printf '%b\n' "$NODE_EXTRA" >>"$dir/config.yaml"
    start_bg "$dir/stderr.log" "$CAIRN" serve --config "$dir/config.yaml"
    NODE_PID=$STARTED_PID
    NODE_ADDR=127.0.0.1:$port
    NODE_URL=http://$NODE_ADDR
    wait_http "$NODE_URL/v1/health" "$NODE_PID"
}

# start_cairn_registry NAME DATA_DIR: `cairn registry serve` on 127.0.0.1.
# Sets CREG_URL, CREG_PID.
start_cairn_registry() {
    local name=$1 data=$2 dir=$TMP/creg-$1 port
    mkdir -p "$dir" "$data"
    port=$(free_port)
    start_bg "$dir/stderr.log" "$CAIRN" --data-dir "$data" registry serve --bind 127.0.0.1 --port "$port"
    CREG_PID=$STARTED_PID
    CREG_URL=http://127.0.0.1:$port
    wait_http "$CREG_URL/v2/" "$CREG_PID"
}

# The field "Requests per second" of ab; fails on any failed or non-2xx request.
ab_rate() {
    local out
    out=$(ab -q -k -i -c64 "$@" 2>&1) || die "ab failed: $out"
    grep -q '^Failed requests: *0$' <<<"$out" || die "ab saw failed requests: $out"
    if grep -q '^Non-2xx responses' <<<"$out"; then die "ab saw non-2xx responses: $out"; fi
    awk '/^Requests per second:/ { print $4 }' <<<"$out"
}

# wrk_rate SECONDS URL [wrk args]: requests/s of wrk -c64; fails on errors
# or non-2xx answers.
wrk_rate() {
    local d=$1 url=$2 out
    shift 2
    out=$(wrk -t2 -c64 -d"${d}s" "$@" "$url" 2>&1) || die "wrk failed: $out"
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then die "wrk saw errors: $out"; fi
    awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

machine_line() {
    local sha=no
    grep -qw sha_ni /proc/cpuinfo && sha=yes
    printf '%s cores (%s, SHA-NI %s), %s GiB RAM, %s on %s, kernel %s' "$(nproc)" \
        "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$sha" \
        "$(awk '/^MemTotal/ { printf "%d", $2 / 1048576 }' /proc/meminfo)" \
        "$(df -T "${BENCH_TMP:-/work/benchtmp}" | awk 'NR == 2 { print $2 }')" \
        "$(df "${BENCH_TMP:-/work/benchtmp}" | awk 'NR == 2 { print $1 }')" "$(uname -r)"
}
