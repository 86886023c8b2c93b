/*
 * gmm_cpu.h - extra entry points of the CPU engine for tests and benchmarks
 * (not needed by the access method; gmm.h is the contract).
 */
#ifndef FLASHGMM_ENGINE_GMM_CPU_H
#define FLASHGMM_ENGINE_GMM_CPU_H

#include "gmm.h"

/*
 * Precision of the tile matrix products (scores, statistics):
 *   AUTO   float32 products unless the model is ill-conditioned for them
 *          (a component's variance is tiny against the spread of the data,
 *          e.g. a dimension constant inside one component but not globally):
 *          then those components (when at most K/4) are scored and summed
 *          in float64 beside the float32 products ("mixed" pass), or the
 *          whole pass runs in float64.  Sums across tiles are always float64.
 *   FLOAT  always float32 products (sgemm).
 *   DOUBLE always float64 products (dgemm).
 */
typedef enum gmm_cpu_precision
{
	GMM_CPU_PREC_AUTO = 0,
	GMM_CPU_PREC_FLOAT = 1,
	GMM_CPU_PREC_DOUBLE = 2
} gmm_cpu_precision;

typedef struct gmm_cpu_options
{
	gmm_cpu_precision precision;
	/* out: E passes run in float64 / float32 / mixed during the last call */
	int			passes_double;
	int			passes_float;
	int			passes_mixed;
	/* out: worst conditioning estimate seen (float32 rounding x condition) */
	double		max_cond;
} gmm_cpu_options;

gmm_status	gmm_cpu_em(const float *X, int64_t N, gmm_model *m, const gmm_fit_params *p,
					   gmm_cpu_options *opt, gmm_fit_report *report, gmm_error *err);
gmm_status	gmm_cpu_score(const gmm_model *m, const float *X, int64_t N, gmm_cpu_options *opt,
						  double *mean_loglik, gmm_error *err);

#endif
