#!/usr/bin/env bash
# GPU benchmark of camotune's model and training step: torch and timm only, camotune read from
# this checkout (not installed), synthetic tensors, no downloads. Writes $OUT/gpu-bench.json
# and $OUT/gpu-bench.md and prints the markdown. See docs/benchmarks.md.
#
#   benchmarks/gpu.sh                 # full: 290 s budget (edgenext_base's compile needs more:
#                                     #   BUDGET_S=540 for the compile figure)
#   QUICK=1 benchmarks/gpu.sh         # quick: 95 s budget, no compile
#   DEVICE=cpu QUICK=1 SIZE=64 BACKBONE=edgenext_xx_small MAXB_CAP=16 PACK_SECONDS=2 \
#       benchmarks/gpu.sh             # a CPU check that everything runs
#
# Settings (environment): QUICK (0|1), OUT (./gpu-results), DEVICE (cuda|cpu), BACKBONE
# (edgenext_base), SMALL_BACKBONE (edgenext_xx_small, the packed trials), SIZE (384),
# BATCHES (ceiling; quick 8,16, full 1,2,4,8,16,32), PRECISIONS (quick fp32,bf16; full
# fp32,bf16,bf16+compile), COMPILE_BATCHES (16), STEP_BATCHES (8,16), ACCUMULATION (4),
# MEASURE_S (seconds per figure; quick 0.5, full 1), MAXB_SIZES (quick SIZE, full
# 320,352,384), MAXB_PROBES (quick 5, full 6), MAXB_START (32, CPU only), MAXB_CAP (512),
# PACK_PROCS (1,2,4), PACK_SECONDS (8), PACK_SIZE (SIZE), PACK_BATCH (8),
# BUDGET_S (quick 95, full 290: sections stop starting new figures past their share),
# THREADS (torch CPU threads, 0 = torch's default), CUDNN_BENCHMARK (0; 1 autotunes every
# new shape, ~20 s each for edgenext_base), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OUT="${OUT:-gpu-results}"
# PYTHON may carry options (e.g. "python3 -S"): split on purpose
exec ${PYTHON:-python3} benchmarks/gpu_bench.py
