/*
 * ref_em.c - float64 reference EM.  Scores are computed directly as
 * sum_d (x_d - mu_d)^2 / var_d, responsibilities kept as a full N x K matrix,
 * variances from a second pass around the new means: the textbook algorithm,
 * with none of the engine's expansions, tiles or float32 products.
 * Same update rules as scikit-learn's GaussianMixture (nk gets 10 * DBL_EPSILON,
 * weights are nk / sum nk, reg_covar added to every variance; spherical
 * variance is the mean of the per-dimension variances).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_em.h"

#define LOG_2PI 1.8378770664093454835606594728112

ref_model *
ref_from_gmm(const gmm_model *m)
{
	ref_model  *r = calloc(1, sizeof(ref_model));

	r->K = m->K;
	r->D = m->D;
	r->VL = gmm_var_len(m->cov, m->D);
	r->w = malloc(sizeof(double) * r->K);
	r->mu = malloc(sizeof(double) * (size_t) r->K * r->D);
	r->var = malloc(sizeof(double) * (size_t) r->K * r->VL);
	for (int k = 0; k < r->K; k++)
		r->w[k] = m->weights[k];
	for (size_t i = 0; i < (size_t) r->K * r->D; i++)
		r->mu[i] = m->means[i];
	for (size_t i = 0; i < (size_t) r->K * r->VL; i++)
		r->var[i] = m->vars[i];
	return r;
}

void
ref_free(ref_model *r)
{
	if (!r)
		return;
	free(r->w);
	free(r->mu);
	free(r->var);
	free(r);
}

/* log pi_k + log N(x | mu_k, var_k) for all k into s; returns log-sum-exp */
static double
ref_scores(const ref_model *r, const float *x, double *s)
{
	int			K = r->K,
				D = r->D;
	double		mx = -INFINITY,
				sum = 0.0;

	for (int k = 0; k < K; k++)
	{
		const double *mu = r->mu + (size_t) k * D;
		const double *v = r->var + (size_t) k * r->VL;
		double		q = 0.0,
					lv = 0.0;

		for (int d = 0; d < D; d++)
		{
			double		vd = r->VL == 1 ? v[0] : v[d];
			double		t = (double) x[d] - mu[d];

			q += t * t / vd;
			lv += log(vd);
		}
		s[k] = log(r->w[k]) - 0.5 * (D * LOG_2PI + lv) - 0.5 * q;
		if (s[k] > mx)
			mx = s[k];
	}
	for (int k = 0; k < K; k++)
		sum += exp(s[k] - mx);
	return mx + log(sum);
}

double
ref_score(const ref_model *r, const float *X, int64_t N)
{
	double	   *s = malloc(sizeof(double) * r->K);
	double		ll = 0.0;

	for (int64_t n = 0; n < N; n++)
		ll += ref_scores(r, X + n * r->D, s);
	free(s);
	return ll / (double) N;
}

double
ref_em_iter(ref_model *r, const float *X, int64_t N, double reg)
{
	return ref_em_iter_w(r, X, N, reg, 0);
}

double
ref_em_iter_w(ref_model *r, const float *X, int64_t N, double reg, int equal_weights)
{
	int			K = r->K,
				D = r->D;
	double	   *R = malloc(sizeof(double) * (size_t) N * K);
	double	   *nk = calloc((size_t) K, sizeof(double));
	double	   *sx = calloc((size_t) K * D, sizeof(double));
	double	   *sv = calloc((size_t) K * D, sizeof(double));
	double		ll = 0.0,
				tot = 0.0;
	int			empty = 0;

	for (int64_t n = 0; n < N; n++)
	{
		double	   *s = R + n * K;
		double		lz = ref_scores(r, X + n * D, s);

		ll += lz;
		for (int k = 0; k < K; k++)
		{
			s[k] = exp(s[k] - lz);
			nk[k] += s[k];
		}
	}
	for (int64_t n = 0; n < N; n++)
	{
		const float *x = X + n * D;

		for (int k = 0; k < K; k++)
		{
			double		rr = R[n * K + k];

			for (int d = 0; d < D; d++)
				sx[(size_t) k * D + d] += rr * x[d];
		}
	}
	for (int k = 0; k < K; k++)
	{
		nk[k] += 10.0 * DBL_EPSILON;
		if (nk[k] < 0.5)
			empty = 1;
		for (int d = 0; d < D; d++)
			r->mu[(size_t) k * D + d] = sx[(size_t) k * D + d] / nk[k];
	}
	for (int64_t n = 0; n < N; n++)
	{
		const float *x = X + n * D;

		for (int k = 0; k < K; k++)
		{
			double		rr = R[n * K + k];
			const double *mu = r->mu + (size_t) k * D;

			for (int d = 0; d < D; d++)
			{
				double		t = x[d] - mu[d];

				sv[(size_t) k * D + d] += rr * t * t;
			}
		}
	}
	for (int k = 0; k < K; k++)
		tot += nk[k];
	for (int k = 0; k < K; k++)
	{
		r->w[k] = equal_weights ? 1.0 / K : nk[k] / tot;
		if (r->VL == 1)
		{
			double		q = 0.0;

			for (int d = 0; d < D; d++)
				q += sv[(size_t) k * D + d];
			r->var[k] = q / nk[k] / D + reg;
		}
		else
			for (int d = 0; d < D; d++)
				r->var[(size_t) k * D + d] = sv[(size_t) k * D + d] / nk[k] + reg;
	}
	free(R);
	free(nk);
	free(sx);
	free(sv);
	return empty ? NAN : ll / (double) N;
}
