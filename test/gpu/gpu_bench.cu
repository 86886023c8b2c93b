/*
 * gpu_bench.cu - benchmark of the CUDA engine (a program that prints a table,
 * never a test).
 *
 *   gpu_bench LIB [--quick] [--ten] [--big] [--core] [--small-d] [--assign] [--sparse] [--sweep] [--steady]
 *             [--fit N K diag|sph]
 *     (1M-row shapes; --ten adds the 10M-row targets, --big N = 100M streamed;
 *      --quick leaves out the slow fused-kernel comparisons at 4096 and 10M;
 *      --small-d runs only h16 against gemm at D = 32, 64, 96; --assign only
 *      the h16 top-8 assignment of 1M rows, both precisions, for profiling;
 *      --sweep dense against sparse over rows and K, both covariances;
 *      --steady only 12-iteration fits at 1M rows, whose medians are past
 *      the first iterations' large moves from the random start, and the
 *      engine's own fit from its k-means++ seeding; --fit N K diag|sph only
 *      that fit, 12 iterations, N rows (M suffix: millions) of --steady's
 *      data, or --ten's from 10M rows, with FLASHGMM_GPU_ESTEP's E pass if
 *      set, for FLASHGMM_GPU_PROFILE=1 and ncu)
 *
 * Per shape: ms per EM iteration (median of device-event times after a
 * warm-up iteration, X already on the device), TFLOP/s counting 12*N*K*D
 * flops per diag iteration and 8*N*K*D per spherical one, the fraction of
 * the card's matrix-unit peak measured here with cuBLAS (TF32 GEMM, the
 * precision of our kernels; the BF16 peak is printed too), and peak device
 * memory (the fraction: of the TF32 peak, or of the FP16 peak = BF16's for
 * h16).  Variants: the engine's E passes ("h16": FP16 tensor-core kernels,
 * the default for D <= 128, on wgmma (hopper.cuh) on an H100; "h16mma": the
 * same on mma.sync (half.cuh); "gemm": cuBLAS products over blocks of
 * rows; "fused": kernels.cuh), the TF32 ones in 3xTF32 (their default) or
 * forced TF32; a cuBLAS baseline that materialises the N x K
 * responsibilities (where it fits); and the CPU engine on a small shape.
 * Data: clustered synthetic (never zeros).
 */
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <dlfcn.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>

extern "C" {
#include "gmm.h"
#include "common.h"
}

#define CUDA_OK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); exit(1); } } while (0)
#define CUBLAS_OK(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { printf("cuBLAS error %d at %s:%d\n", (int) s_, __FILE__, __LINE__); exit(1); } } while (0)

static double g_peak_tf32 = 0, g_peak_bf16 = 0;
static const char *(*g_variant_fn)(void) = NULL;	/* fgc_estep_variant of the loaded library */

/* E pass of the next engine call: "default" (none asked: on an H100 sparse for K >= 1024, else h16), "h16"
 * (dense, pass 1 on wgmma on an H100), "sparse", "h16mma" (pass 1 on mma.sync), "gemm" (cuBLAS over blocks of
 * rows) or "fused" */
static const char *use_estep(const char *v)
{
	if (strcmp(v, "default") == 0)
		unsetenv("FLASHGMM_GPU_ESTEP");
	else
		setenv("FLASHGMM_GPU_ESTEP", v, 1);
	return v;
}
static const char *used_estep(void)
{
	return g_variant_fn ? g_variant_fn() : "?";
}

struct Row
{
	char shape[64];
	char variant[48];
	double ms;
	double tflops;
	double frac;
	double peak_mib;
	char note[128];
};
static std::vector<Row> rows;

static void add(const char *shape, const char *variant, double ms, double flops, double peak_mib, const char *note)
{
	Row r;
	snprintf(r.shape, sizeof(r.shape), "%s", shape);
	snprintf(r.variant, sizeof(r.variant), "%s", variant);
	r.ms = ms;
	r.tflops = ms > 0 && flops > 0 ? flops / (ms * 1e-3) / 1e12 : 0;
	/* of the peak of the products the variant runs: FP16 (= the BF16 rate) for h16, else TF32 */
	double peak = strncmp(variant, "h16", 3) == 0 || strncmp(variant, "sparse", 6) == 0 ? g_peak_bf16 : g_peak_tf32;
	r.frac = peak > 0 ? r.tflops / peak : 0;
	r.peak_mib = peak_mib;
	snprintf(r.note, sizeof(r.note), "%s", note ? note : "");
	rows.push_back(r);
	printf("  %-28s %-26s %10.3f ms %8.1f TFLOP/s %6.1f%% %10.1f MiB  %s\n", r.shape, r.variant, r.ms, r.tflops,
		   100 * r.frac, r.peak_mib, r.note);
	fflush(stdout);
}

/* the row of a call that failed: the engine's message */
static void add_failed(const char *shape, const char *variant, const gmm_error &err)
{
	char note[96];
	snprintf(note, sizeof(note), "error: %.80s", err.msg);
	add(shape, variant, 0, 0, 0, note);
}

/* flops of one EM iteration: 12 N K D (diag), 8 N K D (spherical) */
static double em_flops(gmm_cov_type cov, int64_t N, int K, int D)
{
	return (cov == GMM_COV_DIAG ? 12.0 : 8.0) * N * (double) K * D;
}

/* ---- cuBLAS peak ------------------------------------------------------------ */
__global__ void fill_kernel(float *p, size_t n, uint32_t seed)
{
	for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n; i += (size_t) gridDim.x * blockDim.x)
	{
		uint32_t h = (uint32_t) i * 2654435761u ^ seed;
		h ^= h >> 15;
		h *= 0x2c1b3c6du;
		h ^= h >> 12;
		p[i] = (float) (h & 0xffff) / 65536.0f - 0.5f;
	}
}
__global__ void to_bf16_kernel(const float *a, __nv_bfloat16 *b, size_t n)
{
	for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n; i += (size_t) gridDim.x * blockDim.x)
		b[i] = __float2bfloat16(a[i]);
}

static void measure_peak(cublasHandle_t h)
{
	const int n = 8192;
	float *A, *B, *C;
	__nv_bfloat16 *Ab, *Bb;
	CUDA_OK(cudaMalloc(&A, sizeof(float) * n * n));
	CUDA_OK(cudaMalloc(&B, sizeof(float) * n * n));
	CUDA_OK(cudaMalloc(&C, sizeof(float) * n * n));
	CUDA_OK(cudaMalloc(&Ab, 2ull * n * n));
	CUDA_OK(cudaMalloc(&Bb, 2ull * n * n));
	fill_kernel<<<1024, 256>>>(A, (size_t) n * n, 1);
	fill_kernel<<<1024, 256>>>(B, (size_t) n * n, 2);
	to_bf16_kernel<<<1024, 256>>>(A, Ab, (size_t) n * n);
	to_bf16_kernel<<<1024, 256>>>(B, Bb, (size_t) n * n);
	float one = 1.f, zero = 0.f;
	cudaEvent_t a, b;
	cudaEventCreate(&a);
	cudaEventCreate(&b);
	for (int mode = 0; mode < 2; mode++)
	{
		std::vector<float> t;
		for (int it = 0; it < 8; it++)
		{
			cudaEventRecord(a);
			if (mode == 0)
				CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_32F, n, B, CUDA_R_32F, n,
									   &zero, C, CUDA_R_32F, n, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
			else
				CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, Ab, CUDA_R_16BF, n, Bb, CUDA_R_16BF,
									   n, &zero, C, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
			cudaEventRecord(b);
			cudaEventSynchronize(b);
			float ms;
			cudaEventElapsedTime(&ms, a, b);
			if (it >= 2)
				t.push_back(ms);
		}
		std::sort(t.begin(), t.end());
		double tf = 2.0 * n * n * (double) n / (t[t.size() / 2] * 1e-3) / 1e12;
		if (mode == 0)
			g_peak_tf32 = tf;
		else
			g_peak_bf16 = tf;
	}
	printf("cuBLAS 8192^3 GEMM peak: TF32 %.1f TFLOP/s, BF16 %.1f TFLOP/s (random data, median of 6)\n", g_peak_tf32,
		   g_peak_bf16);
	cudaFree(A);
	cudaFree(B);
	cudaFree(C);
	cudaFree(Ab);
	cudaFree(Bb);
}

/* ---- cuBLAS baseline that materialises N x K -------------------------------- */
/* A = [x | x^2] (N x 2D, row-major) ; S = A W^T + c (N x K) ; softmax rows ; stats = S^T A (K x 2D) */
__global__ void aug_kernel(const float *X, int64_t N, int D, float *A)
{
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < N * D; i += (int64_t) gridDim.x * blockDim.x)
	{
		int64_t n = i / D;
		int d = (int) (i % D);
		float v = X[i];
		A[n * 2 * D + d] = v;
		A[n * 2 * D + D + d] = v * v;
	}
}
__global__ void softmax_rows_kernel(float *S, int64_t N, int K, const float *c)
{
	int64_t n = blockIdx.x;
	if (n >= N)
		return;
	float *s = S + n * K;
	__shared__ float red[32];
	float m = -INFINITY;
	for (int k = threadIdx.x; k < K; k += blockDim.x)
	{
		s[k] += c[k];
		m = fmaxf(m, s[k]);
	}
	for (int o = 16; o; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(~0u, m, o));
	if ((threadIdx.x & 31) == 0)
		red[threadIdx.x >> 5] = m;
	__syncthreads();
	m = -INFINITY;
	for (int i = 0; i < (int) (blockDim.x >> 5); i++)
		m = fmaxf(m, red[i]);
	__syncthreads();
	float l = 0.f;
	for (int k = threadIdx.x; k < K; k += blockDim.x)
		l += __expf(s[k] - m);
	for (int o = 16; o; o >>= 1)
		l += __shfl_xor_sync(~0u, l, o);
	if ((threadIdx.x & 31) == 0)
		red[threadIdx.x >> 5] = l;
	__syncthreads();
	l = 0.f;
	for (int i = 0; i < (int) (blockDim.x >> 5); i++)
		l += red[i];
	float lz = m + __logf(l);
	for (int k = threadIdx.x; k < K; k += blockDim.x)
		s[k] = __expf(s[k] - lz);
}

static void cublas_baseline(cublasHandle_t h, const char *shape, int64_t N, int K, int D, const float *hX)
{
	size_t need = sizeof(float) * ((size_t) N * D + (size_t) N * 2 * D + (size_t) N * K + (size_t) K * 2 * D * 2 + K);
	size_t fr, tot;
	cudaMemGetInfo(&fr, &tot);
	if (need > fr * 0.9)
	{
		add(shape, "cuBLAS materialised NxK", 0, 0, need / 1048576.0, "does not fit");
		return;
	}
	float *X, *A, *S, *W, *st, *c;
	CUDA_OK(cudaMalloc(&X, sizeof(float) * N * D));
	CUDA_OK(cudaMalloc(&A, sizeof(float) * N * 2 * D));
	CUDA_OK(cudaMalloc(&S, sizeof(float) * N * K));
	CUDA_OK(cudaMalloc(&W, sizeof(float) * K * 2 * D));
	CUDA_OK(cudaMalloc(&st, sizeof(float) * K * 2 * D));
	CUDA_OK(cudaMalloc(&c, sizeof(float) * K));
	CUDA_OK(cudaMemcpy(X, hX, sizeof(float) * N * D, cudaMemcpyHostToDevice));
	fill_kernel<<<1024, 256>>>(W, (size_t) K * 2 * D, 3);
	CUDA_OK(cudaMemset(c, 0, sizeof(float) * K));
	aug_kernel<<<4096, 256>>>(X, N, D, A);
	float one = 1.f, zero = 0.f;
	cudaEvent_t a, b;
	cudaEventCreate(&a);
	cudaEventCreate(&b);
	std::vector<float> t;
	for (int it = 0; it < 6; it++)
	{
		cudaEventRecord(a);
		/* column-major view: S^T (K x N) = W (K x 2D) * A^T (2D x N) */
		CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, K, (int) N, 2 * D, &one, W, CUDA_R_32F, 2 * D, A,
							   CUDA_R_32F, 2 * D, &zero, S, CUDA_R_32F, K, CUBLAS_COMPUTE_32F_FAST_TF32,
							   CUBLAS_GEMM_DEFAULT));
		softmax_rows_kernel<<<(unsigned) N, 256>>>(S, N, K, c);
		/* stats^T (2D x K) = A^T (2D x N) * S (N x K) */
		CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, 2 * D, K, (int) N, &one, A, CUDA_R_32F, 2 * D, S,
							   CUDA_R_32F, K, &zero, st, CUDA_R_32F, 2 * D, CUBLAS_COMPUTE_32F_FAST_TF32,
							   CUBLAS_GEMM_DEFAULT));
		cudaEventRecord(b);
		CUDA_OK(cudaEventSynchronize(b));
		float ms;
		cudaEventElapsedTime(&ms, a, b);
		if (it >= 1)
			t.push_back(ms);
	}
	std::sort(t.begin(), t.end());
	/* one GEMM for scores (no recompute): 4NKD + 4NKD = 8NKD real flops; report against the 12NKD convention */
	add(shape, "cuBLAS TF32 materialised", t[t.size() / 2], 12.0 * N * K * D, need / 1048576.0,
		"E(1 GEMM)+softmax+stats GEMM, diag");
	cudaFree(X);
	cudaFree(A);
	cudaFree(S);
	cudaFree(W);
	cudaFree(st);
	cudaFree(c);
}

/* ---- our engine ---------------------------------------------------------------- */
static gmm_model *make_model(const float *X, int64_t N, int K, int D, gmm_cov_type cov, uint64_t seed)
{
	/* a plausible starting model: K rows as means, unit-ish variances, equal weights */
	gmm_error err;
	gmm_model *m = gmm_model_alloc(K, D, cov, &err);
	uint64_t s = seed;
	int VL = cov == GMM_COV_DIAG ? D : 1;
	for (int k = 0; k < K; k++)
	{
		int64_t r = (int64_t) (sm64(&s) % (uint64_t) N);
		memcpy(m->means + (size_t) k * D, X + r * D, sizeof(float) * D);
		m->weights[k] = 1.0f / K;
		for (int j = 0; j < VL; j++)
			m->vars[(size_t) k * VL + j] = 1.0f;
	}
	gmm_model_prepare(m, &err);
	return m;
}

/* the fit parameters of a benchmark row: iters EM iterations whatever the log-likelihood does, E pass estep */
static gmm_fit_params bench_params(int K, gmm_cov_type cov, int iters, const char *estep)
{
	use_estep(estep);
	gmm_fit_params p;
	gmm_fit_params_default(&p, K);
	p.cov = cov;
	p.max_iter = iters;
	p.tol = -INFINITY;
	return p;
}

/*
 * The benchmark's data sets, D = 128: the 1M-row shapes' (2048 clusters,
 * seed 1; also their N-row prefixes) and the 10M-row ones' (4096 clusters,
 * seed 2), so that --fit, --steady, --ten and --sparse fit the same rows.
 */
static float *data_1m(int64_t N) { return make_clustered(N, 128, 2048, 1); }
static float *data_10m(int64_t N) { return make_clustered(N, 128, 4096, 2); }

/*
 * The engine's whole fit as CREATE INDEX runs it (gmm_gpu_fit: seeding on
 * the device, then EM), iters EM iterations; ms per iteration as engine_em
 * reports it (the median of the EM iterations, the seeding not in it).
 */
static void engine_fit(const char *shape, const float *X, int64_t N, int K, int D, gmm_cov_type cov, int iters,
					   const char *tag, const char *estep = "default")
{
	gmm_fit_params p = bench_params(K, cov, iters, estep);
	gmm_model *m = nullptr;
	gmm_fit_report rep;
	gmm_error err;
	gmm_gpu_stats gs;
	gmm_gpu_set_precision(GMM_GPU_PREC_DEFAULT, NULL);
	char variant[64];
	snprintf(variant, sizeof(variant), "%s %s%s", estep, cov == GMM_COV_DIAG ? "diag" : "sph", tag);
	if (gmm_gpu_fit(X, N, D, &p, &m, &rep, &err) != GMM_OK)
	{
		add_failed(shape, variant, err);
		return;
	}
	printf("    (E pass: %s)\n", used_estep());
	gmm_gpu_last_stats(&gs, NULL);
	const double flops = em_flops(cov, N, K, D);
	char note[128];
	snprintf(note, sizeof(note), "E %.3f ms; seeding %.2f s; re-seeded %d; %d direct; LL %.6f, %d it.", gs.ms_estep,
			 rep.seconds_init, rep.reseeded, gs.flagged, rep.mean_loglik, rep.iterations);
	add(shape, variant, gs.ms_per_iter, flops, gs.peak_bytes / 1048576.0, note);
	gmm_model_free(m);
}

static void engine_em(const char *shape, const float *X, int64_t N, int K, int D, gmm_cov_type cov, int prec,
					  int64_t budget, int iters, const char *tag, const char *estep)
{
	gmm_fit_params p = bench_params(K, cov, iters, estep);
	p.device_mem_budget = budget;
	gmm_model *m = make_model(X, N, K, D, cov, 11);
	gmm_fit_report rep;
	gmm_error err;
	gmm_gpu_stats gs;
	gmm_gpu_set_precision((gmm_gpu_precision) prec, NULL);
	auto t0 = std::chrono::steady_clock::now();
	gmm_status st = gmm_gpu_em(X, N, m, &p, &rep, &err);
	double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	char variant[64];
	snprintf(variant, sizeof(variant), "%s %s %s%s", estep, cov == GMM_COV_DIAG ? "diag" : "sph",
			 !strncmp(estep, "h16", 3) ? "3xFP16" : !strcmp(estep, "sparse") ? "FP16 screen"
			 : !strcmp(estep, "default") ? "(see E pass)" : prec == GMM_GPU_PREC_3XTF32 ? "3xTF32" : "TF32", tag);
	if (st != GMM_OK)
	{
		add_failed(shape, variant, err);
		gmm_model_free(m);
		return;
	}
	printf("    (E pass: %s)\n", used_estep());
	gmm_gpu_last_stats(&gs, NULL);
	const double flops = em_flops(cov, N, K, D);
	char note[96];
	snprintf(note, sizeof(note), "E %.3f ms; X %.0f MiB;%s %d direct; wall %.1fs", gs.ms_estep, gs.x_bytes / 1048576.0,
			 gs.streamed ? " streamed;" : "", gs.flagged, wall);
	add(shape, variant, gs.ms_per_iter, flops, gs.peak_bytes / 1048576.0, note);
	gmm_model_free(m);
}

/*
 * The top-m assignment (tau = 1/K) with E pass estep; with "h16" both of its
 * precisions on wgmma: three products per score (FLASHGMM_GPU_ASSIGN=x3),
 * then one (the default), the second row saying how often its lists match
 * the first's.
 */
static void engine_assign(const char *shape, const float *X, int64_t N, int K, int D, int mm,
						  const char *estep = "gemm")
{
	use_estep(estep);
	gmm_model *m = make_model(X, N, K, D, GMM_COV_SPHERICAL, 5);
	int32_t *comp[2];
	float *resp = (float *) malloc(sizeof(float) * N * mm);
	gmm_error err;
	gmm_gpu_stats gs;
	gmm_gpu_set_precision(GMM_GPU_PREC_DEFAULT, NULL);
	const bool both = strcmp(estep, "h16") == 0;
	for (int v = 0; v < (both ? 2 : 1); v++)
	{
		comp[v] = (int32_t *) malloc(sizeof(int32_t) * N * mm);
		if (both)
			setenv("FLASHGMM_GPU_ASSIGN", v == 0 ? "x3" : "x1", 1);
		double best = 1e30;
		for (int rep = 0; rep < 2; rep++)
		{
			if (gmm_gpu_assign(m, X, N, mm, 1.0f / K, 1.0f, comp[v], resp, &err) != GMM_OK)
			{
				add_failed(shape, "flash assign", err);
				break;
			}
			gmm_gpu_last_stats(&gs, NULL);
			best = std::min(best, gs.ms_kernel);
		}
		char variant[64], note[96];
		snprintf(variant, sizeof(variant), "%s assign m=%d %s", estep, mm,
				 strncmp(estep, "h16", 3) ? "3xTF32" : (both && v == 1) ? "1xFP16" : "3xFP16");
		if (v == 1)
		{
			int64_t top = 0, list = 0;
			for (int64_t n = 0; n < N; n++)
			{
				top += comp[0][n * mm] == comp[1][n * mm];
				list += memcmp(comp[0] + n * mm, comp[1] + n * mm, sizeof(int32_t) * mm) == 0;
			}
			snprintf(note, sizeof(note), "vs 3xFP16: top-1 same %.3f%%, list same %.3f%%", 100.0 * top / N,
					 100.0 * list / N);
		}
		else
			snprintf(note, sizeof(note), "device passes only (X resident); %d direct; H2D %.2f s", gs.flagged,
					 gs.seconds_h2d);
		printf("    (pass: %s)\n", used_estep());
		add(shape, variant, best, 2.0 * N * (double) K * D, gs.peak_bytes / 1048576.0, note);
	}
	unsetenv("FLASHGMM_GPU_ASSIGN");
	for (int v = 0; v < (both ? 2 : 1); v++)
		free(comp[v]);
	free(resp);
	gmm_model_free(m);
}

static void cpu_em(const char *shape, const float *X, int64_t N, int K, int D, gmm_cov_type cov)
{
	gmm_fit_params p;
	gmm_fit_params_default(&p, K);
	p.cov = cov;
	p.max_iter = 3;
	p.tol = -INFINITY;
	gmm_model *m = make_model(X, N, K, D, cov, 11);
	gmm_fit_report rep;
	gmm_error err;
	if (gmm_em(X, N, m, &p, &rep, &err) != GMM_OK)
	{
		add(shape, "CPU engine", 0, 0, 0, err.msg);
		return;
	}
	double ms = (rep.seconds_estep + rep.seconds_mstep) * 1000.0 / (rep.iterations + 1);
	add(shape, cov == GMM_COV_DIAG ? "CPU engine diag" : "CPU engine sph", ms,
		em_flops(cov, N, K, D), 0, "OpenBLAS sgemm, all cores");
	gmm_model_free(m);
}

/* the rows gathered so far, as a markdown table */
static void print_table()
{
	printf("\n| shape | variant | ms/iter | TFLOP/s | of TF32 peak | peak dev MiB | note |\n|---|---|---:|---:|---:|---:|---|\n");
	for (auto &r : rows)
		printf("| %s | %s | %.3f | %.1f | %.1f%% | %.1f | %s |\n", r.shape, r.variant, r.ms, r.tflops, 100 * r.frac,
			   r.peak_mib, r.note);
	printf("\ncuBLAS peak on this card: TF32 %.1f, BF16 %.1f TFLOP/s\n", g_peak_tf32, g_peak_bf16);
}

int main(int argc, char **argv)
{
	if (argc < 2)
	{
		fprintf(stderr, "usage: %s LIB [--quick] [--ten] [--big] [--core] [--small-d] [--assign] [--sparse] [--sweep] [--steady] [--fit N K diag|sph]\n", argv[0]);
		return 2;
	}
	bool quick = false, big = false, ten = false, core = false, small_d = false, assign = false, sparse = false, sweep = false,
		 steady = false;
	int64_t fit_n = 0;
	int fit_k = 0;
	gmm_cov_type fit_cov = GMM_COV_DIAG;
	for (int i = 2; i < argc; i++)
	{
		if (!strcmp(argv[i], "--fit") && i + 3 < argc)
		{
			char *end;
			fit_n = strtoll(argv[i + 1], &end, 10);
			if (*end == 'M')
				fit_n *= 1000000;
			fit_k = atoi(argv[i + 2]);
			fit_cov = !strcmp(argv[i + 3], "sph") ? GMM_COV_SPHERICAL : GMM_COV_DIAG;
			i += 3;
		}
		if (!strcmp(argv[i], "--quick")) quick = true;
		if (!strcmp(argv[i], "--ten")) ten = true;
		if (!strcmp(argv[i], "--big")) big = true;
		if (!strcmp(argv[i], "--core")) core = true;
		if (!strcmp(argv[i], "--sparse")) sparse = true;
		if (!strcmp(argv[i], "--sweep")) sweep = true;
		if (!strcmp(argv[i], "--steady")) steady = true;
		if (!strcmp(argv[i], "--small-d")) small_d = true;
		if (!strcmp(argv[i], "--assign")) assign = true;
	}
	gmm_error err;
	if (gmm_gpu_load(argv[1], &err) != GMM_OK)
	{
		printf("SKIP benchmark: %s\n", err.msg);
		return 0;
	}
	printf("device: %s\n", gmm_gpu_device_name());
	{
		void *hl = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
		if (hl)
			g_variant_fn = (const char *(*)(void)) dlsym(hl, "fgc_estep_variant");
	}
	cublasHandle_t h;
	CUBLAS_OK(cublasCreate(&h));
	measure_peak(h);
	printf("  %-28s %-26s %13s %16s %7s %14s  %s\n", "shape", "variant", "ms/iter", "TFLOP/s", "peak", "dev mem", "note");

	const int D = 128;
	const int P3 = GMM_GPU_PREC_3XTF32;
	if (fit_n > 0 && fit_k > 0)
	{
		/* --fit: the engine's own fit of one shape (profiling) */
		float *X = fit_n >= 10000000 ? data_10m(fit_n) : data_1m(fit_n);
		char sh[64];
		snprintf(sh, sizeof(sh), "N=%lld K=%d D=128", (long long) fit_n, fit_k);
		const char *e = getenv("FLASHGMM_GPU_ESTEP");	/* (use_estep sets it: read it first) */
		engine_fit(sh, X, fit_n, fit_k, D, fit_cov, 12, " (k-means++ start)", e ? strdup(e) : "default");
		free(X);
		print_table();
		cublasDestroy(h);
		return 0;
	}
	if (assign)
	{
		/* --assign: only the h16 top-8 assignment of 1M rows (profiling) */
		const int64_t N = 1000000;
		float *X = data_1m(N);
		engine_assign("N=1M K=1024 D=128", X, N, 1024, D, 8, "h16");
		free(X);
	}
	if (sweep)
	{
		/*
		 * --sweep: where the sparse pass starts to pay (the first rows of one
		 * 1M table): diag at K = 256, 512, 1024 (the default switches at
		 * 1024), spherical at 1024, 2048, 4096 (it switched at 2048 until v11, now at 1024)
		 */
		const int64_t N = 1000000;
		float *X = data_1m(N);
		for (gmm_cov_type cov : {GMM_COV_DIAG, GMM_COV_SPHERICAL})
			for (int K : cov == GMM_COV_DIAG ? std::vector<int>{256, 512, 1024} : std::vector<int>{1024, 2048, 4096})
				for (int64_t n : {100000ll, 250000ll, 500000ll, 1000000ll})
				{
					char sh[64];
					snprintf(sh, sizeof(sh), "N=%lldk K=%d D=128", (long long) (n / 1000), K);
					engine_em(sh, X, n, K, D, cov, P3, 0, 6, " (dense)", "h16");
					engine_em(sh, X, n, K, D, cov, P3, 0, 6, "", "sparse");
				}
		free(X);
	}
	if (sparse)
	{
		/* --sparse: the sparse E pass (sparse.cuh) against the default: spherical 1M and 10M rows, diag 1M */
		const int64_t N = 1000000;
		float *X = data_1m(N);
		const char *s1 = "N=1M K=1024 D=128";
		engine_em(s1, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 6, " (dense)", "h16");
		engine_em(s1, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 6, "", "sparse");
		engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_SPHERICAL, P3, 0, 4, " (dense)", "h16");
		engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_SPHERICAL, P3, 0, 4, "", "sparse");
		engine_em(s1, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 6, " (dense)", "h16");
		engine_em(s1, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 6, "", "sparse");
		engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_DIAG, P3, 0, 4, " (dense)", "h16");
		engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_DIAG, P3, 0, 4, "", "sparse");
		free(X);
		const int64_t N10 = 10000000;
		float *X10 = data_10m(N10);
		engine_em("N=10M K=1024 D=128", X10, N10, 1024, D, GMM_COV_SPHERICAL, P3, 0, 4, " (dense)", "h16");
		engine_em("N=10M K=1024 D=128", X10, N10, 1024, D, GMM_COV_SPHERICAL, P3, 0, 4, "", "sparse");
		free(X10);
	}
	if (steady)
	{
		/*
		 * --steady: 12 iterations, so the median is of iterations after the
		 * random start's first moves (what a longer fit spends per
		 * iteration); the sparse pass with its screen in one pass where
		 * seeded (the default) and in two (FLASHGMM_GPU_SPARSE_PASSES=2);
		 * and the engine's own fit (k-means++ seeding on the device, then
		 * the default E pass), whose model is the one CREATE INDEX trains:
		 * the random start leaves hundreds of re-seeded singletons at
		 * K = 4096, which the flagged-component paths pay for
		 */
		const int64_t N = 1000000;
		float *X = data_1m(N);
		for (int K : {1024, 4096})
		{
			char sh[64];
			snprintf(sh, sizeof(sh), "N=1M K=%d D=128", K);
			for (gmm_cov_type cov : {GMM_COV_DIAG, GMM_COV_SPHERICAL})
			{
				engine_em(sh, X, N, K, D, cov, P3, 0, 12, " (dense)", "h16");
				engine_em(sh, X, N, K, D, cov, P3, 0, 12, " (screen: one pass)", "sparse");
				setenv("FLASHGMM_GPU_SPARSE_PASSES", "2", 1);
				engine_em(sh, X, N, K, D, cov, P3, 0, 12, " (screen: two passes)", "sparse");
				unsetenv("FLASHGMM_GPU_SPARSE_PASSES");
				engine_fit(sh, X, N, K, D, cov, 12, " (k-means++ start)");
				engine_fit(sh, X, N, K, D, cov, 12, " (k-means++ start)", cov == GMM_COV_DIAG ? "h16" : "sparse");
			}
		}
		free(X);
	}
	if (!small_d && !assign && !sparse && !sweep && !steady)
	{
		const int64_t N = 1000000;
		float *X = data_1m(N);
		const char *s1 = "N=1M K=1024 D=128";
		engine_em(s1, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 4, "", "default");
		engine_em(s1, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 4, " (dense)", "h16");
		engine_em(s1, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 4, "", "default");
		engine_em(s1, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 4, " (dense)", "h16");
		engine_em(s1, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 4, " pass 1 mma.sync", "h16mma");
		engine_em(s1, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 4, " pass 1 mma.sync", "h16mma");
		engine_em(s1, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 4, "", "gemm");
		engine_em(s1, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 4, "", "gemm");
		/* --core: the 1M rows above only (tuning sweeps), then --ten / --big if asked */
		if (!core)
		{
			engine_em(s1, X, N, 1024, D, GMM_COV_SPHERICAL, GMM_GPU_PREC_TF32, 0, 4, "", "gemm");
			engine_em(s1, X, N, 1024, D, GMM_COV_DIAG, GMM_GPU_PREC_TF32, 0, 4, "", "gemm");
			engine_em(s1, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 3, "", "fused");
			engine_em(s1, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 3, "", "fused");
			cublas_baseline(h, s1, N, 1024, D, X);
			engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_DIAG, P3, 0, 3, "", "default");
			engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_DIAG, P3, 0, 3, " (dense)", "h16");
			engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_SPHERICAL, P3, 0, 3, "", "default");
			engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_SPHERICAL, P3, 0, 3, " (dense)", "h16");
			engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_DIAG, P3, 0, 3, "", "gemm");
			if (!quick)
				engine_em("N=1M K=4096 D=128", X, N, 4096, D, GMM_COV_DIAG, P3, 0, 2, "", "fused");
			/* CPU engine on a small shape, and ours on the same */
			engine_em("N=100k K=256 D=128", X, 100000, 256, D, GMM_COV_DIAG, P3, 0, 4, "", "default");
			cpu_em("N=100k K=256 D=128", X, 100000, 256, D, GMM_COV_DIAG);
		}
		free(X);
	}
	if (small_d)
	{
		/* h16 pads every D to 128: where does it stop paying against gemm (which pads to 32)? */
		const int64_t N = 1000000;
		for (int d : {32, 64, 96})
		{
			float *Xs = make_clustered(N, d, 2048, 4);
			char sh[64];
			snprintf(sh, sizeof(sh), "N=1M K=1024 D=%d", d);
			engine_em(sh, Xs, N, 1024, d, GMM_COV_SPHERICAL, P3, 0, 3, "", "h16");
			engine_em(sh, Xs, N, 1024, d, GMM_COV_SPHERICAL, P3, 0, 3, "", "gemm");
			engine_em(sh, Xs, N, 1024, d, GMM_COV_DIAG, P3, 0, 3, "", "h16");
			engine_em(sh, Xs, N, 1024, d, GMM_COV_DIAG, P3, 0, 3, "", "gemm");
			free(Xs);
		}
	}
	if (ten)
	{
		/* the 10M-row targets: diag EM, spherical EM, top-8 assignment, streaming under a budget */
		const int64_t N = 10000000;
		float *X = data_10m(N);
		const char *s10 = "N=10M K=1024 D=128";
		engine_em(s10, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 3, "", "default");
		engine_em(s10, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 3, " (dense)", "h16");
		engine_em(s10, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 3, "", "default");
		engine_em(s10, X, N, 1024, D, GMM_COV_SPHERICAL, P3, 0, 3, " (dense)", "h16");
		/* the engine's own fit (k-means++ seeding on the device): the model CREATE INDEX trains */
		engine_fit(s10, X, N, 1024, D, GMM_COV_DIAG, 6, " (k-means++ start)");
		engine_fit(s10, X, N, 1024, D, GMM_COV_SPHERICAL, 6, " (k-means++ start)");
		engine_em(s10, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 3, "", "gemm");
		engine_assign(s10, X, N, 1024, D, 8, "h16");
		engine_assign(s10, X, N, 1024, D, 8, "h16mma");
		engine_assign(s10, X, N, 1024, D, 8, "gemm");
		engine_em(s10, X, N, 1024, D, GMM_COV_DIAG, P3, 1ll << 30, 2, " budget=1GiB (streamed: gemm)", "h16");
		if (!quick)
		{
			engine_em(s10, X, N, 1024, D, GMM_COV_DIAG, P3, 0, 2, "", "fused");
			engine_assign(s10, X, N, 1024, D, 8, "fused");
		}
		free(X);
	}
	if (big)
	{
		/* N = 100M (51 GB): more than fits beside the other buffers on an 80 GB card? streamed under a 16 GiB budget */
		const int64_t N = 100000000;
		float *X = make_clustered(N, D, 4096, 3);
		if (X)
			engine_em("N=100M K=1024 D=128", X, N, 1024, D, GMM_COV_DIAG, GMM_GPU_PREC_3XTF32, 16ll << 30, 2,
					  " streamed, budget=16GiB", "h16");
		else
			printf("N=100M: could not allocate 51 GB of host memory\n");
		free(X);
	}
	print_table();
	cublasDestroy(h);
	return 0;
}
