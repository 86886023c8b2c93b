/*
 * gmm_cpu.c - the CPU engine: k-means++ initialisation, EM, scoring, soft
 * assignment and probe ranking (contract in gmm.h; extra entry points for
 * tests and benchmarks in gmm_cpu.h).  bench/NOTES-engine.md has the
 * measurements behind the choices below.
 *
 * Shape of the work (Flash-GMM on the CPU):
 *   - Rows are processed in tiles of T rows (512 by default, fewer when K is
 *     large).  For a tile the engine builds A = [x - c] (spherical) or
 *     [x - c, (x - c)^2] (diag), c a fixed centre (the data mean during EM),
 *     and computes the T x K scores with one GEMM against
 *     B = [prec * (mu - c)] or [prec * (mu - c), -prec / 2], plus a
 *     per-component constant (and -prec/2 * ||x - c||^2 for spherical).
 *     Centring keeps the expansion ||x||^2 - 2 x.mu + ||mu||^2 from
 *     cancelling badly on data far from the origin (SIFT values reach 200).
 *   - Per row: max, exp, sum (log-sum-exp), responsibilities in place
 *     (exact zeros below e^-80 of the best), sum r and sum r ||x - c||^2.
 *   - Statistics sum r (x - c) [, sum r (x - c)^2]: R^T A with a second
 *     GEMM, or, when fewer than 1/16 of the tile's responsibilities are
 *     non-zero (near-hard posteriors at high dimension), row by row over the
 *     non-zeros in float64.
 *   - M-step in float64 with the variance floor reg_covar; components with
 *     less than half a row of responsibility are re-seeded at the rows the
 *     model explains worst.
 *   - Memory: X (the caller's) + O(T*K + T*D + K*D) + O(N) (per-row
 *     log-likelihood for re-seeding; k-means++ distances and labels).
 *     Nothing is N x K.
 *
 * Precision: every sum across tiles and the M-step are float64.  The tile
 * products run in float32 (sgemm) unless a component is too narrow for
 * float32 against the spread of the data (see COND_MAX): such components
 * are scored directly from x - mu and summed around their own mean in
 * float64, and when more than K/4 are, the products run in float64 (dgemm).
 *
 * Speed: OpenBLAS for the products (4-5x faster than hand-written AVX2
 * distance loops here); AVX2/FMA kernels, chosen at run time, for the
 * element-wise work (exp, sums, sparse statistics, exact scores), with
 * portable scalar fallbacks.  No global state; OpenBLAS may use threads.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "gmm.h"
#include "gmm_cpu.h"
#include "gmm_internal.h"

#define GMM_LOG_2PI 1.8378770664093454835606594728112

/* x86-64: AVX2 + FMA kernels for the float path's element-wise work, chosen
 * at run time (FLASHGMM_NO_SIMD in the environment turns them off). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GMM_HAVE_AVX2_PATH 1
static int	cpu_has_avx2(void);
#endif

/*
 * Responsibilities below exp(-RESP_CUT) of the row's best are exact zeros
 * (float32 exp underflows near there anyway), and zeros let the statistics
 * skip them (SPARSE_RATIO).  A tighter cut (30) was tried: diag variances
 * floored near reg_covar drifted from the float64 reference (1.4e-5 against
 * 3.6e-6 relative on sift-10k), so the cut stays at the float32 limit.
 */
#define RESP_CUT 80.0f

/* A tile whose responsibilities are less than 1/SPARSE_RATIO non-zero
 * accumulates its statistics row by row instead of with a GEMM. */
#define SPARSE_RATIO 16

/* A component whose total responsibility is below this many rows is empty
 * and gets re-seeded. */
#define EMPTY_NK 0.5

#define DEFAULT_TILE 512
#define PROGRESS_EVERY_TILES 64

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------------
 * Random numbers: splitmix64, seeded, no global state.
 */
typedef struct rng64
{
	uint64_t	s;
} rng64;

static uint64_t
rng_next(rng64 *r)
{
	uint64_t	z = (r->s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static double
rng_uniform(rng64 *r)
{
	return (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---------------------------------------------------------------------------
 * Validation helpers
 */
static gmm_status
check_finite_rows(const float *X, int64_t n0, int64_t n1, int D, gmm_error *err)
{
	for (int64_t n = n0; n < n1; n++)
	{
		const float *x = X + n * (int64_t) D;

		for (int d = 0; d < D; d++)
			if (!isfinite(x[d]))
				return gmm_fail(err, GMM_ENONFINITE,
								"input row %lld has a non-finite value (%g) in dimension %d",
								(long long) n, (double) x[d], d);
	}
	return GMM_OK;
}

/* Data mean in double (c must hold D doubles), checking every value; when
 * m2 is not NULL also the per-dimension variance (for the conditioning). */
static gmm_status
data_mean(const float *X, int64_t N, int D, double *c, double *m2, gmm_error *err)
{
	memset(c, 0, sizeof(double) * D);
	if (m2)
		memset(m2, 0, sizeof(double) * D);
	for (int64_t n = 0; n < N; n++)
	{
		const float *x = X + n * (int64_t) D;

		for (int d = 0; d < D; d++)
		{
			if (!isfinite(x[d]))
				return gmm_fail(err, GMM_ENONFINITE,
								"input row %lld has a non-finite value (%g) in dimension %d",
								(long long) n, (double) x[d], d);
			c[d] += x[d];
		}
		if (m2)
			for (int d = 0; d < D; d++)
				m2[d] += (double) x[d] * x[d];
	}
	for (int d = 0; d < D; d++)
	{
		c[d] /= (double) N;
		if (m2)
		{
			m2[d] = m2[d] / (double) N - c[d] * c[d];
			if (m2[d] < 0.0)
				m2[d] = 0.0;
		}
	}
	return GMM_OK;
}

static int
tile_rows_for(int requested, int K, int64_t N)
{
	int			t = requested > 0 ? requested : DEFAULT_TILE;

	if (requested <= 0)
	{
		/* keep the T x K score block near 4 MB */
		int			cap = (int) ((1 << 20) / (K > 0 ? K : 1));

		if (cap < 16)
			cap = 16;
		if (t > cap)
			t = cap;
	}
	if ((int64_t) t > N)
		t = (int) N;
	if (t < 1)
		t = 1;
	return t;
}

/* ---------------------------------------------------------------------------
 * Scoring context: B, per-component constants, centre, tile buffers in the
 * precision chosen for the pass.
 */

/*
 * cond (ctx_set_model) is a worst-case bound on the float32 rounding error
 * of a score, in nats: eps32 * max_k sum_d prec_kd ((x_d - c_d)^2 + (mu_kd - c_d)^2)
 * with (x_d - c_d)^2 taken at its data mean.  It is also a bound on the
 * relative error of a variance computed from float32 statistics.  Typical
 * errors are ~sqrt(D) smaller (random rounding).  Measured against the
 * float64 reference (test/engine): spherical variances average the error
 * over D dimensions and stay within 1e-5 at cond 1e-3; a diagonal variance
 * floored near reg_covar moves with the responsibilities of distant rows,
 * and 1e-3 nats of score error gave 2.5e-3 relative variance error, so diag
 * components must stay below 3e-5.  Above the bound a component is scored
 * and summed in float64 (or, when more than a quarter are, the whole pass).  It exceeds the bound when a component
 * is much narrower than the data along some dimension (SIFT diag: dimensions
 * that are zero inside a component, variance at reg_covar).
 */
#define COND_MAX_SPHERICAL 1e-3
#define COND_MAX_DIAG 3e-5
#define COND_MAX(cov) ((cov) == GMM_COV_DIAG ? COND_MAX_DIAG : COND_MAX_SPHERICAL)
#define EPS32 5.96e-8
#define EPS64_OVER_EPS32 1.862645149230957e-09	/* 2^-29 */

typedef struct em_stats
{
	double	   *nk;				/* K */
	double	   *sx;				/* K x W: sum r (x - c) [, sum r (x - c)^2] */
	double	   *sxx;			/* K: sum r ||x - c||^2 (spherical) */
} em_stats;

typedef struct score_ctx
{
	int			K;
	int			D;
	gmm_cov_type cov;
	int			W;				/* columns of A and B: D or 2D */
	int			T;				/* tile rows */
	gmm_cpu_precision prec;		/* requested */
	int			dbl;			/* this pass runs in float64 */
	double		cond;			/* conditioning estimate of the current model */
	double	   *m2;				/* D: mean (x - c)^2 per dimension (for cond) */
	int			simd;			/* use the AVX2 float kernels */
	/*
	 * Ill-conditioned components (cond_k > COND_MAX) on the float path: their
	 * scores are computed directly in float64 from x - mu, their statistics
	 * accumulated in float64; the GEMM sees zeros for them.
	 */
	int			nbad;
	int			bad_cap;
	int32_t    *bad;			/* K: indices */
	unsigned char *isbad;		/* K */
	int32_t    *badidx;			/* K: index into bad[], or -1 */
	double	   *bad_s1;			/* bad_cap x D: sum r (x - mu_old) */
	double	   *bad_s2;			/* bad_cap x VL: sum r (x - mu_old)^2 [summed over d: spherical] */
	double	   *condk;			/* K */
	double	   *lnk;			/* K: log w_k - 0.5 (D log 2pi + sum log var) */
	double	   *bad_mu;			/* bad_cap x D */
	double	   *bad_prec;		/* bad_cap x VL */
	double	   *bad_ln;			/* bad_cap */
	int64_t		tile_nnz;		/* non-zero responsibilities in the current tile */
	int64_t		sparse_tiles;	/* statistics accumulated row by row */
	int64_t		dense_tiles;	/* statistics by GEMM */
	double	   *xn2;			/* T: ||x - c||^2 */
	double	   *lz;				/* T: log-sum-exp per row */
	/* float64 master copies and float64 path */
	double	   *center_d;		/* D */
	double	   *B_d;			/* K x W */
	double	   *c0_d;			/* K */
	double	   *hprec_d;		/* K: -prec/2 (spherical) */
	double	   *A_d;			/* T x W */
	double	   *S_d;			/* T x K */
	double	   *tmp_d;			/* K x W */
	/* float32 path */
	float	   *center_f;
	float	   *B_f;
	float	   *c0_f;
	float	   *hprec_f;
	float	   *A_f;
	float	   *S_f;
	float	   *tmp_f;
} score_ctx;

static void
ctx_free(score_ctx *s)
{
	free(s->bad);
	free(s->isbad);
	free(s->badidx);
	free(s->bad_s1);
	free(s->bad_s2);
	free(s->condk);
	free(s->lnk);
	free(s->bad_mu);
	free(s->bad_prec);
	free(s->bad_ln);
	free(s->m2);
	free(s->xn2);
	free(s->lz);
	free(s->center_d);
	free(s->B_d);
	free(s->c0_d);
	free(s->hprec_d);
	free(s->A_d);
	free(s->S_d);
	free(s->tmp_d);
	free(s->center_f);
	free(s->B_f);
	free(s->c0_f);
	free(s->hprec_f);
	free(s->A_f);
	free(s->S_f);
	free(s->tmp_f);
	memset(s, 0, sizeof(*s));
}

static gmm_status
ctx_alloc(score_ctx *s, int K, int D, gmm_cov_type cov, int T, gmm_cpu_precision prec,
		  gmm_error *err)
{
	memset(s, 0, sizeof(*s));
	s->K = K;
	s->D = D;
	s->cov = cov;
	s->W = cov == GMM_COV_DIAG ? 2 * D : D;
	s->T = T;
	s->prec = prec;
#ifdef GMM_HAVE_AVX2_PATH
	s->simd = cpu_has_avx2() && getenv("FLASHGMM_NO_SIMD") == NULL;
#endif
	s->bad = malloc(sizeof(int32_t) * (size_t) K);
	s->isbad = calloc((size_t) K, 1);
	s->badidx = malloc(sizeof(int32_t) * (size_t) K);
	s->condk = malloc(sizeof(double) * (size_t) K);
	s->lnk = malloc(sizeof(double) * (size_t) K);
	s->m2 = calloc((size_t) D, sizeof(double));
	s->xn2 = malloc(sizeof(double) * (size_t) T);
	s->lz = malloc(sizeof(double) * (size_t) T);
	s->center_d = calloc((size_t) D, sizeof(double));
	s->B_d = malloc(sizeof(double) * (size_t) K * s->W);
	s->c0_d = malloc(sizeof(double) * (size_t) K);
	s->hprec_d = malloc(sizeof(double) * (size_t) K);
	s->center_f = calloc((size_t) D, sizeof(float));
	s->c0_f = malloc(sizeof(float) * (size_t) K);
	s->hprec_f = malloc(sizeof(float) * (size_t) K);
	if (!s->bad || !s->isbad || !s->badidx || !s->condk || !s->lnk || !s->m2 || !s->xn2 || !s->lz || !s->center_d || !s->B_d || !s->c0_d || !s->hprec_d ||
		!s->center_f || !s->c0_f || !s->hprec_f)
	{
		ctx_free(s);
		return gmm_fail(err, GMM_ENOMEM, "out of memory for the E-step workspace (K = %d, D = %d, tile = %d rows)", K, D, T);
	}
	return GMM_OK;
}

/* Make sure the buffers of the chosen precision exist (tmp only for stats). */
static gmm_status
ctx_ensure(score_ctx *s, int stats, gmm_error *err)
{
	size_t		kw = (size_t) s->K * s->W;

	if (s->dbl)
	{
		if (!s->A_d)
			s->A_d = malloc(sizeof(double) * (size_t) s->T * s->W);
		if (!s->S_d)
			s->S_d = malloc(sizeof(double) * (size_t) s->T * s->K);
		if (stats && !s->tmp_d)
			s->tmp_d = malloc(sizeof(double) * kw);
		if (!s->A_d || !s->S_d || (stats && !s->tmp_d))
			goto oom;
	}
	else
	{
		if (!s->B_f)
			s->B_f = malloc(sizeof(float) * kw);
		if (!s->A_f)
			s->A_f = malloc(sizeof(float) * (size_t) s->T * s->W);
		if (!s->S_f)
			s->S_f = malloc(sizeof(float) * (size_t) s->T * s->K);
		if (stats && !s->tmp_f)
			s->tmp_f = malloc(sizeof(float) * kw);
		if (!s->B_f || !s->A_f || !s->S_f || (stats && !s->tmp_f))
			goto oom;
	}
	return GMM_OK;
oom:
	return gmm_fail(err, GMM_ENOMEM, "out of memory for the E-step workspace (K = %d, D = %d, tile = %d rows)", s->K, s->D, s->T);
}

static void
ctx_set_center(score_ctx *s, const double *c)
{
	for (int d = 0; d < s->D; d++)
	{
		s->center_d[d] = c[d];
		s->center_f[d] = (float) c[d];
	}
}

/*
 * Rebuild B and the constants from the model's weights, means, vars (in
 * double; log_norm from the prepared model when use_log_norm) relative to
 * the centre, estimate the float32 conditioning, choose
 * the precision of the pass and fill the float copies when needed.  The
 * model must have positive weights and variances.
 */
static gmm_status
ctx_set_model(score_ctx *s, const gmm_model *m, int stats, int use_log_norm, gmm_error *err)
{
	int			K = s->K,
				D = s->D,
				W = s->W;
	double		cond = 0.0;
	double		m2sum = 0.0;

	for (int d = 0; d < D; d++)
		m2sum += s->m2[d];
	for (int k = 0; k < K; k++)
	{
		const float *mu = m->means + (size_t) k * D;
		double	   *b = s->B_d + (size_t) k * W;
		double		ln = log((double) m->weights[k]) - 0.5 * D * GMM_LOG_2PI;
		double		q = 0.0,
					ck = 0.0;

		if (s->cov == GMM_COV_SPHERICAL)
		{
			double		v = m->vars[k];
			double		pr = 1.0 / v;

			ln -= 0.5 * D * log(v);
			for (int d = 0; d < D; d++)
			{
				double		dm = (double) mu[d] - s->center_d[d];

				b[d] = pr * dm;
				q += dm * dm;
			}
			s->c0_d[k] = ln - 0.5 * pr * q;
			s->hprec_d[k] = -0.5 * pr;
			ck = pr * (m2sum + q);
			s->lnk[k] = ln;
		}
		else
		{
			const float *v = m->vars + (size_t) k * D;

			if (use_log_norm)
				ln = m->log_norm[k];
			for (int d = 0; d < D; d++)
			{
				double		pr = 1.0 / (double) v[d];
				double		dm = (double) mu[d] - s->center_d[d];

				if (!use_log_norm)
					ln -= 0.5 * log((double) v[d]);
				b[d] = pr * dm;
				b[D + d] = -0.5 * pr;
				q += pr * dm * dm;
				ck += pr * (s->m2[d] + dm * dm);
			}
			s->c0_d[k] = ln - 0.5 * q;
			s->hprec_d[k] = 0.0;
			s->lnk[k] = ln;
		}
		s->condk[k] = ck * EPS32;
		if (ck > cond)
			cond = ck;
	}
	s->cond = cond * EPS32;

	/*
	 * AUTO: float32 products when every component is well conditioned; when
	 * a few are not (a component much narrower than the data along some
	 * dimension), float32 for the rest and float64 for those; float64
	 * products throughout when more than a quarter are not.
	 */
	s->nbad = 0;
	for (int k = 0; k < K; k++)
	{
		s->isbad[k] = 0;
		s->badidx[k] = -1;
	}
	if (s->prec == GMM_CPU_PREC_AUTO)
		for (int k = 0; k < K; k++)
			if (!(s->condk[k] <= COND_MAX(s->cov)))
				s->bad[s->nbad++] = k;
	s->dbl = s->prec == GMM_CPU_PREC_DOUBLE || s->nbad > K / 4;
	if (s->dbl && s->prec != GMM_CPU_PREC_FLOAT)
	{
		/* float64 products: only components ill-conditioned even for
		 * float64 (cond in float64 units above COND_MAX) are special */
		s->nbad = 0;
		for (int k = 0; k < K; k++)
			if (!(s->condk[k] * EPS64_OVER_EPS32 <= COND_MAX(s->cov)))
				s->bad[s->nbad++] = k;
	}
	if (ctx_ensure(s, stats, err) != GMM_OK)
		return GMM_ENOMEM;
	if (s->nbad > s->bad_cap)
	{
		int			VL = gmm_var_len(s->cov, D);

		free(s->bad_mu);
		free(s->bad_prec);
		free(s->bad_ln);
		free(s->bad_s1);
		free(s->bad_s2);
		s->bad_mu = malloc(sizeof(double) * (size_t) s->nbad * D);
		s->bad_prec = malloc(sizeof(double) * (size_t) s->nbad * VL);
		s->bad_ln = malloc(sizeof(double) * (size_t) s->nbad);
		s->bad_s1 = malloc(sizeof(double) * (size_t) s->nbad * D);
		s->bad_s2 = malloc(sizeof(double) * (size_t) s->nbad * VL);
		s->bad_cap = s->nbad;
		if (!s->bad_mu || !s->bad_prec || !s->bad_ln || !s->bad_s1 || !s->bad_s2)
		{
			s->bad_cap = 0;
			return gmm_fail(err, GMM_ENOMEM, "out of memory for the E-step workspace (K = %d, D = %d)", K, D);
		}
	}
	for (int b = 0; b < s->nbad; b++)
	{
		int			k = s->bad[b];
		int			VL = gmm_var_len(s->cov, D);

		s->isbad[k] = 1;
		s->badidx[k] = b;
		for (int d = 0; d < D; d++)
			s->bad_mu[(size_t) b * D + d] = m->means[(size_t) k * D + d];
		for (int j = 0; j < VL; j++)
			s->bad_prec[(size_t) b * VL + j] = 1.0 / (double) m->vars[(size_t) k * VL + j];
		s->bad_ln[b] = s->lnk[k];
	}
	/* the products see zeros for the special components */
	for (int b = 0; b < s->nbad; b++)
	{
		int			k = s->bad[b];

		memset(s->B_d + (size_t) k * W, 0, sizeof(double) * W);
		s->c0_d[k] = 0.0;
		s->hprec_d[k] = 0.0;
	}
	if (!s->dbl)
	{
		for (size_t j = 0; j < (size_t) K * W; j++)
			s->B_f[j] = (float) s->B_d[j];
		for (int k = 0; k < K; k++)
		{
			s->c0_f[k] = (float) s->c0_d[k];
			s->hprec_f[k] = (float) s->hprec_d[k];
		}
	}
	return GMM_OK;
}

/* Exact float64 scores of the ill-conditioned components (float path). */
static void
ctx_fix_bad(score_ctx *s, const float *X, int nt)
{
	int			K = s->K,
				D = s->D,
				VL = gmm_var_len(s->cov, D);

	for (int i = 0; i < nt; i++)
	{
		const float *x = X + (size_t) i * D;
		float	   *row = s->dbl ? NULL : s->S_f + (size_t) i * K;

		for (int b = 0; b < s->nbad; b++)
		{
			const double *mu = s->bad_mu + (size_t) b * D;
			const double *pr = s->bad_prec + (size_t) b * VL;
			double		q = 0.0;

			if (VL == 1)
			{
				for (int d = 0; d < D; d++)
				{
					double		t = (double) x[d] - mu[d];

					q += t * t;
				}
				q *= pr[0];
			}
			else
				for (int d = 0; d < D; d++)
				{
					double		t = (double) x[d] - mu[d];

					q += t * t * pr[d];
				}
			if (s->dbl)
				s->S_d[(size_t) i * K + s->bad[b]] = s->bad_ln[b] - 0.5 * q;
			else
				row[s->bad[b]] = (float) (s->bad_ln[b] - 0.5 * q);
		}
	}
}

/*
 * Statistics of the special components, around their current means in
 * float64 (the one-pass moments around the data centre would cancel away a
 * variance that small).
 */
static void
ctx_bad_stats(score_ctx *s, const float *X, int nt)
{
	int			K = s->K,
				D = s->D,
				VL = gmm_var_len(s->cov, D);

	for (int i = 0; i < nt; i++)
	{
		const float *x = X + (size_t) i * D;

		for (int b = 0; b < s->nbad; b++)
		{
			size_t		j = (size_t) i * K + s->bad[b];
			double		r = s->dbl ? s->S_d[j] : (double) s->S_f[j];
			const double *mu = s->bad_mu + (size_t) b * D;
			double	   *s1 = s->bad_s1 + (size_t) b * D;
			double	   *s2 = s->bad_s2 + (size_t) b * VL;
			double		q = 0.0;

			if (r == 0.0)
				continue;
			for (int d = 0; d < D; d++)
			{
				double		t = (double) x[d] - mu[d];

				s1[d] += r * t;
				if (VL == 1)
					q += t * t;
				else
					s2[d] += r * t * t;
			}
			if (VL == 1)
				s2[0] += r * q;
		}
	}
}

#define REAL float
#define SFX _f
#define GEMM cblas_sgemm
#define EXP expf
#include "gmm_cpu_tile.h"
#undef REAL
#undef SFX
#undef GEMM
#undef EXP

#define REAL double
#define SFX _d
#define GEMM cblas_dgemm
#define EXP exp
#include "gmm_cpu_tile.h"
#undef REAL
#undef SFX
#undef GEMM
#undef EXP

/* ---------------------------------------------------------------------------
 * AVX2 + FMA versions of the float path's element-wise work (load, post),
 * chosen at run time; the scalar template versions above are the fallback
 * and the reference.  exp is a Cephes-style polynomial (relative error about
 * 2e-7 on [-RESP_CUT, 0], like expf).
 */
#ifdef GMM_HAVE_AVX2_PATH
#include <immintrin.h>

#define AVX2_FN __attribute__((target("avx2,fma")))

static int
cpu_has_avx2(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

AVX2_FN static inline __m256
exp256(__m256 x)
{
	const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
	const __m256 c1 = _mm256_set1_ps(0.693359375f);
	const __m256 c2 = _mm256_set1_ps(-2.12194440e-4f);
	__m256		fx,
				y,
				z;
	__m256i		n;

	x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
	fx = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	x = _mm256_fnmadd_ps(fx, c1, x);
	x = _mm256_fnmadd_ps(fx, c2, x);
	z = _mm256_mul_ps(x, x);
	y = _mm256_set1_ps(1.9875691500E-4f);
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
	y = _mm256_fmadd_ps(y, z, x);
	y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
	n = _mm256_cvtps_epi32(fx);
	n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

AVX2_FN static inline float
hmax256(__m256 v)
{
	__m128		m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
	return _mm_cvtss_f32(m);
}

AVX2_FN static inline double
hsum256d(__m256d v)
{
	__m128d		s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));

	s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
	return _mm_cvtsd_f64(s);
}

AVX2_FN static void
tile_load_f_avx2(score_ctx *s, const float *X, int nt)
{
	int			D = s->D,
				W = s->W;
	const float *c = s->center_f;

	for (int i = 0; i < nt; i++)
	{
		const float *x = X + (size_t) i * D;
		float	   *a = s->A_f + (size_t) i * W;
		__m256d		acc0 = _mm256_setzero_pd(),
					acc1 = _mm256_setzero_pd();
		double		n2;
		int			d = 0;

		for (; d + 8 <= D; d += 8)
		{
			__m256		v = _mm256_sub_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(c + d));
			__m256d		lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
			__m256d		hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));

			_mm256_storeu_ps(a + d, v);
			if (W != D)
				_mm256_storeu_ps(a + D + d, _mm256_mul_ps(v, v));
			acc0 = _mm256_fmadd_pd(lo, lo, acc0);
			acc1 = _mm256_fmadd_pd(hi, hi, acc1);
		}
		n2 = hsum256d(_mm256_add_pd(acc0, acc1));
		for (; d < D; d++)
		{
			float		v = x[d] - c[d];

			a[d] = v;
			if (W != D)
				a[D + d] = v * v;
			n2 += (double) v * v;
		}
		s->xn2[i] = n2;
	}
}

AVX2_FN static void
tile_post_f_avx2(score_ctx *s, int nt, double inv_temp, em_stats *st)
{
	int			K = s->K;
	int			K8 = K & ~7;
	const float *c0 = s->c0_f;
	const float *hp = s->hprec_f;
	int			sph = s->cov == GMM_COV_SPHERICAL;
	int64_t		nnz = 0;
	const __m256 cut = _mm256_set1_ps(-RESP_CUT);

	for (int i = 0; i < nt; i++)
	{
		float	   *row = s->S_f + (size_t) i * K;
		float		x2f = (float) s->xn2[i];
		__m256		vx2 = _mm256_set1_ps(x2f);
		__m256		vit = _mm256_set1_ps((float) inv_temp);
		__m256		vmx = _mm256_set1_ps(-INFINITY);
		__m256		vsum = _mm256_setzero_ps();
		float		mx,
					sum,
					inv;
		int			k;

		for (k = 0; k < K8; k += 8)
		{
			__m256		v = _mm256_add_ps(_mm256_loadu_ps(row + k), _mm256_loadu_ps(c0 + k));

			if (sph)
				v = _mm256_fmadd_ps(_mm256_loadu_ps(hp + k), vx2, v);
			if (inv_temp != 1.0)
				v = _mm256_mul_ps(v, vit);
			_mm256_storeu_ps(row + k, v);
			vmx = _mm256_max_ps(vmx, v);
		}
		mx = K8 > 0 ? hmax256(vmx) : -INFINITY;
		for (; k < K; k++)
		{
			float		v = row[k] + c0[k];

			if (sph)
				v += hp[k] * x2f;
			if (inv_temp != 1.0)
				v *= (float) inv_temp;
			row[k] = v;
			if (v > mx)
				mx = v;
		}
		{
			__m256		vm = _mm256_set1_ps(mx);

			for (k = 0; k < K8; k += 8)
			{
				__m256		t = _mm256_sub_ps(_mm256_loadu_ps(row + k), vm);
				__m256		keep = _mm256_cmp_ps(t, cut, _CMP_GT_OQ);
				__m256		e;

				if (_mm256_movemask_ps(keep) == 0)
					e = _mm256_setzero_ps();
				else
					e = _mm256_and_ps(exp256(t), keep);
				_mm256_storeu_ps(row + k, e);
				vsum = _mm256_add_ps(vsum, e);
			}
		}
		{
			__m128		h = _mm_add_ps(_mm256_castps256_ps128(vsum), _mm256_extractf128_ps(vsum, 1));

			h = _mm_add_ps(h, _mm_movehl_ps(h, h));
			h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
			sum = _mm_cvtss_f32(h);
		}
		for (; k < K; k++)
		{
			float		t = row[k] - mx;
			float		e = t > -RESP_CUT ? expf(t) : 0.0f;

			row[k] = e;
			sum += e;
		}
		s->lz[i] = (double) mx + log((double) sum);
		inv = 1.0f / sum;
		{
			__m256		vinv = _mm256_set1_ps(inv);
			__m256d		vx2d = _mm256_set1_pd(s->xn2[i]);

			for (k = 0; k < K8; k += 8)
			{
				__m256		r = _mm256_mul_ps(_mm256_loadu_ps(row + k), vinv);

				_mm256_storeu_ps(row + k, r);
				if (st)
				{
					__m256		nz = _mm256_cmp_ps(r, _mm256_setzero_ps(), _CMP_NEQ_OQ);
					int			msk = _mm256_movemask_ps(nz);

					if (msk)
					{
						__m256d		lo = _mm256_cvtps_pd(_mm256_castps256_ps128(r));
						__m256d		hi = _mm256_cvtps_pd(_mm256_extractf128_ps(r, 1));

						nnz += __builtin_popcount((unsigned) msk);
						_mm256_storeu_pd(st->nk + k, _mm256_add_pd(_mm256_loadu_pd(st->nk + k), lo));
						_mm256_storeu_pd(st->nk + k + 4, _mm256_add_pd(_mm256_loadu_pd(st->nk + k + 4), hi));
						if (sph)
						{
							_mm256_storeu_pd(st->sxx + k, _mm256_fmadd_pd(lo, vx2d, _mm256_loadu_pd(st->sxx + k)));
							_mm256_storeu_pd(st->sxx + k + 4, _mm256_fmadd_pd(hi, vx2d, _mm256_loadu_pd(st->sxx + k + 4)));
						}
					}
				}
			}
			for (; k < K; k++)
			{
				row[k] *= inv;
				if (st && row[k] != 0.0f)
				{
					st->nk[k] += row[k];
					if (sph)
						st->sxx[k] += row[k] * s->xn2[i];
					nnz++;
				}
			}
		}
	}
	s->tile_nnz = nnz;
}

/* sx += r * a over the non-zero r of a sparse tile (float path) */
AVX2_FN static void
tile_sx_sparse_f_avx2(score_ctx *s, int nt, em_stats *st)
{
	int			K = s->K,
				W = s->W,
				D = s->D;

	for (int i = 0; i < nt; i++)
	{
		const float *r = s->S_f + (size_t) i * K;
		const float *a = s->A_f + (size_t) i * W;

		for (int k = 0; k < K; k++)
		{
			double	   *acc;
			__m256d		vr;
			int			j = 0;

			if (r[k] == 0.0f || s->isbad[k])
				continue;
			acc = st->sx + (size_t) k * W;
			vr = _mm256_set1_pd((double) r[k]);
			if (W == D)
			{
				for (; j + 4 <= D; j += 4)
					_mm256_storeu_pd(acc + j, _mm256_fmadd_pd(vr, _mm256_cvtps_pd(_mm_loadu_ps(a + j)),
															 _mm256_loadu_pd(acc + j)));
				for (; j < D; j++)
					acc[j] += (double) r[k] * a[j];
			}
			else
			{
				/* diag: squares in float64 (float32 squares would round away
				 * the variance of a narrow component) */
				for (; j + 4 <= D; j += 4)
				{
					__m256d		v = _mm256_cvtps_pd(_mm_loadu_ps(a + j));
					__m256d		rv = _mm256_mul_pd(vr, v);

					_mm256_storeu_pd(acc + j, _mm256_add_pd(rv, _mm256_loadu_pd(acc + j)));
					_mm256_storeu_pd(acc + D + j, _mm256_fmadd_pd(rv, v, _mm256_loadu_pd(acc + D + j)));
				}
				for (; j < D; j++)
				{
					double		v = a[j];

					acc[j] += r[k] * v;
					acc[D + j] += r[k] * v * v;
				}
			}
		}
	}
	s->sparse_tiles++;
}
/* ctx_fix_bad / ctx_bad_stats with 4-wide float64 FMA, components outer */
AVX2_FN static void
ctx_fix_bad_avx2(score_ctx *s, const float *X, int nt)
{
	int			K = s->K,
				D = s->D,
				VL = gmm_var_len(s->cov, D);
	int			D4 = D & ~3;

	for (int b = 0; b < s->nbad; b++)
	{
		const double *mu = s->bad_mu + (size_t) b * D;
		const double *pr = s->bad_prec + (size_t) b * VL;
		int			k = s->bad[b];

		for (int i = 0; i < nt; i++)
		{
			const float *x = X + (size_t) i * D;
			__m256d		acc0 = _mm256_setzero_pd(),
						acc1 = _mm256_setzero_pd();
			double		q;
			int			d = 0;

			if (VL == 1)
			{
				for (; d + 8 <= D4; d += 8)
				{
					__m256d		t0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + d)), _mm256_loadu_pd(mu + d));
					__m256d		t1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + d + 4)), _mm256_loadu_pd(mu + d + 4));

					acc0 = _mm256_fmadd_pd(t0, t0, acc0);
					acc1 = _mm256_fmadd_pd(t1, t1, acc1);
				}
				for (; d < D4; d += 4)
				{
					__m256d		t0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + d)), _mm256_loadu_pd(mu + d));

					acc0 = _mm256_fmadd_pd(t0, t0, acc0);
				}
				q = hsum256d(_mm256_add_pd(acc0, acc1));
				for (; d < D; d++)
				{
					double		t = (double) x[d] - mu[d];

					q += t * t;
				}
				q *= pr[0];
			}
			else
			{
				for (; d + 8 <= D4; d += 8)
				{
					__m256d		t0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + d)), _mm256_loadu_pd(mu + d));
					__m256d		t1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + d + 4)), _mm256_loadu_pd(mu + d + 4));

					acc0 = _mm256_fmadd_pd(_mm256_mul_pd(t0, t0), _mm256_loadu_pd(pr + d), acc0);
					acc1 = _mm256_fmadd_pd(_mm256_mul_pd(t1, t1), _mm256_loadu_pd(pr + d + 4), acc1);
				}
				for (; d < D4; d += 4)
				{
					__m256d		t0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + d)), _mm256_loadu_pd(mu + d));

					acc0 = _mm256_fmadd_pd(_mm256_mul_pd(t0, t0), _mm256_loadu_pd(pr + d), acc0);
				}
				q = hsum256d(_mm256_add_pd(acc0, acc1));
				for (; d < D; d++)
				{
					double		t = (double) x[d] - mu[d];

					q += t * t * pr[d];
				}
			}
			if (s->dbl)
				s->S_d[(size_t) i * K + k] = s->bad_ln[b] - 0.5 * q;
			else
				s->S_f[(size_t) i * K + k] = (float) (s->bad_ln[b] - 0.5 * q);
		}
	}
}

AVX2_FN static void
ctx_bad_stats_avx2(score_ctx *s, const float *X, int nt)
{
	int			K = s->K,
				D = s->D,
				VL = gmm_var_len(s->cov, D);
	int			D4 = D & ~3;

	for (int b = 0; b < s->nbad; b++)
	{
		const double *mu = s->bad_mu + (size_t) b * D;
		double	   *s1 = s->bad_s1 + (size_t) b * D;
		double	   *s2 = s->bad_s2 + (size_t) b * VL;
		int			k = s->bad[b];

		for (int i = 0; i < nt; i++)
		{
			size_t		j = (size_t) i * K + k;
			double		r = s->dbl ? s->S_d[j] : (double) s->S_f[j];
			const float *x = X + (size_t) i * D;
			__m256d		vr,
						qacc = _mm256_setzero_pd();
			double		q;
			int			d = 0;

			if (r == 0.0)
				continue;
			vr = _mm256_set1_pd(r);
			for (; d < D4; d += 4)
			{
				__m256d		t = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + d)), _mm256_loadu_pd(mu + d));
				__m256d		rt = _mm256_mul_pd(vr, t);

				_mm256_storeu_pd(s1 + d, _mm256_add_pd(_mm256_loadu_pd(s1 + d), rt));
				if (VL == 1)
					qacc = _mm256_fmadd_pd(t, t, qacc);
				else
					_mm256_storeu_pd(s2 + d, _mm256_fmadd_pd(rt, t, _mm256_loadu_pd(s2 + d)));
			}
			q = VL == 1 ? hsum256d(qacc) : 0.0;
			for (; d < D; d++)
			{
				double		t = (double) x[d] - mu[d];

				s1[d] += r * t;
				if (VL == 1)
					q += t * t;
				else
					s2[d] += r * t * t;
			}
			if (VL == 1)
				s2[0] += r * q;
		}
	}
}
#endif


/* Load a tile, score it, turn scores into responsibilities (lz per row);
 * with st, also nk, sxx and the tile's non-zero count. */
static void
ctx_tile(score_ctx *s, const float *X, int nt, double inv_temp, em_stats *st)
{
	if (s->dbl)
	{
		tile_load_d(s, X, nt);
		tile_scores_d(s, nt);
		if (s->nbad)
		{
#ifdef GMM_HAVE_AVX2_PATH
			if (s->simd)
				ctx_fix_bad_avx2(s, X, nt);
			else
#endif
				ctx_fix_bad(s, X, nt);
		}
		tile_post_d(s, nt, inv_temp, st);
		return;
	}
#ifdef GMM_HAVE_AVX2_PATH
	if (s->simd)
	{
		tile_load_f_avx2(s, X, nt);
		tile_scores_f(s, nt);
		if (s->nbad)
			ctx_fix_bad_avx2(s, X, nt);
		tile_post_f_avx2(s, nt, inv_temp, st);
		return;
	}
#endif
	tile_load_f(s, X, nt);
	tile_scores_f(s, nt);
	if (s->nbad)
		ctx_fix_bad(s, X, nt);
	tile_post_f(s, nt, inv_temp, st);
}

/* sx of the tile (after ctx_tile with st) */
static void
ctx_tile_sx(score_ctx *s, int nt, em_stats *st)
{
	if (s->dbl)
		tile_sx_d(s, nt, st);
#ifdef GMM_HAVE_AVX2_PATH
	else if (s->simd && s->tile_nnz * SPARSE_RATIO < (int64_t) nt * s->K)
		tile_sx_sparse_f_avx2(s, nt, st);
#endif
	else
		tile_sx_f(s, nt, st);
}

/* responsibility of row i, component k in the current tile */
static inline double
ctx_resp(const score_ctx *s, int i, int k)
{
	size_t		j = (size_t) i * s->K + k;

	return s->dbl ? s->S_d[j] : (double) s->S_f[j];
}

/* ---------------------------------------------------------------------------
 * One E pass over X: log-likelihood, optionally statistics.
 */
static gmm_status
e_pass(score_ctx *s, const float *X, int64_t N, em_stats *st, float *row_ll,
	   double *ll_out, const gmm_fit_params *p, gmm_cpu_options *opt, gmm_error *err)
{
	int			K = s->K,
				D = s->D,
				W = s->W;
	double		ll = 0.0;
	int64_t		tiles = 0;

	if (st)
	{
		memset(st->nk, 0, sizeof(double) * K);
		memset(st->sx, 0, sizeof(double) * (size_t) K * W);
		memset(st->sxx, 0, sizeof(double) * K);
		if (s->nbad)
		{
			memset(s->bad_s1, 0, sizeof(double) * (size_t) s->nbad * D);
			memset(s->bad_s2, 0, sizeof(double) * (size_t) s->nbad * gmm_var_len(s->cov, D));
		}
	}
	if (opt)
	{
		if (s->dbl)
			opt->passes_double++;
		else if (s->nbad)
			opt->passes_mixed++;
		else
			opt->passes_float++;
		if (s->cond > opt->max_cond)
			opt->max_cond = s->cond;
	}
	for (int64_t n0 = 0; n0 < N; n0 += s->T)
	{
		int			nt = (int) ((N - n0) < s->T ? (N - n0) : s->T);

		ctx_tile(s, X + n0 * (int64_t) D, nt, 1.0, st);
		for (int i = 0; i < nt; i++)
		{
			ll += s->lz[i];
			if (row_ll)
				row_ll[n0 + i] = (float) s->lz[i];
		}
		if (st)
		{
			ctx_tile_sx(s, nt, st);
			if (s->nbad)
			{
#ifdef GMM_HAVE_AVX2_PATH
				if (s->simd)
					ctx_bad_stats_avx2(s, X + n0 * (int64_t) D, nt);
				else
#endif
					ctx_bad_stats(s, X + n0 * (int64_t) D, nt);
			}
		}
		if (p && p->progress && (++tiles % PROGRESS_EVERY_TILES) == 0)
		{
			if (p->progress(p->progress_arg, "estep", n0 + nt, N))
				return gmm_fail(err, GMM_ECANCELED, "canceled during an E-step");
		}
	}
	*ll_out = ll / (double) N;
	if (!isfinite(*ll_out))
		return gmm_fail(err, GMM_EINTERNAL, "the mean log-likelihood is not finite (%g)", *ll_out);
	return GMM_OK;
}

/* ---------------------------------------------------------------------------
 * Validation of model arguments
 */
static gmm_status
check_model(const gmm_model *m, gmm_error *err)
{
	if (m == NULL || m->K < 1 || m->D < 1 || !m->weights || !m->means || !m->vars ||
		!m->log_norm || !m->prec || !m->mean_sqnorm)
		return gmm_fail(err, GMM_EINVAL, "no model, or a model without parameters");
	if (m->cov != GMM_COV_SPHERICAL && m->cov != GMM_COV_DIAG)
		return gmm_fail(err, GMM_EINVAL, "unknown covariance type %d", (int) m->cov);
	return GMM_OK;
}

static gmm_status
check_params(const gmm_fit_params *p, gmm_error *err)
{
	if (p == NULL)
		return gmm_fail(err, GMM_EINVAL, "no fit parameters");
	if (p->max_iter < 0)
		return gmm_fail(err, GMM_EINVAL, "max_iter must be >= 0 (got %d)", p->max_iter);
	if (isnan(p->tol))
		return gmm_fail(err, GMM_EINVAL, "tol is NaN");
	if (!(p->reg_covar >= 0.0) || !isfinite(p->reg_covar))
		return gmm_fail(err, GMM_EINVAL, "reg_covar must be finite and >= 0 (got %g)", p->reg_covar);
	if (p->tile_rows < 0)
		return gmm_fail(err, GMM_EINVAL, "tile_rows must be >= 0 (got %d)", p->tile_rows);
	return GMM_OK;
}

/* ---------------------------------------------------------------------------
 * M-step (in centred coordinates), with re-seeding of empty components.
 */

/* Indices of the e rows with the lowest row_ll (max-heap of size e). */
static void
worst_rows(const float *row_ll, int64_t N, int e, int64_t *heap)
{
	int			h = 0;

	for (int64_t n = 0; n < N; n++)
	{
		float		v = row_ll[n];

		if (h < e)
		{
			int			i = h++;

			heap[i] = n;
			while (i > 0)
			{
				int			pa = (i - 1) / 2;

				int64_t		t;

				if (row_ll[heap[pa]] >= row_ll[heap[i]])
					break;
				t = heap[pa];
				heap[pa] = heap[i];
				heap[i] = t;
				i = pa;
			}
		}
		else if (v < row_ll[heap[0]])
		{
			int			i = 0;

			heap[0] = n;
			for (;;)
			{
				int			l = 2 * i + 1,
							r = l + 1,
							big = i;
				int64_t		t;

				if (l < h && row_ll[heap[l]] > row_ll[heap[big]])
					big = l;
				if (r < h && row_ll[heap[r]] > row_ll[heap[big]])
					big = r;
				if (big == i)
					break;
				t = heap[big];
				heap[big] = heap[i];
				heap[i] = t;
				i = big;
			}
		}
	}
}

static gmm_status
m_step(gmm_model *m, const score_ctx *s, const em_stats *st, const float *X, int64_t N,
	   const float *row_ll, double reg, int equal_weights, int *reseeded, gmm_error *err)
{
	int			K = m->K,
				D = m->D,
				W = s->W,
				VL = gmm_var_len(m->cov, D);
	int			nempty = 0;
	double		wsum = 0.0;
	double	   *pooled;
	double		pooled_w = 0.0;

	pooled = calloc((size_t) VL, sizeof(double));
	if (pooled == NULL)
		return gmm_fail(err, GMM_ENOMEM, "out of memory in the M-step");

	for (int k = 0; k < K; k++)
	{
		double		nk = st->nk[k] + 10.0 * DBL_EPSILON;
		const double *s1,
				   *s2,
				   *shift;
		float	   *mu = m->means + (size_t) k * D;
		float	   *v = m->vars + (size_t) k * VL;
		int			b = s->badidx[k];

		if (st->nk[k] < EMPTY_NK)
		{
			nempty++;
			continue;
		}
		/* moments around the data centre, or around the old mean for the
		 * ill-conditioned components (ctx_bad_stats) */
		if (b >= 0)
		{
			s1 = s->bad_s1 + (size_t) b * D;
			s2 = s->bad_s2 + (size_t) b * VL;
			shift = s->bad_mu + (size_t) b * D;
		}
		else
		{
			s1 = st->sx + (size_t) k * W;
			s2 = m->cov == GMM_COV_DIAG ? s1 + D : &st->sxx[k];
			shift = s->center_d;
		}
		if (m->cov == GMM_COV_DIAG)
		{
			for (int d = 0; d < D; d++)
			{
				double		md = s1[d] / nk;
				double		vd = s2[d] / nk - md * md;

				if (vd < 0.0)
					vd = 0.0;
				vd += reg;
				mu[d] = (float) (md + shift[d]);
				v[d] = (float) vd;
				pooled[d] += st->nk[k] * vd;
			}
		}
		else
		{
			double		q = 0.0,
						vd;

			for (int d = 0; d < D; d++)
			{
				double		md = s1[d] / nk;

				q += md * md;
				mu[d] = (float) (md + shift[d]);
			}
			vd = (s2[0] / nk - q) / D;
			if (vd < 0.0)
				vd = 0.0;
			vd += reg;
			v[0] = (float) vd;
			pooled[0] += st->nk[k] * vd;
		}
		pooled_w += st->nk[k];
		m->weights[k] = (float) nk;
		wsum += nk;
	}

	if (nempty > 0)
	{
		int64_t    *rows = malloc(sizeof(int64_t) * (size_t) nempty);
		int			j = 0;

		if (rows == NULL)
		{
			free(pooled);
			return gmm_fail(err, GMM_ENOMEM, "out of memory re-seeding components");
		}
		worst_rows(row_ll, N, nempty, rows);
		for (int k = 0; k < K; k++)
		{
			if (st->nk[k] >= EMPTY_NK)
				continue;
			{
				const float *x = X + rows[j++] * (int64_t) D;
				float	   *v = m->vars + (size_t) k * VL;

				memcpy(m->means + (size_t) k * D, x, sizeof(float) * D);
				for (int d = 0; d < VL; d++)
				{
					double		pv = pooled_w > 0 ? pooled[d] / pooled_w : 1.0;

					v[d] = (float) (pv > 0 ? pv : (reg > 0 ? reg : 1.0));
				}
				m->weights[k] = 1.0f;
				wsum += 1.0;
			}
		}
		free(rows);
		*reseeded += nempty;
	}
	free(pooled);

	for (int k = 0; k < K; k++)
	{
		m->weights[k] = equal_weights ? (float) (1.0 / K) : (float) (m->weights[k] / wsum);
		if (!(m->weights[k] > 0.0f))
			m->weights[k] = FLT_MIN;
		for (int j = 0; j < VL; j++)
			if (!(m->vars[(size_t) k * VL + j] > 0.0f))
				m->vars[(size_t) k * VL + j] = FLT_MIN;
	}
	return gmm_model_prepare(m, err);
}

/* ---------------------------------------------------------------------------
 * EM
 */
gmm_status
gmm_em(const float *X, int64_t N, gmm_model *m, const gmm_fit_params *p,
	   gmm_fit_report *report, gmm_error *err)
{
	return gmm_cpu_em(X, N, m, p, NULL, report, err);
}

gmm_status
gmm_cpu_em(const float *X, int64_t N, gmm_model *m, const gmm_fit_params *p,
		   gmm_cpu_options *opt, gmm_fit_report *report, gmm_error *err)
{
	gmm_status	st;
	score_ctx	s;
	em_stats	es = {0};
	double	   *cd = NULL;
	float	   *row_ll = NULL;
	gmm_fit_report rep = {0};
	double		prev = -INFINITY,
				ll = 0.0,
				t0;
	int			K,
				D,
				T;

	if (err)
	{
		err->code = GMM_OK;
		err->msg[0] = '\0';
	}
	if ((st = check_model(m, err)) != GMM_OK || (st = check_params(p, err)) != GMM_OK)
		return st;
	K = m->K;
	D = m->D;
	if (X == NULL || N < 1)
		return gmm_fail(err, GMM_EINVAL, "no input rows (N = %lld)", (long long) N);
	if ((int64_t) K > N)
		return gmm_fail(err, GMM_EINVAL, "K = %d components need at least as many rows (N = %lld)", K, (long long) N);
	if (p->equal_weights)
		for (int k = 0; k < K; k++)
			m->weights[k] = (float) (1.0 / K);
	if ((st = gmm_model_prepare(m, err)) != GMM_OK)
		return st;

	T = tile_rows_for(p->tile_rows, K, N);
	if (opt)
	{
		opt->passes_double = opt->passes_float = opt->passes_mixed = 0;
		opt->max_cond = 0.0;
	}
	if ((st = ctx_alloc(&s, K, D, m->cov, T, opt ? opt->precision : GMM_CPU_PREC_AUTO, err)) != GMM_OK)
		return st;
	cd = malloc(sizeof(double) * D);
	row_ll = malloc(sizeof(float) * (size_t) N);
	es.nk = malloc(sizeof(double) * K);
	es.sx = malloc(sizeof(double) * (size_t) K * s.W);
	es.sxx = malloc(sizeof(double) * K);
	if (!cd || !row_ll || !es.nk || !es.sx || !es.sxx)
	{
		st = gmm_fail(err, GMM_ENOMEM, "out of memory for EM (N = %lld, K = %d, D = %d)", (long long) N, K, D);
		goto done;
	}
	t0 = now_seconds();
	if ((st = data_mean(X, N, D, cd, s.m2, err)) != GMM_OK)
		goto done;
	ctx_set_center(&s, cd);
	rep.seconds_estep += now_seconds() - t0;

	for (int it = 0; it < p->max_iter; it++)
	{
		double		t1 = now_seconds();

		if ((st = ctx_set_model(&s, m, 1, 0, err)) != GMM_OK ||
			(st = e_pass(&s, X, N, &es, row_ll, &ll, p, opt, err)) != GMM_OK)
			goto done;
		rep.seconds_estep += now_seconds() - t1;
		if (it > 0 && ll - prev < p->tol)
		{
			rep.converged = 1;
			break;
		}
		prev = ll;
		t1 = now_seconds();
		if ((st = m_step(m, &s, &es, X, N, row_ll, p->reg_covar, p->equal_weights, &rep.reseeded, err)) != GMM_OK)
			goto done;
		rep.seconds_mstep += now_seconds() - t1;
		rep.iterations++;
		if (p->progress && p->progress(p->progress_arg, "em", rep.iterations, p->max_iter))
		{
			st = gmm_fail(err, GMM_ECANCELED, "canceled after EM iteration %d", rep.iterations);
			goto done;
		}
	}
	if (!rep.converged)
	{
		double		t1 = now_seconds();

		if ((st = ctx_set_model(&s, m, 0, 0, err)) != GMM_OK ||
			(st = e_pass(&s, X, N, NULL, NULL, &ll, p, opt, err)) != GMM_OK)
			goto done;
		rep.seconds_estep += now_seconds() - t1;
	}
	rep.mean_loglik = ll;
	st = GMM_OK;

done:
	if (report)
	{
		double		si = report->seconds_init;

		*report = rep;
		report->seconds_init = si;
	}
	ctx_free(&s);
	free(cd);
	free(row_ll);
	free(es.nk);
	free(es.sx);
	free(es.sxx);
	return st;
}

/* ---------------------------------------------------------------------------
 * k-means++ initialisation
 */

#ifdef GMM_HAVE_AVX2_PATH
AVX2_FN static float
sqdist_avx2(const float *a, const float *b, int D)
{
	__m256		acc0 = _mm256_setzero_ps(),
				acc1 = _mm256_setzero_ps();
	__m128		h;
	float		q;
	int			d = 0;

	for (; d + 16 <= D; d += 16)
	{
		__m256		t0 = _mm256_sub_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d));
		__m256		t1 = _mm256_sub_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8));

		acc0 = _mm256_fmadd_ps(t0, t0, acc0);
		acc1 = _mm256_fmadd_ps(t1, t1, acc1);
	}
	for (; d + 8 <= D; d += 8)
	{
		__m256		t0 = _mm256_sub_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d));

		acc0 = _mm256_fmadd_ps(t0, t0, acc0);
	}
	acc0 = _mm256_add_ps(acc0, acc1);
	h = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
	h = _mm_add_ps(h, _mm_movehl_ps(h, h));
	h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
	q = _mm_cvtss_f32(h);
	for (; d < D; d++)
	{
		float		t = a[d] - b[d];

		q += t * t;
	}
	return q;
}
#endif

/* ||a - b||^2 in float, eight independent partial sums (vectorisable) */
static inline float
sqdist(const float *a, const float *b, int D)
{
	float		acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	float		q;
	int			d = 0;

	for (; d + 8 <= D; d += 8)
		for (int j = 0; j < 8; j++)
		{
			float		t = a[d + j] - b[d + j];

			acc[j] += t * t;
		}
	q = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
	for (; d < D; d++)
	{
		float		t = a[d] - b[d];

		q += t * t;
	}
	return q;
}
gmm_status
gmm_init_kmeanspp(const float *X, int64_t N, int D, const gmm_fit_params *p,
				  gmm_model **out, gmm_error *err)
{
	gmm_status	st = GMM_OK;
	int			K;
	double	   *cd = NULL,
			   *dss = NULL;
	float	   *d2 = NULL;
	int64_t    *seeds = NULL;
	int32_t    *label = NULL;
	double	   *cnt = NULL,
			   *msum = NULL,
			   *vsum = NULL;
	gmm_model  *m = NULL;
	rng64		rng;
	int			VL;
	int			simd = 0;

	if (err)
	{
		err->code = GMM_OK;
		err->msg[0] = '\0';
	}
	if (out == NULL)
		return gmm_fail(err, GMM_EINVAL, "no place for the model");
	*out = NULL;
	if ((st = check_params(p, err)) != GMM_OK)
		return st;
	K = p->K;
	if (X == NULL || N < 1)
		return gmm_fail(err, GMM_EINVAL, "no input rows (N = %lld)", (long long) N);
	if (D < 1)
		return gmm_fail(err, GMM_EINVAL, "dimension must be >= 1 (got %d)", D);
	if (K < 1)
		return gmm_fail(err, GMM_EINVAL, "K must be >= 1 (got %d)", K);
	if ((int64_t) K > N)
		return gmm_fail(err, GMM_EINVAL, "K = %d components need at least as many rows (N = %lld)", K, (long long) N);
	if (p->cov != GMM_COV_SPHERICAL && p->cov != GMM_COV_DIAG)
		return gmm_fail(err, GMM_EINVAL, "unknown covariance type %d", (int) p->cov);
	VL = gmm_var_len(p->cov, D);

	m = gmm_model_alloc(K, D, p->cov, err);
	if (m == NULL)
		return err ? err->code : GMM_ENOMEM;
	cd = malloc(sizeof(double) * D);
	dss = malloc(sizeof(double) * K);
	d2 = malloc(sizeof(float) * (size_t) N);
	seeds = malloc(sizeof(int64_t) * K);
	label = malloc(sizeof(int32_t) * (size_t) N);
	cnt = calloc((size_t) K, sizeof(double));
	msum = calloc((size_t) K * D, sizeof(double));
	vsum = calloc((size_t) K * D, sizeof(double));
	if (!cd || !dss || !d2 || !seeds || !label || !cnt || !msum || !vsum)
	{
		st = gmm_fail(err, GMM_ENOMEM, "out of memory for k-means++ (N = %lld, K = %d, D = %d)", (long long) N, K, D);
		goto done;
	}
	if ((st = data_mean(X, N, D, cd, NULL, err)) != GMM_OK)
		goto done;

	/*
	 * k-means++: each seed is a row drawn with probability proportional to
	 * its squared distance to the nearest seed so far.  label[n] is that
	 * nearest seed, so after the last seed it is the hard assignment (ties:
	 * the lower index).  A new seed s cannot be nearer to x than x's current
	 * seed c when ||s - c||^2 >= 4 ||x - c||^2 (triangle inequality), which
	 * skips most rows once there are a few seeds.
	 */
	rng.s = p->seed ^ 0x6a09e667f3bcc908ULL;
#ifdef GMM_HAVE_AVX2_PATH
	simd = cpu_has_avx2() && getenv("FLASHGMM_NO_SIMD") == NULL;
#endif
	for (int k = 0; k < K; k++)
	{
		int64_t		pick;
		const float *xs;

		if (k == 0)
		{
			pick = (int64_t) (rng_uniform(&rng) * (double) N);
			if (pick >= N)
				pick = N - 1;
		}
		else
		{
			double		total = 0.0,
						u,
						acc = 0.0;

			for (int64_t n = 0; n < N; n++)
				total += d2[n];
			if (!(total > 0.0))
			{
				pick = (int64_t) (rng_uniform(&rng) * (double) N);
				if (pick >= N)
					pick = N - 1;
			}
			else
			{
				u = rng_uniform(&rng) * total;
				pick = -1;
				for (int64_t n = 0; n < N; n++)
				{
					acc += d2[n];
					if (acc > u && d2[n] > 0.0f)
					{
						pick = n;
						break;
					}
				}
				if (pick < 0)
				{
					/* rounding: the last row with positive d2 */
					for (int64_t n = N - 1; n >= 0; n--)
						if (d2[n] > 0.0f)
						{
							pick = n;
							break;
						}
				}
			}
		}
		seeds[k] = pick;
		xs = X + pick * (int64_t) D;
		for (int j = 0; j < k; j++)
		{
			const float *xj = X + seeds[j] * (int64_t) D;
			double		q = 0.0;

			for (int d = 0; d < D; d++)
			{
				double		t = (double) xs[d] - xj[d];

				q += t * t;
			}
			dss[j] = q;
		}
		for (int64_t n = 0; n < N; n++)
		{
			const float *x = X + n * (int64_t) D;
			float		q;

			if (k > 0 && dss[label[n]] >= 4.0 * (double) d2[n])
				continue;
#ifdef GMM_HAVE_AVX2_PATH
			if (simd)
				q = sqdist_avx2(x, xs, D);
			else
#endif
				q = sqdist(x, xs, D);
			if (k == 0 || q < d2[n])
			{
				d2[n] = q;
				label[n] = k;
			}
		}
		if (d2[pick] > 0.0f || k == 0)
		{
			d2[pick] = 0.0f;
			label[pick] = k;
		}
		if (p->progress && p->progress(p->progress_arg, "init", k + 1, K))
		{
			st = gmm_fail(err, GMM_ECANCELED, "canceled during k-means++");
			goto done;
		}
	}

	for (int64_t n = 0; n < N; n++)
	{
		const float *x = X + n * (int64_t) D;
		int			l = label[n];
		double	   *ms = msum + (size_t) l * D;

		cnt[l] += 1.0;
		for (int d = 0; d < D; d++)
			ms[d] += (double) x[d] - cd[d];
	}
	for (int k = 0; k < K; k++)
	{
		if (cnt[k] > 0)
			for (int d = 0; d < D; d++)
				msum[(size_t) k * D + d] /= cnt[k];
		else
			for (int d = 0; d < D; d++)
				msum[(size_t) k * D + d] = (double) X[seeds[k] * (int64_t) D + d] - cd[d];
	}
	for (int64_t n = 0; n < N; n++)
	{
		const float *x = X + n * (int64_t) D;
		int			l = label[n];
		const double *ms = msum + (size_t) l * D;
		double	   *vs = vsum + (size_t) l * D;

		for (int d = 0; d < D; d++)
		{
			double		v = (double) x[d] - cd[d] - ms[d];

			vs[d] += v * v;
		}
	}
	{
		/* pooled variance for components that got no row */
		double	   *pool = calloc((size_t) VL, sizeof(double));
		double		total = 0.0;

		if (pool == NULL)
		{
			st = gmm_fail(err, GMM_ENOMEM, "out of memory for k-means++");
			goto done;
		}
		for (int k = 0; k < K; k++)
			for (int d = 0; d < D; d++)
				pool[m->cov == GMM_COV_DIAG ? d : 0] += vsum[(size_t) k * D + d];
		for (int j = 0; j < VL; j++)
			pool[j] = pool[j] / (double) N / (m->cov == GMM_COV_DIAG ? 1.0 : (double) D) + p->reg_covar;

		for (int k = 0; k < K; k++)
		{
			double		c = cnt[k] > 0 ? cnt[k] : 1.0;
			float	   *v = m->vars + (size_t) k * VL;

			total += c;
			for (int d = 0; d < D; d++)
				m->means[(size_t) k * D + d] = (float) (msum[(size_t) k * D + d] + cd[d]);
			if (cnt[k] > 0)
			{
				if (m->cov == GMM_COV_DIAG)
					for (int d = 0; d < D; d++)
						v[d] = (float) (vsum[(size_t) k * D + d] / cnt[k] + p->reg_covar);
				else
				{
					double		q = 0.0;

					for (int d = 0; d < D; d++)
						q += vsum[(size_t) k * D + d];
					v[0] = (float) (q / cnt[k] / D + p->reg_covar);
				}
			}
			else
				for (int j = 0; j < VL; j++)
					v[j] = (float) pool[j];
			for (int j = 0; j < VL; j++)
				if (!(v[j] > 0.0f))
					v[j] = FLT_MIN;
		}
		for (int k = 0; k < K; k++)
			m->weights[k] = p->equal_weights ? (float) (1.0 / K) :
				(float) ((cnt[k] > 0 ? cnt[k] : 1.0) / total);
		free(pool);
	}
	if ((st = gmm_model_prepare(m, err)) != GMM_OK)
		goto done;
	*out = m;
	m = NULL;

done:
	gmm_model_free(m);
	free(cd);
	free(dss);
	free(d2);
	free(seeds);
	free(label);
	free(cnt);
	free(msum);
	free(vsum);
	return st;
}

gmm_status
gmm_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
		gmm_model **out, gmm_fit_report *report, gmm_error *err)
{
	gmm_model  *m = NULL;
	gmm_status	st;
	double		t0 = now_seconds();
	gmm_fit_report rep = {0};

	if (out == NULL)
		return gmm_fail(err, GMM_EINVAL, "no place for the model");
	*out = NULL;
	st = gmm_init_kmeanspp(X, N, D, p, &m, err);
	if (st != GMM_OK)
		return st;
	rep.seconds_init = now_seconds() - t0;
	st = gmm_em(X, N, m, p, &rep, err);
	if (report)
		*report = rep;
	if (st != GMM_OK)
	{
		gmm_model_free(m);
		return st;
	}
	*out = m;
	return GMM_OK;
}

/* ---------------------------------------------------------------------------
 * Scoring, assignment, ranking with a stored model
 */

/* Scoring context for a stored model, centred on the weighted mean of means. */
static gmm_status
ctx_for_model(score_ctx *s, const gmm_model *m, int64_t N, gmm_cpu_precision prec, gmm_error *err)
{
	gmm_status	st;
	int			T = tile_rows_for(0, m->K, N);
	int			D = m->D,
				VL = gmm_var_len(m->cov, m->D);
	double		ws = 0.0;

	if ((st = ctx_alloc(s, m->K, D, m->cov, T, prec, err)) != GMM_OK)
		return st;
	for (int k = 0; k < m->K; k++)
		ws += m->weights[k];
	for (int d = 0; d < D; d++)
	{
		double		c = 0.0;

		for (int k = 0; k < m->K; k++)
			c += (double) m->weights[k] * m->means[(size_t) k * D + d];
		s->center_d[d] = c / ws;
		s->center_f[d] = (float) s->center_d[d];
	}
	/* second moment around the centre the model predicts */
	for (int d = 0; d < D; d++)
	{
		double		q = 0.0;

		for (int k = 0; k < m->K; k++)
		{
			double		dm = (double) m->means[(size_t) k * D + d] - s->center_d[d];
			double		v = m->vars[(size_t) k * VL + (VL == 1 ? 0 : d)];

			q += (double) m->weights[k] * (v + dm * dm);
		}
		s->m2[d] = q / ws;
	}
	/* a stored model is prepared: its float log_norm saves K * D logs per
	 * call (gmm_assign is called per inserted row) */
	if ((st = ctx_set_model(s, m, 0, 1, err)) != GMM_OK)
	{
		ctx_free(s);
		return st;
	}
	return GMM_OK;
}

static gmm_status
check_stored_model(const gmm_model *m, gmm_error *err)
{
	gmm_status	st;

	if ((st = check_model(m, err)) != GMM_OK)
		return st;
	for (int k = 0; k < m->K; k++)
	{
		if (!(m->weights[k] > 0.0f) || !isfinite(m->weights[k]))
			return gmm_fail(err, GMM_EINVAL, "component %d has weight %g; weights must be positive", k, (double) m->weights[k]);
		for (int j = 0; j < gmm_var_len(m->cov, m->D); j++)
		{
			float		v = m->vars[(size_t) k * gmm_var_len(m->cov, m->D) + j];

			if (!(v > 0.0f) || !isfinite(v))
				return gmm_fail(err, GMM_EINVAL, "component %d has variance %g; variances must be positive", k, (double) v);
		}
	}
	return GMM_OK;
}

gmm_status
gmm_score(const gmm_model *m, const float *X, int64_t N, double *mean_loglik, gmm_error *err)
{
	return gmm_cpu_score(m, X, N, NULL, mean_loglik, err);
}

gmm_status
gmm_cpu_score(const gmm_model *m, const float *X, int64_t N, gmm_cpu_options *opt,
			  double *mean_loglik, gmm_error *err)
{
	gmm_status	st;
	score_ctx	s;
	double		ll = 0.0;

	if (err)
	{
		err->code = GMM_OK;
		err->msg[0] = '\0';
	}
	if ((st = check_stored_model(m, err)) != GMM_OK)
		return st;
	if (X == NULL || N < 1 || mean_loglik == NULL)
		return gmm_fail(err, GMM_EINVAL, "no input rows (N = %lld) or no output", (long long) N);
	if ((st = check_finite_rows(X, 0, N, m->D, err)) != GMM_OK)
		return st;
	if (opt)
	{
		opt->passes_double = opt->passes_float = opt->passes_mixed = 0;
		opt->max_cond = 0.0;
	}
	if ((st = ctx_for_model(&s, m, N, opt ? opt->precision : GMM_CPU_PREC_AUTO, err)) != GMM_OK)
		return st;
	st = e_pass(&s, X, N, NULL, NULL, &ll, NULL, opt, err);
	ctx_free(&s);
	if (st == GMM_OK)
		*mean_loglik = ll;
	return st;
}

gmm_status
gmm_assign(const gmm_model *m, const float *X, int64_t N,
		   int max_assign, float tau, float temperature,
		   int32_t *out_comp, float *out_resp, gmm_error *err)
{
	gmm_status	st;
	score_ctx	s;
	int			K,
				D,
				mk;
	int32_t    *top = NULL;

	if (err)
	{
		err->code = GMM_OK;
		err->msg[0] = '\0';
	}
	if ((st = check_stored_model(m, err)) != GMM_OK)
		return st;
	if (X == NULL || N < 1 || out_comp == NULL)
		return gmm_fail(err, GMM_EINVAL, "no input rows (N = %lld) or no output array", (long long) N);
	if (max_assign < 1)
		return gmm_fail(err, GMM_EINVAL, "max_assign must be >= 1 (got %d)", max_assign);
	if (!(temperature > 0.0f) || !isfinite(temperature))
		return gmm_fail(err, GMM_EINVAL, "temperature must be positive and finite (got %g)", (double) temperature);
	if (isnan(tau))
		return gmm_fail(err, GMM_EINVAL, "tau is NaN");
	K = m->K;
	D = m->D;
	mk = max_assign < K ? max_assign : K;
	top = malloc(sizeof(int32_t) * (size_t) mk);
	if (top == NULL)
		return gmm_fail(err, GMM_ENOMEM, "out of memory in assign");
	if ((st = ctx_for_model(&s, m, N, GMM_CPU_PREC_AUTO, err)) != GMM_OK)
	{
		free(top);
		return st;
	}
	for (int64_t n0 = 0; n0 < N; n0 += s.T)
	{
		int			nt = (int) ((N - n0) < s.T ? (N - n0) : s.T);

		if ((st = check_finite_rows(X, n0, n0 + nt, D, err)) != GMM_OK)
			break;
		ctx_tile(&s, X + n0 * (int64_t) D, nt, 1.0 / (double) temperature, NULL);
		for (int i = 0; i < nt; i++)
		{
			int32_t    *oc = out_comp + (n0 + i) * (int64_t) max_assign;
			float	   *orr = out_resp ? out_resp + (n0 + i) * (int64_t) max_assign : NULL;
			int			h = 0;

			/* top mk by responsibility, best first (ties: lower index first) */
			for (int k = 0; k < K; k++)
			{
				double		v = ctx_resp(&s, i, k);
				int			j;

				if (h == mk && !(v > ctx_resp(&s, i, top[h - 1])))
					continue;
				j = h < mk ? h++ : mk - 1;
				while (j > 0 && v > ctx_resp(&s, i, top[j - 1]))
				{
					top[j] = top[j - 1];
					j--;
				}
				top[j] = k;
			}
			for (int j = 0; j < max_assign; j++)
			{
				float		r = 0.0f;

				if (j < h)
					r = (float) ctx_resp(&s, i, top[j]);
				if (j < h && (j == 0 || r > tau))
				{
					oc[j] = top[j];
					if (orr)
						orr[j] = r;
				}
				else
				{
					oc[j] = -1;
					if (orr)
						orr[j] = 0.0f;
				}
			}
		}
	}
	ctx_free(&s);
	free(top);
	return st;
}

typedef struct rank_item
{
	float		key;
	int32_t		k;
} rank_item;

static int
rank_cmp_asc(const void *a, const void *b)
{
	const rank_item *x = a,
			   *y = b;

	if (x->key < y->key)
		return -1;
	if (x->key > y->key)
		return 1;
	return (x->k > y->k) - (x->k < y->k);
}

gmm_status
gmm_rank(const gmm_model *m, const float *q, gmm_rank_mode mode, int n,
		 int32_t *order, float *key, gmm_error *err)
{
	gmm_status	st;
	rank_item  *items;
	int			K,
				D,
				VL;

	if (err)
	{
		err->code = GMM_OK;
		err->msg[0] = '\0';
	}
	if ((st = check_model(m, err)) != GMM_OK)
		return st;
	K = m->K;
	D = m->D;
	VL = gmm_var_len(m->cov, D);
	if (q == NULL || order == NULL)
		return gmm_fail(err, GMM_EINVAL, "no query or no output array");
	if (n < 1 || n > K)
		return gmm_fail(err, GMM_EINVAL, "n must be between 1 and K = %d (got %d)", K, n);
	if (mode != GMM_RANK_DISTANCE && mode != GMM_RANK_POSTERIOR)
		return gmm_fail(err, GMM_EINVAL, "unknown rank mode %d", (int) mode);
	for (int d = 0; d < D; d++)
		if (!isfinite(q[d]))
			return gmm_fail(err, GMM_ENONFINITE, "the query has a non-finite value (%g) in dimension %d", (double) q[d], d);
	items = malloc(sizeof(rank_item) * (size_t) K);
	if (items == NULL)
		return gmm_fail(err, GMM_ENOMEM, "out of memory in rank");
	for (int k = 0; k < K; k++)
	{
		const float *mu = m->means + (size_t) k * D;
		double		v;

		if (mode == GMM_RANK_DISTANCE)
		{
			double		d2 = 0.0;

			for (int d = 0; d < D; d++)
			{
				double		t = (double) q[d] - mu[d];

				d2 += t * t;
			}
			v = d2;
		}
		else
		{
			const float *pr = m->prec + (size_t) k * VL;
			double		e = 0.0;

			for (int d = 0; d < D; d++)
			{
				double		t = (double) q[d] - mu[d];

				e += t * t * (VL == 1 ? pr[0] : pr[d]);
			}
			/* sort ascending on the negated log-posterior */
			v = -((double) m->log_norm[k] - 0.5 * e);
		}
		items[k].key = (float) v;
		items[k].k = k;
	}
	qsort(items, (size_t) K, sizeof(rank_item), rank_cmp_asc);
	for (int i = 0; i < n; i++)
	{
		order[i] = items[i].k;
		if (key)
			key[i] = mode == GMM_RANK_DISTANCE ? items[i].key : -items[i].key;
	}
	free(items);
	return GMM_OK;
}
