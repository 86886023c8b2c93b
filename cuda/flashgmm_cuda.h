/*
 * flashgmm_cuda.h - the extern "C" API of the CUDA engine (flashgmm_cuda.so).
 *
 * The extension never links this library: src/engine/gmm_gpu.c dlopens it
 * (only in a backend that asked for the GPU) and looks these symbols up.
 * Every entry point returns a gmm_status and fills err; none throws, exits or
 * prints.  The model arrays are the public gmm_model's (weights, means,
 * vars); the derived fields are the caller's business (gmm_model_prepare).
 *
 * Threading: one call at a time per process (a PostgreSQL backend is single
 * threaded).  CUDA is initialised by fgc_init(), never at load time.
 */
#ifndef FLASHGMM_CUDA_H
#define FLASHGMM_CUDA_H

#include "../src/engine/gmm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* exported even when the library is built with -fvisibility=hidden */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* Bumped whenever a signature below or a struct in gmm.h that crosses it
 * changes; gmm_gpu.c refuses a library of another version. */
#define FGC_ABI_VERSION 2

int			fgc_abi_version(void);
/* sizeof(gmm_fit_params), sizeof(gmm_fit_report), sizeof(gmm_gpu_stats) as compiled into the library */
void		fgc_abi_sizes(size_t *fit_params, size_t *fit_report, size_t *gpu_stats);

/* Initialise CUDA in the calling process (idempotent).  GMM_EDEVICE with a
 * reason: no device, driver too old, compute capability too old. */
gmm_status	fgc_init(gmm_error *err);
const char *fgc_device_name(void);
/* The E pass the last call used and why: "gemm (cuBLAS ...)" or "fused (reason)". */
const char *fgc_estep_variant(void);

/* Precision of the matrix products (gmm_gpu_precision in gmm.h). */
gmm_status	fgc_set_precision(int prec, gmm_error *err);

/* k-means++ seeding on the device + hard assignment of all rows: fills
 * weights (K), means (K*D) and vars (K*D or K) of a model the caller
 * allocated (p->K components, p->cov). */
gmm_status	fgc_init_kmeanspp(const float *X, int64_t N, int D, const gmm_fit_params *p,
							  float *weights, float *means, float *vars, gmm_error *err);

/* fgc_init_kmeanspp then fgc_em, with X moved to the device once. */
gmm_status	fgc_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
					float *weights, float *means, float *vars, gmm_fit_report *report, gmm_error *err);

/* EM from the given parameters (updated in place).  p->equal_weights keeps
 * every weight at 1/K (the weights passed in are used for the first E pass). */
gmm_status	fgc_em(const float *X, int64_t N, int K, int D, int cov, const gmm_fit_params *p,
				   float *weights, float *means, float *vars,
				   gmm_fit_report *report, gmm_error *err);

/* Mean log-likelihood of X (one E pass). */
gmm_status	fgc_score(const float *X, int64_t N, int K, int D, int cov,
					  const float *weights, const float *means, const float *vars,
					  double *mean_loglik, gmm_error *err);

/* Soft assignment, same semantics as gmm_assign. */
gmm_status	fgc_assign(const float *X, int64_t N, int K, int D, int cov,
					   const float *weights, const float *means, const float *vars,
					   int max_assign, float tau, float temperature,
					   int32_t *out_comp, float *out_resp, gmm_error *err);

/* Test hook: one E pass; sufficient statistics in raw coordinates (nk: K, sx: K * (D or 2D) =
 * sum r x [, sum r x^2], sxn: K = sum r ||x - shift||^2 (spherical, centred), ll: sum of logZ). */
gmm_status	fgc_debug_estep(const float *X, int64_t N, int K, int D, int cov, const float *weights,
							const float *means, const float *vars, double *nk, double *sx, double *sxn,
							double *ll, gmm_error *err);

/* Timings and memory of the last call (see gmm_gpu_stats in gmm.h). */
gmm_status	fgc_last_stats(gmm_gpu_stats *out, gmm_error *err);

/* Device memory budget for gmm_gpu_assign/score (fit/em take it from
 * gmm_fit_params); 0 = what is free. */
void		fgc_set_mem_budget(int64_t bytes);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif							/* FLASHGMM_CUDA_H */
