#!/bin/bash
# run_tests.sh - the GPU tests in one command (on the GPU machine; prints SKIP without a GPU).
#   test/gpu/run_tests.sh [BUILD_DIR]
# Data: .gpu/data/{sift-opencv-100k,fashion-mnist-784}.u8.gz (integral data as bytes, made
# from ../shared/data by test/gpu/make_data.sh), else $FLASHGMM_DATA (default ../shared/data)/*/base.fvecs.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${1:-.gpu/build}
[ -x "$B/gpu_test" ] || bash test/gpu/build.sh "$B" || exit 1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
DATA=${FLASHGMM_DATA:-../shared/data}
data=()
for n in sift-opencv-100k fashion-mnist-784; do
	if [ -f .gpu/data/$n.u8.gz ]; then
		[ -f /tmp/$n.u8 ] || gunzip -c .gpu/data/$n.u8.gz > /tmp/$n.u8
		data+=(/tmp/$n.u8)
	elif [ -f "$DATA/$n/base.fvecs" ]; then
		data+=("$DATA/$n/base.fvecs")
	fi
done
rc=0
"$B/gpu_test" "$B/flashgmm_cuda.so" --missing || rc=1
if [ ${#data[@]} -eq 0 ]; then
	echo "SKIP gpu accuracy tests: no data (.gpu/data/*.u8.gz or $DATA/{sift-opencv-100k,fashion-mnist-784}/base.fvecs)"
	exit $rc
fi
# every E pass: default (none asked: on an H100 the sparse pass for mixtures of K >= 1024
# (either covariance), else h16; the test shapes take h16), h16 (FP16 tensor cores, dense, for D <= 128, pass 1 on wgmma on an H100;
# the 784-d data set and the streamed runs fall back to gemm), sparse (cuda/sparse.cuh, both
# covariances), h16mma (h16 with pass 1 on mma.sync), gemm (cuBLAS over blocks of rows) and
# fused (the fallback without cuBLAS); sparse-blocks is sparse in blocks of 16384 rows (the tables
# here fit one block of the default: this runs the per-block overflow checks and flushes) with lists
# of 32 candidates and the statistics sorted by component (the defaults past 2M rows; sparse runs
# the small tables' atomics; with lists of 32 each pair's r is packed into its entry) and the one-pass
# screen's seeds as FP16 (FLASHGMM_GPU_SPARSE_SEEDS16; with them a slack of 1.5 nats), kept in pinned
# host memory, and the overflowed rows of several blocks, with the rows a one-pass screen fails, in one
# dense pass (FLASHGMM_GPU_SPARSE_DEFER; all the defaults past 4M rows);
# sparse-sorted64 is sparse-blocks with lists of 64 (r kept in the lists) and FP32 seeds; sparse-rescore
# is sparse-blocks' lists and sums with r scored again instead of packed into the lists
# (FLASHGMM_GPU_SPARSE_RPACK=0), the FP16 seeds kept on the device (FLASHGMM_GPU_SPARSE_SEEDS_HOST=0) and
# the rows a one-pass screen fails collected again (FLASHGMM_GPU_SPARSE_RECOLLECT=1; sparse-blocks defers
# them to the dense pass, the default past 4M rows); sparse-shared is sparse-blocks with the dense pass's
# FP16 rows in the candidate lists' upper half and the gathered rows in their lower half
# (FLASHGMM_GPU_SPARSE_SHARE=2: here blocks of 1024 rows, diag, and 2048, spherical; the default for
# diag tables past 2M rows, where they are 16384);
# ESTEPS=h16 runs only that one
blocks=(FLASHGMM_GPU_ESTEP=sparse FLASHGMM_GPU_SPARSE_ROWS=16384 FLASHGMM_GPU_SPARSE_CAP=32 FLASHGMM_GPU_SPARSE_SORTED=1
	FLASHGMM_GPU_SPARSE_SEEDS16=2 FLASHGMM_GPU_SPARSE_DEFER=2)
for v in ${ESTEPS:-default h16 sparse sparse-blocks sparse-shared sparse-sorted64 sparse-rescore h16mma gemm fused}; do
	echo "=== E pass: $v"
	case "$v" in
		default) estep=(-u FLASHGMM_GPU_ESTEP) ;;
		sparse-blocks) estep=("${blocks[@]}") ;;
		sparse-shared) estep=("${blocks[@]}" FLASHGMM_GPU_SPARSE_SHARE=2) ;;
		sparse-sorted64) estep=(FLASHGMM_GPU_ESTEP=sparse FLASHGMM_GPU_SPARSE_ROWS=16384 FLASHGMM_GPU_SPARSE_CAP=64 FLASHGMM_GPU_SPARSE_SORTED=1) ;;
		sparse-rescore) estep=(FLASHGMM_GPU_ESTEP=sparse FLASHGMM_GPU_SPARSE_ROWS=16384 FLASHGMM_GPU_SPARSE_CAP=32 FLASHGMM_GPU_SPARSE_SORTED=1 FLASHGMM_GPU_SPARSE_RPACK=0 FLASHGMM_GPU_SPARSE_SEEDS16=2 FLASHGMM_GPU_SPARSE_SEEDS_HOST=0 FLASHGMM_GPU_SPARSE_RECOLLECT=1) ;;
		*) estep=("FLASHGMM_GPU_ESTEP=$v") ;;
	esac
	env "${estep[@]}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} \
		"$B/gpu_test" "$B/flashgmm_cuda.so" "${data[@]}" || rc=1
done
exit $rc
