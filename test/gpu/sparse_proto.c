/*
 * sparse_proto.c - a CPU prototype (float64) of a sparse E step, the
 * measurement behind cuda/NOTES.md "Toward the EM targets".  Not a test.
 *
 * For a model (the CPU engine's k-means++ start, then after 10 EM
 * iterations; both covariances) it screens every (row, component) pair with
 * the one-product FP16 score of the h16 kernels (data and means centred by
 * the model's weighted mean, scaled by the power of two S, operands rounded to
 * FP16 as convert16_kernel / prepare_h16_kernel round them, products summed
 * exactly), keeps the candidates within T + M nats of the row's best screened
 * score, and runs the E step on them only: logZ, responsibilities, sum r and
 * sum r x.  It prints the screening error, candidates per row, the pairs the
 * screen missed (exact score within T of the row's best, screened out), and
 * the sparse E step's distance from the dense one; then how many tiles of 64
 * rows x 128 components hold a candidate (what a tile-skipping kernel could
 * not skip).  Components a single
 * FP16 product cannot score (an operand outside FP16's normal range, or
 * u e_k / sqrt(D) > 0.5 nat with u = 2^-11, e_k = sum_d (E[x_d^2] +
 * mu_kd^2) / var_kd) are "flagged" and scored exactly, as the kernels do.
 *
 *   gcc -O3 -march=native -std=gnu11 -fopenmp -Isrc/engine test/gpu/sparse_proto.c \
 *       src/engine/gmm_model.c src/engine/gmm_cpu.c -o /tmp/sparse_proto -lopenblas -lm
 *   /tmp/sparse_proto ../shared/data/sift-opencv-100k/base.fvecs 256 [NMAX]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gmm.h"

#define NM 3
static const double MARGIN[NM] = {0.5, 2, 8};	/* M, nats */
static const double T = 30;						/* nats below the row's best that can matter */

static float *
load_fvecs(const char *path, int64_t *N, int *D, int64_t nmax)
{
	FILE	   *f = fopen(path, "rb");
	int			d;

	if (!f || fread(&d, 4, 1, f) != 1)
		return NULL;
	fseek(f, 0, SEEK_END);
	int64_t		n = ftell(f) / (4 * (int64_t) (d + 1));

	fseek(f, 0, SEEK_SET);
	if (nmax > 0 && n > nmax)
		n = nmax;
	float	   *X = malloc(sizeof(float) * n * d);

	for (int64_t i = 0; i < n; i++)
		if (fread(&d, 4, 1, f) != 1 || fread(X + i * d, 4, d, f) != (size_t) d)
			return NULL;
	fclose(f);
	*N = n;
	*D = d;
	return X;
}

static float
h16(float v)
{
	return (float) (_Float16) v;
}

/*
 * Tiles of 64 rows x 128 components that hold at least one candidate (the
 * exact work a tiled GPU E step could not skip), with rows in their order
 * and sorted by their best component; components in index order and grouped
 * by a k-means of the means into K / 128 groups (order: group, then index).
 */
static const int *sort_key;	/* qsort's key of the indices it sorts */
static int
by_key(const void *a, const void *b)
{
	int			x = *(const int *) a,
				y = *(const int *) b;

	return sort_key[x] != sort_key[y] ? (sort_key[x] < sort_key[y] ? -1 : 1) : (x < y ? -1 : x > y);
}

static void
tiles(const gmm_model *m, const int *bestk, const uint64_t *cbits, int64_t N, int D)
{
	const int	K = m->K,
				KW = (K + 63) / 64,
				G = K / 128 > 0 ? K / 128 : 1;
	int		   *corder = malloc(sizeof(int) * K),
			   *cpos = malloc(sizeof(int) * K),
			   *grp = calloc(K, sizeof(int)),
			   *rkey = malloc(sizeof(int) * N),
			   *rorder = malloc(sizeof(int) * N);
	double	   *cen = malloc(sizeof(double) * G * D);

	/* k-means of the means into G groups (20 Lloyd steps from evenly spaced components) */
	for (int g = 0; g < G; g++)
		for (int d = 0; d < D; d++)
			cen[g * D + d] = m->means[(size_t) (g * (K / G)) * D + d];
	for (int it = 0; it < 20; it++)
	{
		double	   *acc = calloc((size_t) G * D, sizeof(double));
		int		   *cnt = calloc(G, sizeof(int));

		for (int k = 0; k < K; k++)
		{
			double		bd = INFINITY;

			for (int g = 0; g < G; g++)
			{
				double		dd = 0;

				for (int d = 0; d < D; d++)
				{
					double		t = m->means[(size_t) k * D + d] - cen[g * D + d];

					dd += t * t;
				}
				if (dd < bd)
					bd = dd, grp[k] = g;
			}
			cnt[grp[k]]++;
			for (int d = 0; d < D; d++)
				acc[grp[k] * D + d] += m->means[(size_t) k * D + d];
		}
		for (int g = 0; g < G; g++)
			for (int d = 0; d < D; d++)
				if (cnt[g])
					cen[g * D + d] = acc[g * D + d] / cnt[g];
		free(acc);
		free(cnt);
	}
	for (int variant = 0; variant < 3; variant++)
	{
		/* 0: rows and components in index order; 1: rows by best component; 2: rows and components grouped */
		int			grouped = variant == 2;

		for (int k = 0; k < K; k++)
			corder[k] = k;
		if (grouped)
		{
			sort_key = grp;
			qsort(corder, K, sizeof(int), by_key);
		}
		for (int i = 0; i < K; i++)
			cpos[corder[i]] = i;
		for (int64_t n = 0; n < N; n++)
		{
			rorder[n] = (int) n;
			rkey[n] = variant == 0 ? (int) n : cpos[bestk[n]];
		}
		sort_key = rkey;
		qsort(rorder, N, sizeof(int), by_key);
		int64_t		hit = 0,
					total = 0;

		for (int64_t r0 = 0; r0 < N; r0 += 64)
			for (int c0 = 0; c0 < K; c0 += 128)
			{
				int			any = 0;

				for (int64_t r = r0; r < r0 + 64 && r < N && !any; r++)
					for (int c = c0; c < c0 + 128 && c < K; c++)
					{
						int			k = corder[c];

						if (cbits[(size_t) rorder[r] * KW + k / 64] >> (k % 64) & 1)
						{
							any = 1;
							break;
						}
					}
				hit += any;
				total++;
			}
		printf("    tiles 64 x 128 holding a candidate, %s: %.1f%%\n",
			   variant == 0 ? "rows and components in index order" :
			   variant == 1 ? "rows sorted by best component" : "rows by best component, components grouped by k-means",
			   100.0 * hit / total);
	}
	free(corder);
	free(cpos);
	free(grp);
	free(rkey);
	free(rorder);
	free(cen);
}

static void
run(const char *tag, const gmm_model *m0, const float *X0, int64_t N, int D)
{
	const int	K = m0->K,
				diag = m0->cov == GMM_COV_DIAG;
	gmm_error	err;
	gmm_model  *m = gmm_model_clone(m0, &err);
	float	   *X = malloc(sizeof(float) * N * D);
	double	   *shift = calloc(D, sizeof(double)),
			   *ex2 = calloc(D, sizeof(double)),
				ws = 0;

	/* centred as the CUDA engine centres (model_shift): scores unchanged */
	for (int k = 0; k < K; k++)
	{
		ws += m->weights[k];
		for (int d = 0; d < D; d++)
			shift[d] += m->weights[k] * m->means[(size_t) k * D + d];
	}
	for (int d = 0; d < D; d++)
		shift[d] /= ws;
	for (int k = 0; k < K; k++)
		for (int d = 0; d < D; d++)
			m->means[(size_t) k * D + d] -= (float) shift[d];
	float		amax = 0;

	for (int64_t n = 0; n < N; n++)
		for (int d = 0; d < D; d++)
		{
			X[n * D + d] = X0[n * D + d] - (float) shift[d];
			amax = fmaxf(amax, fabsf(X[n * D + d]));
			ex2[d] += (double) X[n * D + d] * X[n * D + d] / N;
		}
	float		S = 1;

	while (amax * S >= 128)
		S *= 0.5f;
	while (amax * S < 64)
		S *= 2;

	/* FP16 model operands: spherical S mu; diag [mu / (var S) | -1 / (2 var S^2)] */
	float	   *W1 = malloc(sizeof(float) * K * D),
			   *W2 = malloc(sizeof(float) * K * D);
	int		   *flag = calloc(K, sizeof(int)),
				nflag = 0;

	for (int k = 0; k < K; k++)
	{
		double		ek = 0;

		for (int d = 0; d < D; d++)
		{
			double		var = diag ? m->vars[(size_t) k * D + d] : m->vars[k],
						mu = m->means[(size_t) k * D + d],
						w1 = diag ? mu / (var * S) : mu * S,
						w2 = diag ? -1.0 / (2 * var * S * S) : 0;

			if (fabs(w1) > 65504 || fabs(w2) > 65504 || (w1 != 0 && fabs(w1) < 6.1e-5) ||
				(w2 != 0 && fabs(w2) < 6.1e-5))
				flag[k] = 1;
			W1[(size_t) k * D + d] = h16((float) w1);
			W2[(size_t) k * D + d] = h16((float) w2);
			ek += (ex2[d] + mu * mu) / var;
		}
		if (ldexp(ek, -11) / sqrt((double) D) > 0.5)
			flag[k] = 1;
		nflag += flag[k];
	}

	double		emax = 0,
				esum = 0,
				cand[NM] = {0},
				lzmax = 0;
	/* for the tile analysis: each row's best component and its candidates (middle margin) as a bitmap */
	const int	KW = (K + 63) / 64;
	uint64_t   *cbits = calloc((size_t) N * KW, sizeof(uint64_t));
	int		   *bestk = malloc(sizeof(int) * N);
	int64_t		missed[NM] = {0};
	double	   *nkd = calloc(K, sizeof(double)),
			   *nks = calloc(K, sizeof(double)),
			   *sxd = calloc((size_t) K * D, sizeof(double)),
			   *sxs = calloc((size_t) K * D, sizeof(double));

#pragma omp parallel
	{
		double	   *s = malloc(sizeof(double) * K),
				   *st = malloc(sizeof(double) * K),
				   *lnkd = calloc(K, sizeof(double)),
				   *lnks = calloc(K, sizeof(double)),
				   *lsxd = calloc((size_t) K * D, sizeof(double)),
				   *lsxs = calloc((size_t) K * D, sizeof(double)),
					lemax = 0,
					lesum = 0,
					lcand[NM] = {0},
					llz = 0;
		float	   *xh = malloc(sizeof(float) * D),
				   *xq = malloc(sizeof(float) * D);
		int64_t		lmissed[NM] = {0};

#pragma omp for schedule(static)
		for (int64_t n = 0; n < N; n++)
		{
			const float *x = X + n * D;
			double		best = -INFINITY,
						sbest = -INFINITY;

			for (int d = 0; d < D; d++)
			{
				float		v = x[d] * S;

				xh[d] = h16(v);
				xq[d] = h16(v * v);
			}
			for (int k = 0; k < K; k++)
			{
				const float *mu = m->means + (size_t) k * D;
				double		q = 0,
							logdet = 0,
							exact = 0,
							screened = 0;

				for (int d = 0; d < D; d++)
				{
					double		var = diag ? m->vars[(size_t) k * D + d] : m->vars[k],
								t = x[d] - mu[d],
								xs = (double) x[d] * S;

					q += t * t / var;
					logdet += log(var);
					if (diag)
					{
						exact += xs * ((double) mu[d] / (var * S)) - xs * xs / (2 * var * S * S);
						screened += (double) xh[d] * W1[(size_t) k * D + d] + (double) xq[d] * W2[(size_t) k * D + d];
					}
					else
					{
						exact += xs * ((double) mu[d] * S) / ((double) S * S * var);
						screened += (double) xh[d] * W1[(size_t) k * D + d] / ((double) S * S * var);
					}
				}
				s[k] = log(m->weights[k]) - 0.5 * (D * log(2 * M_PI) + logdet + q);
				st[k] = s[k] + (flag[k] ? 0 : screened - exact);
				lemax = fmax(lemax, fabs(st[k] - s[k]));
				lesum += fabs(st[k] - s[k]);
				best = fmax(best, s[k]);
				sbest = fmax(sbest, st[k]);
			}
			/* dense */
			double		Z = 0;

			for (int k = 0; k < K; k++)
				Z += exp(s[k] - best);
			const double lz = best + log(Z);

			for (int k = 0; k < K; k++)
			{
				double		r = exp(s[k] - lz);

				lnkd[k] += r;
				for (int d = 0; d < D; d++)
					lsxd[(size_t) k * D + d] += r * x[d];
			}
			/* screened */
			for (int i = 0; i < NM; i++)
				for (int k = 0; k < K; k++)
				{
					int			in = st[k] >= sbest - T - MARGIN[i];

					lcand[i] += in;
					lmissed[i] += !in && s[k] >= best - T;
				}
			/* sparse E step on the candidates of the middle margin */
			double		Zc = 0;

			bestk[n] = 0;
			for (int k = 0; k < K; k++)
			{
				if (s[k] > s[bestk[n]])
					bestk[n] = k;
				if (st[k] >= sbest - T - MARGIN[1])
					cbits[(size_t) n * KW + k / 64] |= 1ull << (k % 64);
			}

			for (int k = 0; k < K; k++)
				if (st[k] >= sbest - T - MARGIN[1])
					Zc += exp(s[k] - best);
			const double lzc = best + log(Zc);

			llz = fmax(llz, fabs(lzc - lz));
			for (int k = 0; k < K; k++)
				if (st[k] >= sbest - T - MARGIN[1])
				{
					double		r = exp(s[k] - lzc);

					lnks[k] += r;
					for (int d = 0; d < D; d++)
						lsxs[(size_t) k * D + d] += r * x[d];
				}
		}
#pragma omp critical
		{
			emax = fmax(emax, lemax);
			esum += lesum;
			lzmax = fmax(lzmax, llz);
			for (int i = 0; i < NM; i++)
			{
				cand[i] += lcand[i];
				missed[i] += lmissed[i];
			}
			for (int k = 0; k < K; k++)
			{
				nkd[k] += lnkd[k];
				nks[k] += lnks[k];
			}
			for (size_t i = 0; i < (size_t) K * D; i++)
			{
				sxd[i] += lsxd[i];
				sxs[i] += lsxs[i];
			}
		}
		free(s);
		free(st);
		free(lnkd);
		free(lnks);
		free(lsxd);
		free(lsxs);
		free(xh);
		free(xq);
	}

	/* the engine's test measures: nk and means, relative, over components holding rows */
	double		nkrel = 0,
				meanrel = 0;

	for (int k = 0; k < K; k++)
	{
		double		a = 0,
					b = 0;

		if (nkd[k] <= 1e-3 * N / K)
			continue;
		nkrel = fmax(nkrel, fabs(nks[k] - nkd[k]) / nkd[k]);
		for (int d = 0; d < D; d++)
		{
			double		md = sxd[(size_t) k * D + d] / nkd[k] + shift[d],
						ms = sxs[(size_t) k * D + d] / nks[k] + shift[d];

			a += (md - ms) * (md - ms);
			b += md * md;
		}
		meanrel = fmax(meanrel, sqrt(a / b));
	}
	tiles(m, bestk, cbits, N, D);
	free(cbits);
	free(bestk);
	printf("%s (K=%d %s, S=2^%d, %d flagged): one-product score error max %.3f mean %.4f nats | T=%g:", tag, K,
		   diag ? "diag" : "spherical", (int) log2f(S), nflag, emax, esum / ((double) N * K), T);
	for (int i = 0; i < NM; i++)
		printf(" M=%g: %.1f cand/row, %lld missed;", MARGIN[i], cand[i] / N, (long long) missed[i]);
	printf(" sparse (M=%g) vs dense: logZ max diff %.1e, nk max rel %.1e, means max rel %.1e\n", MARGIN[1], lzmax,
		   nkrel, meanrel);
	free(W1);
	free(W2);
	free(flag);
	free(nkd);
	free(nks);
	free(sxd);
	free(sxs);
	free(X);
	free(shift);
	free(ex2);
	gmm_model_free(m);
}

int
main(int argc, char **argv)
{
	int64_t		N;
	int			D;

	if (argc < 3)
	{
		fprintf(stderr, "usage: %s DATA.fvecs K [NMAX]\n", argv[0]);
		return 2;
	}
	float	   *X = load_fvecs(argv[1], &N, &D, argc > 3 ? atoll(argv[3]) : 0);
	int			K = atoi(argv[2]);

	if (X == NULL)
	{
		fprintf(stderr, "cannot read %s\n", argv[1]);
		return 1;
	}
	printf("N=%lld D=%d\n", (long long) N, D);
	for (int cv = 0; cv < 2; cv++)
	{
		gmm_fit_params p;
		gmm_model  *m = NULL;
		gmm_error	err;
		gmm_fit_report r;

		gmm_fit_params_default(&p, K);
		p.cov = cv ? GMM_COV_DIAG : GMM_COV_SPHERICAL;
		p.seed = 1;
		p.max_iter = 10;
		p.tol = -1;
		if (gmm_init_kmeanspp(X, N, D, &p, &m, &err) != GMM_OK)
		{
			printf("init: %s\n", err.msg);
			return 1;
		}
		run("k-means++ start", m, X, N, D);
		fflush(stdout);
		if (gmm_em(X, N, m, &p, &r, &err) != GMM_OK)
		{
			printf("em: %s\n", err.msg);
			return 1;
		}
		run("after 10 EM iterations", m, X, N, D);
		fflush(stdout);
		gmm_model_free(m);
	}
	free(X);
	return 0;
}
