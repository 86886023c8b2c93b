#!/bin/bash
# run_bench.sh - the GPU benchmark in one command: test/gpu/run_bench.sh [--quick] [--big]
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${BUILD:-.gpu/build}
[ -x "$B/gpu_bench" ] || bash test/gpu/build.sh "$B" || exit 1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader || true
exec "$B/gpu_bench" "$B/flashgmm_cuda.so" "$@"
