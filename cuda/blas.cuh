/*
 * blas.cuh - cuBLAS, loaded at run time.
 *
 * flashgmm_cuda.so links only the CUDA runtime (statically) so that it loads
 * on any machine with a driver.  cuBLAS (libcublas.so.13, ~600 MB with
 * cublasLt) is looked up the first time a chunked E pass wants it: from the
 * loader's path, then from /usr/local/cuda/lib64.  Without it the engine runs
 * its fused kernels (slower, same results within the accuracy bounds) and
 * fgc_estep_variant() says why.
 *
 * The handle (and cuBLAS's own workspace) lives as long as the process, like
 * the CUDA context; it is not counted in the engine's per-call allocations.
 */
#pragma once
#include <dlfcn.h>
#include <cstdio>
#include <cublas_v2.h>

namespace fgc {

struct Blas
{
	int state = 0;				/* 0 not tried, 1 usable, -1 unusable (why) */
	char why[200] = "";
	void *lib = nullptr;
	cublasHandle_t h = nullptr;
	decltype(&cublasCreate_v2) create = nullptr;
	decltype(&cublasSetStream_v2) set_stream = nullptr;
	/* the C signature (C++ sees an overload set) */
	typedef cublasStatus_t (*gemm_ex_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
										 const void *, const void *, cudaDataType, int, const void *, cudaDataType, int,
										 const void *, void *, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
	gemm_ex_fn gemm_ex = nullptr;
	typedef cublasStatus_t (*gemm_sb_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
										 const void *, const void *, cudaDataType, int, long long, const void *,
										 cudaDataType, int, long long, const void *, void *, cudaDataType, int, long long,
										 int, cublasComputeType_t, cublasGemmAlgo_t);
	gemm_sb_fn gemm_sb = nullptr;
	decltype(&cublasGetVersion_v2) get_version = nullptr;
	int version = 0;

	bool load(cudaStream_t s)
	{
		if (state != 0)
			return state > 0;
		state = -1;
		const char *names[] = {"libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.13", "libcublas.so"};
		for (const char *n : names)
			if ((lib = dlopen(n, RTLD_NOW | RTLD_LOCAL)) != nullptr)
				break;
		if (lib == nullptr)
		{
			snprintf(why, sizeof(why), "cuBLAS not found (libcublas.so.13): %s", dlerror());
			return false;
		}
		create = (decltype(create)) dlsym(lib, "cublasCreate_v2");
		set_stream = (decltype(set_stream)) dlsym(lib, "cublasSetStream_v2");
		gemm_ex = (decltype(gemm_ex)) dlsym(lib, "cublasGemmEx");
		gemm_sb = (gemm_sb_fn) dlsym(lib, "cublasGemmStridedBatchedEx");
		get_version = (decltype(get_version)) dlsym(lib, "cublasGetVersion_v2");
		if (!create || !set_stream || !gemm_ex || !gemm_sb)
		{
			snprintf(why, sizeof(why), "cuBLAS lacks cublasCreate_v2/cublasSetStream_v2/cublasGemmEx/cublasGemmStridedBatchedEx");
			return false;
		}
		cublasStatus_t st = create(&h);
		if (st != CUBLAS_STATUS_SUCCESS)
		{
			snprintf(why, sizeof(why), "cublasCreate failed (status %d)", (int) st);
			return false;
		}
		if ((st = set_stream(h, s)) != CUBLAS_STATUS_SUCCESS)
		{
			snprintf(why, sizeof(why), "cublasSetStream failed (status %d)", (int) st);
			return false;
		}
		if (get_version)
			get_version(h, &version);
		state = 1;
		snprintf(why, sizeof(why), "cuBLAS %d loaded", version);
		return true;
	}

	/*
	 * Column-major C (m x n) = A^T B + beta C with A (k x m, lda) and B (k x n, ldb)
	 * column-major: both operands K-major ("TN"), the only TF32 layout Hopper's
	 * wgmma kernels take (cuBLAS falls back to sm80 mma.sync kernels otherwise,
	 * measured 2-3x slower).  TF32 tensor cores, FP32 accumulation.
	 */
	cublasStatus_t gemm_tn(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float beta, float *C,
						   int ldc) const
	{
		const float one = 1.0f;
		return gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta, C,
					   CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
	}
	/* P of them: A_p = A + p * sa, B_p = B + p * sb, C_p = C + p * sc */
	cublasStatus_t gemm_tn_batched(int m, int n, int k, const float *A, int lda, long long sa, const float *B, int ldb,
								   long long sb, float beta, float *C, int ldc, long long sc, int P) const
	{
		const float one = 1.0f;
		return gemm_sb(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_32F, lda, sa, B, CUDA_R_32F, ldb, sb, &beta,
					   C, CUDA_R_32F, ldc, sc, P, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
	}
};

}								/* namespace fgc */
