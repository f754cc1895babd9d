#!/usr/bin/env bash
# Issue 3 benchmarks: the local store and CLI against coreutils/openssl on
# the same files in the same run. Baseline and Cairn runs are interleaved.
#   bench/store.sh            (REPS=5, FILES=20000; BENCH_TMP for scratch)
# Timed commands are single-quoted on purpose: bash -c expands them later.
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
bench_init openssl dd cat cp find xargs python3 /usr/bin/time

REPS=${REPS:-5}
FILES=${FILES:-20000}
GIB=$((1 << 30))
build_release

log "generating a 1 GiB file and a $FILES-file tree in $TMP"
export F1=$TMP/one-gib.bin TREE=$TMP/tree OUT=$TMP/out D=$TMP/store
make_file "$F1" "$GIB" 1
make_tree "$TREE" "$FILES" 2
cat "$F1" >/dev/null
find "$TREE" -type f -print0 | xargs -0 cat >/dev/null
# Every timed run starts with no dirty pages of ours (or, as far as one
# syncfs can, of anyone's), so a flush measures only its own writes.
sync -f "$TMP"

# put: hash + write + fsync of a page-cached 1 GiB file, vs the slower of
# hashing it (openssl) and writing it durably (dd conv=fsync).
load_reset
put_c=() put_h=() put_w=()
for ((i = 0; i < REPS; i++)); do
    run_timed put_h '' 'openssl dgst -sha256 "$F1" >/dev/null'
    run_timed put_w 'rm -f "$OUT"; sync -f "$TMP"' 'dd if="$F1" of="$OUT" bs=4M conv=fsync status=none'
    run_timed put_c 'rm -rf "$OUT" "$D"; sync -f "$TMP"' '"$CAIRN" --data-dir "$D" put "$F1" >/dev/null'
done
max_each put_h put_w put_b
record store.put "put 1 GiB (cached file) vs slower of openssl dgst / dd conv=fsync" \
    "$(gbps $GIB "$(median "${put_c[@]}")")" \
    "$(gbps $GIB "$(median "${put_h[@]}")") / $(gbps $GIB "$(median "${put_w[@]}")")" \
    "$(ratio_median put_b put_c time)" 0.85

# get to /dev/null vs cat of the stored object itself.
export HEX
HEX=$("$CAIRN" --data-dir "$D" put "$F1" | cut -d' ' -f1)
[ -f "$D/objects/$HEX" ] || die "put did not store objects/$HEX"
load_reset
get_c=() get_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed get_b '' 'cat "$D/objects/$HEX" >/dev/null'
    run_timed get_c '' '"$CAIRN" --data-dir "$D" get "$HEX" >/dev/null'
done
record store.get "get 1 GiB to /dev/null vs cat" \
    "$(gbps $GIB "$(median "${get_c[@]}")")" "$(gbps $GIB "$(median "${get_b[@]}")")" \
    "$(ratio_median get_b get_c time)" 0.9
# Into /dev/null both may skip the copy (sendfile/splice); a pipe makes
# every byte cross to user space, as it does for a real consumer.
load_reset
getp_c=() getp_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed getp_b '' 'cat "$D/objects/$HEX" | cat >/dev/null'
    run_timed getp_c '' '"$CAIRN" --data-dir "$D" get "$HEX" | cat >/dev/null'
done
record store.get_pipe "get 1 GiB into a pipe (| cat >/dev/null) vs cat into the same pipe" \
    "$(gbps $GIB "$(median "${getp_c[@]}")")" "$(gbps $GIB "$(median "${getp_b[@]}")")" \
    "$(ratio_median getp_b getp_c time)" 0.9
rm -rf "$D" "$OUT"

# snapshot of the tree (hash + store + manifest) vs parallel hashing only;
# for context, also vs copying the tree durably (cp -r, then syncfs), which
# writes the same bytes into as many new files without hashing them.
load_reset
snap_c=() snap_b=() snap_w=()
for ((i = 0; i < REPS; i++)); do
    run_timed snap_b 'sync -f "$TMP"' 'find "$TREE" -type f -print0 | xargs -0 -P2 openssl dgst -sha256 >/dev/null'
    run_timed snap_c 'rm -rf "$D"; sync -f "$TMP"' '"$CAIRN" --data-dir "$D" snapshot "$TREE" --name tree >/dev/null'
    run_timed snap_w 'rm -rf "$OUT"; sync -f "$TMP"' 'cp -r "$TREE" "$OUT" && sync -f "$OUT"'
done
rm -rf "$OUT"
record store.snapshot "snapshot $FILES files of 1-64 KiB vs find | xargs -0 -P2 openssl dgst -sha256" \
    "$(secs "$(median "${snap_c[@]}")")" "$(secs "$(median "${snap_b[@]}")")" \
    "$(ratio_median snap_b snap_c time)" 1.0
record store.snapshot_vs_copy "snapshot of the same tree vs cp -r + sync -f (writing the bytes durably, no hashing)" \
    "$(secs "$(median "${snap_c[@]}")")" "$(secs "$(median "${snap_w[@]}")")" \
    "$(ratio_median snap_w snap_c time)" -

# checkout --link of that snapshot vs cp -al of the tree.
load_reset
co_c=() co_b=()
for ((i = 0; i < REPS; i++)); do
    run_timed co_b 'rm -rf "$OUT"; sync -f "$TMP"' 'cp -al "$TREE" "$OUT"'
    run_timed co_c 'rm -rf "$OUT"; sync -f "$TMP"' '"$CAIRN" --data-dir "$D" checkout tree "$OUT" --link >/dev/null'
done
diff -r "$TREE" "$OUT" >/dev/null || die "checkout --link did not reproduce the tree"
record store.checkout "checkout --link of $FILES files vs cp -al" \
    "$(secs "$(median "${co_c[@]}")")" "$(secs "$(median "${co_b[@]}")")" \
    "$(ratio_median co_b co_c time)" 0.8
rm -rf "$D" "$OUT" "$TREE"

# Peak RSS putting 4 GiB (must not grow with the blob). The bytes come from a
# pipe, so the disk only has to hold the stored copy.
rm -f "$F1"
load_reset
rss_c=$(seeded_stream $((4 * GIB)) 3 | rss_peak_kib "$CAIRN" --data-dir "$D" put -)
[ -n "$(find "$D/objects" -type f -size $((4 * GIB))c)" ] || die "put - did not store a 4 GiB blob"
rss_b=$(seeded_stream $((4 * GIB)) 3 | rss_peak_kib openssl dgst -sha256)
record store.rss "peak RSS of put of 4 GiB (cairn put - from a pipe; baseline: openssl dgst of the same stream, for scale)" \
    "$((rss_c / 1024)) MiB" "$((rss_b / 1024)) MiB" "$((rss_c / 1024))" 64 lower

print_results "$RESULTS"
