#!/usr/bin/env bash
# Fan-out benchmark: N = 2, 4, 8 Cairn nodes want the same 256 MiB blob and
# the same 50-blob manifest at the same moment, from a slow origin (+20 ms
# before the first byte, paced to a fixed bandwidth). Compares Cairn's
# one-origin-fetch-per-cluster with N independent downloads and with the
# original's plain design (peers one by one, then the origin), and kills the
# blob's owner halfway once. See bench/FANOUT.md.
#
# As root it runs in network namespaces (a private bridge, 10.231.0.0/24,
# nothing in the root namespace); otherwise on 127.0.0.1.
#
# Usage: bench/fanout.sh [fanout.py run options, e.g. --nodes 2 4 --big-mib 64]
# Swarm runs (issue 15): --uplink-mbit 200 --modes alone cairn cairn-kill [--swarm]
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in curl openssl python3; do command -v "$tool" >/dev/null || { echo "fanout: needs $tool" >&2; exit 1; }; done
if [ "$(id -u)" -eq 0 ]; then command -v ip >/dev/null || { echo "fanout: needs iproute2 as root" >&2; exit 1; }; fi

echo "fanout: building cairn and cairn-bench-origin (release)" >&2
cargo build --release -q -p cairn --bin cairn -p cairn-testkit --bin cairn-bench-origin

base=${BENCH_TMP:-/work/benchtmp}
mkdir -p "$base"
work=$(mktemp -d "$base/fanout.XXXXXX")
trap 'rm -rf "$work"' EXIT
out=${FANOUT_RESULTS:-bench/fanout-results.json}
python3 bench/fanout.py run --cairn target/release/cairn --origin-bin target/release/cairn-bench-origin \
    --work "$work" --out "$out" "$@"
python3 bench/fanout.py table "$out"
