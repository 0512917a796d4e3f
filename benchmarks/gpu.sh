#!/usr/bin/env bash
# flowfit against nflows, normflows and zuko on a CUDA GPU, in at most 10 minutes on a fresh
# machine: benchmarks/peers.py installs torch==2.13.0 (on Linux, PyPI's wheel is the CUDA
# build), the peers at its pinned versions and flowfit (editable) into benchmarks/.peers-venv,
# then times a training step at batches 256 and 4096, log_prob and sampling throughput, and
# races the libraries to 0.35 nats at batches 256 and 4096 (STEPS steps per run, seed 0, and
# flowfit with its own defaults). Writes a Markdown table to OUT; the rows also go to OUT.log
# as they come, so a run cut short by the budget keeps what it measured.
#
#   benchmarks/gpu.sh [OUT [more peers.py options]]     (OUT: benchmarks/results/peers_gpu.md)
#
# Environment: STEPS (race steps per run, default 2000; the reference protocol's 5,000 do not
# fit in 10 minutes), ROUNDS (timing rounds, default 3), BUDGET (seconds for everything,
# install included, default 600), DEVICE (default cuda), PYTHON (default python3, 3.10+ with
# venv). A machine without network installs from wheels: PIP_FIND_LINKS=DIR PIP_NO_INDEX=1;
# where the package index serves a CPU-only torch, point PIP_INDEX_URL at a CUDA wheel index
# (peers.py stops with a clear message when torch sees no GPU).
# A dry run on a CPU, in the current interpreter, tiny settings:
#
#   DEVICE=cpu benchmarks/gpu.sh /tmp/peers.md --here --rounds 1 --steps 20 --defaults-steps 20 --batch 64
set -euo pipefail
start=$SECONDS
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/peers_gpu.md}
shift $(($# > 0 ? 1 : 0))
device=${DEVICE:-cuda}
if [[ $device == cuda* ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader ||
        { echo "gpu.sh: no NVIDIA GPU here (nvidia-smi failed); DEVICE=cpu for a dry run" >&2; exit 1; }
fi
left=$((${BUDGET:-600} - (SECONDS - start)))
timeout --signal=INT --kill-after=10 "$left" "${PYTHON:-python3}" benchmarks/peers.py \
    --device "$device" --threads 4 --rounds "${ROUNDS:-3}" --batch 256 4096 \
    --train --seeds 0 --steps "${STEPS:-2000}" --out "$out" "$@" 2>&1 | tee "${out%.md}.log"
echo "gpu.sh: $out written in $((SECONDS - start)) s"
