#!/bin/bash
# build.sh [BUILD_DIR] - builds the CUDA library, the GPU test and the GPU benchmark
# without PostgreSQL (plain nvcc/gcc), into BUILD_DIR (default .gpu/build, git-ignored).
# NVCC_EXTRA: more nvcc flags for the library (an A/B build: -DFGC_...=1).
# Works here and on the GPU machine; needs nvcc, gcc, cblas.h + libopenblas (see setup_device.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-.gpu/build}
mkdir -p "$B"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCH="-gencode arch=compute_90a,code=sm_90a"
BLAS_INC=""
[ -f /usr/include/cblas.h ] || [ -f /usr/include/x86_64-linux-gnu/cblas.h ] || BLAS_INC="-I.gpu/blas"
BLAS_LIB="-lopenblas"
if ! ls /usr/lib/x86_64-linux-gnu/libopenblas.so >/dev/null 2>&1; then
	BLAS_LIB="-L/usr/lib/x86_64-linux-gnu/openblas-pthread -l:libopenblas.so.0"
fi
CFLAGS="-O2 -std=gnu11 -fopenmp -Isrc/engine $BLAS_INC"
if [ -n "$(find cuda src/engine/gmm.h -newer "$B/flashgmm_cuda.so" 2>/dev/null)" ] || [ ! -f "$B/flashgmm_cuda.so" ]; then
	$NVCC -O3 -std=c++17 -Xcompiler -fPIC -Xcompiler -fvisibility=hidden $ARCH ${NVCC_EXTRA:-} -shared \
		-o "$B/flashgmm_cuda.so" cuda/flashgmm_cuda.cu -cudart static -Xlinker --exclude-libs,ALL
fi
for f in gmm_model gmm_cpu gmm_gpu; do
	gcc $CFLAGS -fPIC -c src/engine/$f.c -o "$B/$f.o"
done
gcc $CFLAGS -Itest/gpu test/gpu/gpu_test.c "$B"/gmm_model.o "$B"/gmm_cpu.o "$B"/gmm_gpu.o \
	-o "$B/gpu_test" $BLAS_LIB -ldl -lm
$NVCC -O2 -std=c++17 $ARCH -Isrc/engine -Itest/gpu $BLAS_INC -Xcompiler -fopenmp test/gpu/gpu_bench.cu \
	"$B"/gmm_model.o "$B"/gmm_cpu.o "$B"/gmm_gpu.o -o "$B/gpu_bench" -lcublas $BLAS_LIB -ldl -lm -lgomp
echo "built into $B"
