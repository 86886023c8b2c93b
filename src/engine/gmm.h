/*
 * gmm.h - the flashgmm engine: Gaussian mixture training, soft assignment and
 * probe ranking on float arrays.  Pure C99, no PostgreSQL headers.
 *
 * This header is the contract between the layers (see ../shared/DESIGN.md s.2):
 *   - the PostgreSQL glue (src/gmmivf*.c) calls it to build, insert and scan;
 *   - the CPU implementation lives in src/engine/gmm_*.c;
 *   - the CUDA library (cuda/) implements the same operations and is reached
 *     through gmm_gpu_* below (src/engine/gmm_gpu.c dlopens it on demand).
 *
 * Conventions
 *   - X is row-major, N rows of D floats.  N and sizes are int64_t where they
 *     can exceed 2^31 (N, N*D, N*m), int otherwise (K, D, m).
 *   - Every function that can fail returns gmm_status and, when err is not
 *     NULL, fills err->msg with a sentence naming the problem.  The engine
 *     never calls exit/abort on user input and never prints.
 *   - Nothing allocates N x K: E-steps run over tiles of rows (Flash-GMM).
 */
#ifndef FLASHGMM_ENGINE_GMM_H
#define FLASHGMM_ENGINE_GMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gmm_status
{
	GMM_OK = 0,
	GMM_EINVAL,					/* bad sizes or parameters (K > N, D < 1, ...) */
	GMM_ENONFINITE,				/* NaN or Inf in the input */
	GMM_ENOMEM,					/* allocation failed (host or device) */
	GMM_EDEVICE,				/* GPU missing, driver too old, kernel fault */
	GMM_ECANCELED,				/* the progress callback asked to stop */
	GMM_EINTERNAL				/* an invariant broke: a bug */
} gmm_status;

typedef struct gmm_error
{
	gmm_status	code;
	char		msg[256];
} gmm_error;

typedef enum gmm_cov_type
{
	GMM_COV_SPHERICAL = 0,		/* one variance per component: soft k-means; default for L2 */
	GMM_COV_DIAG = 1			/* one variance per component and dimension */
} gmm_cov_type;

/*
 * The model.  weights/means/vars are the parameters; the rest is derived by
 * gmm_model_prepare() and makes scoring one GEMM plus a per-component term:
 *
 *   spherical: s_k(x) = log_norm[k] - 0.5 * prec[k] * ||x - mu_k||^2
 *   diag:      s_k(x) = log_norm[k] - 0.5 * sum_d prec[k,d] * (x_d - mu_kd)^2
 *   log_norm[k] = log w_k - 0.5 * (D log 2pi + sum_d log var_kd)
 *
 * Only weights, means and vars need to be stored on disk; gmm_model_prepare()
 * rebuilds the rest after loading.
 */
typedef struct gmm_model
{
	int			K;
	int			D;
	gmm_cov_type cov;
	float	   *weights;		/* K, sum to 1 */
	float	   *means;			/* K * D */
	float	   *vars;			/* K * D (diag) or K (spherical) */
	/* derived (gmm_model_prepare) */
	float	   *log_norm;		/* K */
	float	   *prec;			/* K * D (diag) or K (spherical): 1 / var */
	float	   *mean_sqnorm;	/* K: ||mu_k||^2, for distance ranking */
} gmm_model;

/* Number of variance floats per component: D for diag, 1 for spherical. */
static inline int
gmm_var_len(gmm_cov_type cov, int D)
{
	return cov == GMM_COV_DIAG ? D : 1;
}

gmm_model  *gmm_model_alloc(int K, int D, gmm_cov_type cov, gmm_error *err);
void		gmm_model_free(gmm_model *m);
/* Recompute derived fields; fails on non-positive variance or weight. */
gmm_status	gmm_model_prepare(gmm_model *m, gmm_error *err);
gmm_model  *gmm_model_clone(const gmm_model *m, gmm_error *err);

/* Flat little-endian serialisation of K, D, cov, weights, means, vars. */
size_t		gmm_model_serialized_size(int K, int D, gmm_cov_type cov);
void		gmm_model_serialize(const gmm_model *m, void *buf);
gmm_model  *gmm_model_deserialize(const void *buf, size_t len, gmm_error *err);

/* Progress / cancellation: called between phases and iterations, and every
 * few tiles in long passes.  Return nonzero to stop (GMM_ECANCELED). */
typedef int (*gmm_progress_fn) (void *arg, const char *phase, int64_t done, int64_t total);

typedef struct gmm_fit_params
{
	int			K;
	gmm_cov_type cov;
	int			max_iter;		/* EM iterations (default 20) */
	double		tol;			/* stop when mean log-lik improves less than this (default 1e-4) */
	double		reg_covar;		/* variance floor added on every M-step (default 1e-6, like sklearn) */
	uint64_t	seed;			/* k-means++ seed; same seed + same data = same model */
	int			tile_rows;		/* rows per E-step tile; 0 = engine default */
	int			deterministic;	/* GPU: fixed reduction order (CPU is always deterministic) */
	int			equal_weights;	/* 1: mixing weights fixed at 1/K, not learned (default 0).
								 * Learned weights let a broad component near the data centre
								 * grow (rich get richer) until it claims a large share of
								 * every row on weakly clustered data; fixed weights keep
								 * the responsibilities a function of distance and variance
								 * only.  The CUDA engine runs it one EM iteration per call
								 * (gmm_gpu.c). */
	int64_t		device_mem_budget;	/* GPU: bytes the engine may use on the device; 0 = what is free */
	gmm_progress_fn progress;
	void	   *progress_arg;
} gmm_fit_params;

/* Fill p with the defaults above for K components. */
void		gmm_fit_params_default(gmm_fit_params *p, int K);

typedef struct gmm_fit_report
{
	int			iterations;		/* EM iterations done */
	int			converged;		/* 1 when stopped by tol */
	double		mean_loglik;	/* mean log-likelihood of X under the returned model */
	int			reseeded;		/* empty/collapsed components re-seeded over the run */
	double		seconds_init;
	double		seconds_estep;	/* all E passes (scores, log-sum-exp, statistics) */
	double		seconds_mstep;
} gmm_fit_report;

/*
 * k-means++ seeding (seeded, reproducible), then one hard assignment of all
 * rows to the nearest seed gives the initial weights, means and variances
 * (floored by reg_covar).  *out is allocated here.  Tests start the float64
 * reference and scikit-learn from this same model.
 */
gmm_status	gmm_init_kmeanspp(const float *X, int64_t N, int D, const gmm_fit_params *p,
							  gmm_model **out, gmm_error *err);

/*
 * EM from the model in *m (updated in place): each iteration is an E-step
 * (online log-sum-exp over components, then responsibilities recomputed per
 * tile and folded into sum r, sum r x, sum r x^2) and an M-step (variance
 * floor, re-seeding of empty or collapsed components).  Stops after max_iter
 * iterations or when the mean log-likelihood improves by less than tol.
 * report->mean_loglik is that of the returned model.
 */
gmm_status	gmm_em(const float *X, int64_t N, gmm_model *m, const gmm_fit_params *p,
				   gmm_fit_report *report, gmm_error *err);

/* gmm_init_kmeanspp followed by gmm_em. */
gmm_status	gmm_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
					gmm_model **out, gmm_fit_report *report, gmm_error *err);

/* Mean log-likelihood of X under m (one E pass, no update). */
gmm_status	gmm_score(const gmm_model *m, const float *X, int64_t N, double *mean_loglik,
					  gmm_error *err);

/*
 * Soft assignment.  For each row n, the components with responsibility
 * r_nk > tau, best first, at most max_assign of them; the best component is
 * always kept (so every row lands in at least one list).  Unused slots hold
 * comp = -1, resp = 0.  m = 1 is hard assignment.  temperature (> 0, 1 = the
 * plain posterior) tempers the responsibilities: r_k ~ exp(s_k / temperature).
 * out_comp and out_resp hold N * max_assign entries (out_resp may be NULL).
 */
gmm_status	gmm_assign(const gmm_model *m, const float *X, int64_t N,
					   int max_assign, float tau, float temperature,
					   int32_t *out_comp, float *out_resp, gmm_error *err);

typedef enum gmm_rank_mode
{
	GMM_RANK_DISTANCE = 0,		/* ascending ||q - mu_k||^2 (default; RESEARCH.md) */
	GMM_RANK_POSTERIOR = 1		/* descending log pi_k + log N(q | mu_k, Sigma_k) */
} gmm_rank_mode;

/*
 * Rank components for one query: the best n (n <= K) in order into
 * order[0..n-1], with their key (squared distance, or log-posterior) in
 * key[0..n-1] when key is not NULL.
 */
gmm_status	gmm_rank(const gmm_model *m, const float *q, gmm_rank_mode mode, int n,
					 int32_t *order, float *key, gmm_error *err);

/*
 * GPU engine (cuda/, loaded with dlopen only when called).  Same semantics
 * as the CPU functions above.  gmm_gpu_load() is idempotent; it returns
 * GMM_EDEVICE with a reason (library missing, no device, driver too old)
 * when the GPU cannot be used, and the caller decides whether to fall back.
 */
gmm_status	gmm_gpu_load(const char *library_path, gmm_error *err);
gmm_status	gmm_gpu_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
						gmm_model **out, gmm_fit_report *report, gmm_error *err);
gmm_status	gmm_gpu_em(const float *X, int64_t N, gmm_model *m, const gmm_fit_params *p,
					   gmm_fit_report *report, gmm_error *err);
gmm_status	gmm_gpu_assign(const gmm_model *m, const float *X, int64_t N,
						   int max_assign, float tau, float temperature,
						   int32_t *out_comp, float *out_resp, gmm_error *err);
/* Device name and memory, for reports ("" when not loaded). */
const char *gmm_gpu_device_name(void);

/* --- GPU extras (added by the CUDA engine; nothing above depends on them) --- */

/* Mean log-likelihood of X under m on the GPU (one E pass). */
gmm_status	gmm_gpu_score(const gmm_model *m, const float *X, int64_t N, double *mean_loglik,
						  gmm_error *err);

/* Precision of the GPU matrix products (scores and statistics).
 *   TF32:   one TF32 tensor-core product (10-bit mantissa operands, FP32 accumulate)
 *   3XTF32: split-TF32 (hi*hi + hi*lo + lo*hi), about FP32 accuracy at 3x the products
 * DEFAULT is what cuda/NOTES.md measured to meet the accuracy bounds. */
typedef enum gmm_gpu_precision
{
	GMM_GPU_PREC_DEFAULT = 0,
	GMM_GPU_PREC_TF32 = 1,
	GMM_GPU_PREC_3XTF32 = 2
} gmm_gpu_precision;
gmm_status	gmm_gpu_set_precision(gmm_gpu_precision prec, gmm_error *err);

/* What the last GPU call measured (device events; host clock for copies). */
typedef struct gmm_gpu_stats
{
	double		ms_per_iter;	/* EM: median ms per iteration (E + M), data already on the device */
	double		ms_estep;		/* EM: median ms of the E passes of one iteration */
	double		ms_kernel;		/* assign / score: ms of the device passes (no copies) */
	double		seconds_h2d;	/* host-to-device copies of X (total, host clock) */
	int64_t		peak_bytes;		/* peak device memory the engine held during the call */
	int64_t		x_bytes;		/* of which X (or its streaming buffers) */
	int64_t		live_bytes;		/* device memory the engine holds now (0 between calls) */
	int64_t		chunk_rows;		/* rows per streamed chunk (= N when X was resident) */
	int			streamed;		/* 1 when X streamed from host memory in chunks */
	int			precision;		/* gmm_gpu_precision the last pass used */
	int			flagged;		/* components whose scores were recomputed from differences (ill-conditioned) */
	double		score_err;		/* estimated worst score error of the matrix products (see cuda/flashgmm_cuda.cu) */
} gmm_gpu_stats;
gmm_status	gmm_gpu_last_stats(gmm_gpu_stats *out, gmm_error *err);

/* Device memory budget (bytes) for gmm_gpu_assign / gmm_gpu_score; fit and
 * EM take gmm_fit_params.device_mem_budget.  0 = what is free. */
void		gmm_gpu_set_mem_budget(int64_t bytes);

/* Human-readable name of a status. */
const char *gmm_status_name(gmm_status s);

#ifdef __cplusplus
}
#endif

#endif							/* FLASHGMM_ENGINE_GMM_H */
