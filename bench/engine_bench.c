/*
 * engine_bench - seconds per EM iteration of the CPU GMM engine, next to the
 * machine's sgemm rate and scikit-learn's GaussianMixture on the same data.
 *
 *   make -C test/engine bench [BENCH_ARGS="..."]
 *   test/engine/build/engine_bench [--iters N] [--sets a,b] [--cov spherical,diag]
 *       [--precision auto|float|double|all] [--no-sklearn] [--threads N] [--quick]
 *
 * Default shapes: sift-opencv-100k with K = 256 and fashion-mnist-784 with
 * K = 128, both covariance types.  For each shape: k-means++ init (timed),
 * then EM from that init with tol = -inf: seconds per iteration is
 *   (wall time of gmm_cpu_em with N iterations - wall time with 0 iterations) / N
 * each the best of two runs
 * (the 0-iteration call is the data pass plus the final scoring pass that
 * every call makes).  GFLOP/s uses the nominal count: 12 N K D per
 * diag iteration, 8 N K D per spherical one (the products actually run
 * 8 N K D and 4 N K D; the rest is the element-wise work).
 * sgemm: cblas_sgemm of 2048^3 (peak) and of the shape the E-step uses
 * (tile x K x W), in the same process and thread setting.
 * scikit-learn: test/engine/sklearn_ref.py "time" mode, float64, from the same
 * init, (fit with 1 + N iterations - fit with 1 iteration) / N, best of two.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "fvecs.h"
#include "gmm.h"
#include "gmm_cpu.h"

#ifndef TEST_DIR
#define TEST_DIR "."
#endif
#ifndef BUILD_DIR
#define BUILD_DIR "."
#endif

extern void openblas_set_num_threads(int);
extern int	openblas_get_num_threads(void);

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* GFLOP/s of C = A B^T, A m x k, B n x k (row major), best of a few runs */
static double
sgemm_rate(int m, int n, int k)
{
	float	   *a = malloc(sizeof(float) * (size_t) m * k);
	float	   *b = malloc(sizeof(float) * (size_t) n * k);
	float	   *c = malloc(sizeof(float) * (size_t) m * n);
	double		best = 0.0;
	int			reps = 1;

	for (size_t i = 0; i < (size_t) m * k; i++)
		a[i] = (float) ((i * 7) % 13) * 0.1f;
	for (size_t i = 0; i < (size_t) n * k; i++)
		b[i] = (float) ((i * 5) % 11) * 0.1f;
	/* aim for ~0.2 s per measurement */
	{
		double		t0 = now();

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
		double		t = now() - t0;

		reps = t > 0 ? (int) (0.2 / t) + 1 : 100;
		if (reps > 2000)
			reps = 2000;
	}
	for (int trial = 0; trial < 3; trial++)
	{
		double		t0 = now(),
					t;

		for (int r = 0; r < reps; r++)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
		t = now() - t0;
		if (2.0 * m * n * k * reps / t / 1e9 > best)
			best = 2.0 * m * n * k * reps / t / 1e9;
	}
	free(a);
	free(b);
	free(c);
	return best;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
/*
 * The hand-written alternative to sgemm for the score step: squared
 * distances of T rows to K means computed directly, AVX2 + FMA, 4 rows per
 * pass over a mean (register blocking), 8 floats per lane group.
 */
__attribute__((target("avx2,fma"))) static void
hand_sqdist(const float *X, const float *M, int T, int K, int D, float *out)
{
	for (int i = 0; i + 4 <= T; i += 4)
	{
		const float *x0 = X + (size_t) i * D,
				   *x1 = x0 + D,
				   *x2 = x1 + D,
				   *x3 = x2 + D;

		for (int k = 0; k < K; k++)
		{
			const float *mu = M + (size_t) k * D;
			__m256		a0 = _mm256_setzero_ps(),
						a1 = _mm256_setzero_ps(),
						a2 = _mm256_setzero_ps(),
						a3 = _mm256_setzero_ps();
			float		r[4];

			for (int d = 0; d + 8 <= D; d += 8)
			{
				__m256		m = _mm256_loadu_ps(mu + d);
				__m256		t0 = _mm256_sub_ps(_mm256_loadu_ps(x0 + d), m);
				__m256		t1 = _mm256_sub_ps(_mm256_loadu_ps(x1 + d), m);
				__m256		t2 = _mm256_sub_ps(_mm256_loadu_ps(x2 + d), m);
				__m256		t3 = _mm256_sub_ps(_mm256_loadu_ps(x3 + d), m);

				a0 = _mm256_fmadd_ps(t0, t0, a0);
				a1 = _mm256_fmadd_ps(t1, t1, a1);
				a2 = _mm256_fmadd_ps(t2, t2, a2);
				a3 = _mm256_fmadd_ps(t3, t3, a3);
			}
			{
				__m256		v[4] = {a0, a1, a2, a3};

				for (int j = 0; j < 4; j++)
				{
					__m128		h = _mm_add_ps(_mm256_castps256_ps128(v[j]), _mm256_extractf128_ps(v[j], 1));

					h = _mm_add_ps(h, _mm_movehl_ps(h, h));
					h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
					r[j] = _mm_cvtss_f32(h);
				}
			}
			out[(size_t) i * K + k] = r[0];
			out[(size_t) (i + 1) * K + k] = r[1];
			out[(size_t) (i + 2) * K + k] = r[2];
			out[(size_t) (i + 3) * K + k] = r[3];
		}
	}
}

/* seconds for T x K squared distances (D a multiple of 8): sgemm, hand */
static void
score_step_compare(int T, int K, int D, double *t_blas, double *t_hand)
{
	float	   *X = malloc(sizeof(float) * (size_t) T * D);
	float	   *M = malloc(sizeof(float) * (size_t) K * D);
	float	   *out = malloc(sizeof(float) * (size_t) T * K);
	int			reps = 20;

	for (size_t i = 0; i < (size_t) T * D; i++)
		X[i] = (float) ((i * 7) % 13);
	for (size_t i = 0; i < (size_t) K * D; i++)
		M[i] = (float) ((i * 5) % 11);
	*t_blas = *t_hand = 1e30;
	for (int trial = 0; trial < 3; trial++)
	{
		double		t0 = now(),
					t;

		for (int r = 0; r < reps; r++)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, K, D, -2.0f, X, D, M, D, 0.0f, out, K);
		t = (now() - t0) / reps;
		if (t < *t_blas)
			*t_blas = t;
		t0 = now();
		for (int r = 0; r < reps; r++)
			hand_sqdist(X, M, T, K, D, out);
		t = (now() - t0) / reps;
		if (t < *t_hand)
			*t_hand = t;
	}
	free(X);
	free(M);
	free(out);
}
#define HAVE_HAND 1
#endif

static double
sklearn_seconds(const char *set, int64_t rows, const gmm_model *init, int iters, double reg, char *why, int whylen)
{
	char		datapath[1024],
				initpath[1024],
				outpath[1024],
				cmd[4096],
				key[64];
	const char *py = getenv("FLASHGMM_PYTHON");
	size_t		sz = gmm_model_serialized_size(init->K, init->D, init->cov);
	void	   *buf = malloc(sz);
	FILE	   *f;
	double		sec = NAN;
	int			rc;

	if (!py || !py[0])
		py = "/usr/bin/python3";
	fvecs_base_path(set, datapath, sizeof(datapath));
	snprintf(initpath, sizeof(initpath), "%s/bench-%s-%d-%d.init", BUILD_DIR, set, init->K, (int) init->cov);
	snprintf(outpath, sizeof(outpath), "%s/bench-%s-%d-%d.out", BUILD_DIR, set, init->K, (int) init->cov);
	gmm_model_serialize(init, buf);
	f = fopen(initpath, "wb");
	if (!f)
	{
		snprintf(why, (size_t) whylen, "cannot write %s", initpath);
		free(buf);
		return NAN;
	}
	fwrite(buf, 1, sz, f);
	fclose(f);
	free(buf);
	remove(outpath);
	snprintf(cmd, sizeof(cmd), "%s %s/sklearn_ref.py time '%s' %lld '%s' %d %.17g '%s'",
			 py, TEST_DIR, datapath, (long long) rows, initpath, iters, reg, outpath);
	rc = system(cmd);
	if (rc != 0)
	{
		snprintf(why, (size_t) whylen, "sklearn_ref.py failed (status %d)", rc);
		return NAN;
	}
	f = fopen(outpath, "r");
	if (!f)
	{
		snprintf(why, (size_t) whylen, "no result from sklearn_ref.py");
		return NAN;
	}
	while (fscanf(f, "%63s", key) == 1)
	{
		if (strcmp(key, "seconds_per_iter") == 0 && fscanf(f, "%lf", &sec) == 1)
			break;
		{
			int			c;

			while ((c = fgetc(f)) != EOF && c != '\n')
				;
		}
	}
	fclose(f);
	return sec;
}

static int
has(const char *list, const char *item)
{
	const char *p = list;
	size_t		n = strlen(item);

	while ((p = strstr(p, item)) != NULL)
	{
		if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
			return 1;
		p += n;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const char *sets = "sift-opencv-100k,fashion-mnist-784";
	const char *covs = "spherical,diag";
	const char *precs = "auto";
	int			iters = 5,
				sk = 1,
				threads = 0,
				sk_iters = 3;
	double		peak;
	char		load[256] = "";

	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
			iters = atoi(argv[++i]);
		else if (strcmp(argv[i], "--sets") == 0 && i + 1 < argc)
			sets = argv[++i];
		else if (strcmp(argv[i], "--cov") == 0 && i + 1 < argc)
			covs = argv[++i];
		else if (strcmp(argv[i], "--precision") == 0 && i + 1 < argc)
			precs = argv[++i];
		else if (strcmp(argv[i], "--no-sklearn") == 0)
			sk = 0;
		else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (strcmp(argv[i], "--quick") == 0)
		{
			sets = "sift-10k";
			iters = 2;
			sk_iters = 1;
		}
		else
		{
			fprintf(stderr, "usage: %s [--iters N] [--sets a,b] [--cov spherical,diag] "
					"[--precision auto|float|double|all] [--no-sklearn] [--threads N] [--quick]\n", argv[0]);
			return 2;
		}
	}
	if (strcmp(precs, "all") == 0)
		precs = "auto,float,double";
	if (threads > 0)
		openblas_set_num_threads(threads);
	{
		FILE	   *f = fopen("/proc/loadavg", "r");

		if (f)
		{
			if (!fgets(load, sizeof(load), f))
				load[0] = '\0';
			fclose(f);
			load[strcspn(load, "\n")] = '\0';
		}
	}
	peak = sgemm_rate(2048, 2048, 2048);
	printf("# engine_bench: %ld online CPUs, OpenBLAS threads %d, load average at start: %s\n",
		   sysconf(_SC_NPROCESSORS_ONLN), openblas_get_num_threads(), load);
	printf("# sgemm 2048^3: %.1f GFLOP/s\n", peak);
#ifdef HAVE_HAND
	if (__builtin_cpu_supports("avx2"))
	{
		int			shapes[3][2] = {{256, 128}, {128, 784}, {1024, 128}};

		for (int i = 0; i < 3; i++)
		{
			double		tb,
						th;
			int			K = shapes[i][0],
						D = shapes[i][1];

			score_step_compare(512, K, D, &tb, &th);
			printf("# score step, 512 rows x K = %d x D = %d: OpenBLAS sgemm %.3f ms (%.1f GFLOP/s), "
				   "hand-written AVX2 direct distances %.3f ms (%.1f GFLOP/s of 2TKD) -> %s\n",
				   K, D, tb * 1e3, 2.0 * 512 * K * D / tb / 1e9, th * 1e3, 2.0 * 512 * K * D / th / 1e9,
				   tb < th ? "sgemm" : "hand-written");
		}
	}
#endif
	printf("# GFLOP/s counts 12 N K D per diag iteration, 8 N K D per spherical one (nominal)\n");
	printf("| data | N | K | D | cov | precision | init s | s/iter | GFLOP/s | sgemm tile GFLOP/s | sgemm peak | sklearn s/iter | speedup | E passes f64 / mixed / f32 |\n");
	printf("|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");

	for (const char *s = sets; *s;)
	{
		char		set[256];
		size_t		len = strcspn(s, ",");
		char		path[1024],
					msg[1200];
		float	   *X;
		int64_t		N;
		int			D;

		snprintf(set, sizeof(set), "%.*s", (int) len, s);
		s += len + (s[len] == ',');
		fvecs_base_path(set, path, sizeof(path));
		X = fvecs_read(path, 0, &N, &D, msg, sizeof(msg));
		if (!X)
		{
			printf("# %s: %s\n", set, msg);
			continue;
		}
		for (int c = 0; c < 2; c++)
		{
			int			K = strcmp(set, "fashion-mnist-784") == 0 ? 128 : strcmp(set, "sift-opencv-100k") == 0 ? 256 : 64;
			gmm_fit_params p;
			gmm_model  *init = NULL;
			gmm_error	err;
			double		t0,
						tinit,
						skt = NAN;
			char		why[2048] = "";

			if (!has(covs, c == 0 ? "spherical" : "diag"))
				continue;
			gmm_fit_params_default(&p, K);
			p.cov = (gmm_cov_type) c;
			p.tol = -INFINITY;
			t0 = now();
			if (gmm_init_kmeanspp(X, N, D, &p, &init, &err) != GMM_OK)
			{
				printf("# %s: init failed: %s\n", set, err.msg);
				continue;
			}
			tinit = now() - t0;
			if (sk)
				skt = sklearn_seconds(set, 0, init, sk_iters, p.reg_covar, why, sizeof(why));
			for (int pr = 0; pr < 3; pr++)
			{
				const char *pname = pr == 0 ? "auto" : pr == 1 ? "float" : "double";
				gmm_cpu_options opt = {0};
				gmm_model  *m;
				gmm_fit_report rep;
				double		t_n,
							t_0,
							spi,
							nominal;
				int			W = c == 1 ? 2 * D : D;
				double		tile_rate;
				int			dpass;

				if (!has(precs, pname))
					continue;
				opt.precision = (gmm_cpu_precision) pr;
				/* 0 iterations: data pass + scoring pass; best of two runs
				 * of each (the machine is shared) */
				t_0 = t_n = INFINITY;
				for (int rep_i = 0; rep_i < 2; rep_i++)
				{
					double		t;

					m = gmm_model_clone(init, &err);
					p.max_iter = 0;
					t0 = now();
					gmm_cpu_em(X, N, m, &p, &opt, &rep, &err);
					t = now() - t0;
					if (t < t_0)
						t_0 = t;
					gmm_model_free(m);
					m = gmm_model_clone(init, &err);
					p.max_iter = iters;
					t0 = now();
					if (gmm_cpu_em(X, N, m, &p, &opt, &rep, &err) != GMM_OK)
					{
						printf("# %s: em failed: %s\n", set, err.msg);
						gmm_model_free(m);
						break;
					}
					t = now() - t0;
					if (t < t_n)
						t_n = t;
					gmm_model_free(m);
				}
				if (!isfinite(t_n))
					continue;
				dpass = opt.passes_double;
				spi = (t_n - t_0) / iters;
				nominal = (c == 1 ? 12.0 : 8.0) * N * K * D;
				tile_rate = sgemm_rate(256, K, W);
				printf("| %s | %lld | %d | %d | %s | %s | %.2f | %.3f | %.1f | %.1f | %.1f | ",
					   set, (long long) N, K, D, c == 1 ? "diag" : "spherical", pname, tinit, spi,
					   nominal / spi / 1e9, tile_rate, peak);
				if (isnan(skt))
					printf("%s | | ", sk ? why : "-");
				else
					printf("%.3f | %.1fx | ", skt, skt / spi);
				printf("%d / %d / %d (max cond %.1e) |\n", dpass, opt.passes_mixed, opt.passes_float, opt.max_cond);
				fflush(stdout);
			}
			gmm_model_free(init);
		}
		free(X);
	}
	{
		FILE	   *f = fopen("/proc/loadavg", "r");

		if (f)
		{
			if (!fgets(load, sizeof(load), f))
				load[0] = '\0';
			fclose(f);
			printf("# load average at end: %s", load);
		}
	}
	return 0;
}
