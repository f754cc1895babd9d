#!/usr/bin/env bash
# The swarm simulation (bench/swarm-sim): drives Cairn's real piece scheduler
# and tracker (crates/cairn-cluster/src/swarm) over modelled links. Results
# and what the model is: bench/FANOUT.md, "Swarm simulation".
#
# Usage: bench/swarm-sim.sh            every table of bench/FANOUT.md
#        bench/swarm-sim.sh ARGS...    one run, e.g. --links ns200 --nodes 4 8 12 --sizes 64MiB --fail 0
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p swarm-sim
sim=target/release/swarm-sim
if [ $# -gt 0 ]; then exec "$sim" "$@"; fi
echo "## model check: today's design in the namespace model (measured: 2.97, 6.88, 10.80 x T1)"
"$sim" --links ns200 --nodes 4 8 12 --sizes 64MiB --fail 0 --today
echo "## namespace model (N = 4, 8, 12, 16; 200 Mbit/s)"
"$sim" --links ns200 --nodes 4 8 12 16 --sizes 64MiB 1GiB --fail 0
echo "## namespace model, owner killed at T1/2"
"$sim" --links ns200 --nodes 4 8 12 16 --sizes 64MiB 1GiB --fail 0 --kill-owner
echo "## namespace model, one lying peer"
"$sim" --links ns200 --nodes 4 8 12 16 --sizes 64MiB 1GiB --fail 0 --liars 1
echo "## fleet, 1% failing"
"$sim" --links fleet --nodes 100 1000 10000 --sizes 256MiB 3GiB --fail 0.01
