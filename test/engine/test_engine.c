/*
 * test_engine.c - tests of the CPU GMM engine (src/engine), standalone C.
 *
 * Prints one line per test: "PASS name", "FAIL name: reason" or
 * "SKIP name: reason", then "N passed, N failed"; exits non-zero on failure.
 *
 *   test_engine [substring]   run only the tests whose name contains it
 *
 * Data: fvecs sets under $FLASHGMM_DATA (default <repo>/../shared/data).
 * The scikit-learn comparison runs sklearn_ref.py with /usr/bin/python3
 * (override with $FLASHGMM_PYTHON) and reads its result file.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fvecs.h"
#include "gmm.h"
#include "gmm_cpu.h"
#include "ref_em.h"

#ifndef TEST_DIR
#define TEST_DIR "."
#endif
#ifndef BUILD_DIR
#define BUILD_DIR "."
#endif

static int	n_pass,
			n_fail,
			n_skip;
static char reason[4096];

#define FAILF(...) do { snprintf(reason, sizeof(reason), __VA_ARGS__); return 0; } while (0)
#define SKIPF(...) do { snprintf(reason, sizeof(reason), __VA_ARGS__); return -1; } while (0)
#define CHECK(cond, ...) do { if (!(cond)) FAILF(__VA_ARGS__); } while (0)
#define CHECK_OK(call) do { gmm_error e_; gmm_status s_ = (call); (void) e_; \
	if (s_ != GMM_OK) FAILF("%s returned %s", #call, gmm_status_name(s_)); } while (0)

/* ------------------------------------------------------------------------ */
/* data */

typedef struct dataset
{
	float	   *X;
	int64_t		N;
	int			D;
} dataset;

/* Load rows of a data set (0 = all); cached by name and rows. */
static int
load(const char *set, int64_t rows, dataset *ds)
{
	char		path[1024],
				msg[1200];

	fvecs_base_path(set, path, sizeof(path));
	ds->X = fvecs_read(path, rows, &ds->N, &ds->D, msg, sizeof(msg));
	if (ds->X == NULL)
	{
		snprintf(reason, sizeof(reason), "%s", msg);
		return 0;
	}
	return 1;
}

#define LOAD_OR_SKIP(set, rows, ds) do { if (!load(set, rows, ds)) return -1; } while (0)

/* ------------------------------------------------------------------------ */
/* comparison helpers */

static double
rel(double a, double b)
{
	return fabs(a - b) / (fabs(b) > 0 ? fabs(b) : 1.0);
}

/* max over components of max_d |a - b| / max_d |b| */
static double
means_rel(const gmm_model *m, const double *ref_mu)
{
	double		worst = 0.0;

	for (int k = 0; k < m->K; k++)
	{
		double		scale = 0.0,
					diff = 0.0;

		for (int d = 0; d < m->D; d++)
		{
			double		b = ref_mu[(size_t) k * m->D + d];

			if (fabs(b) > scale)
				scale = fabs(b);
			if (fabs(m->means[(size_t) k * m->D + d] - b) > diff)
				diff = fabs(m->means[(size_t) k * m->D + d] - b);
		}
		if (scale < 1e-12)
			scale = 1e-12;
		if (diff / scale > worst)
			worst = diff / scale;
	}
	return worst;
}

/* max over every variance of |a - b| / b (variances are positive) */
static double
vars_rel(const gmm_model *m, const double *ref_var)
{
	double		worst = 0.0;
	size_t		n = (size_t) m->K * gmm_var_len(m->cov, m->D);

	for (size_t j = 0; j < n; j++)
	{
		double		r = rel(m->vars[j], ref_var[j]);

		if (r > worst)
			worst = r;
	}
	return worst;
}

static int
model_finite(const gmm_model *m)
{
	double		ws = 0.0;

	for (int k = 0; k < m->K; k++)
	{
		if (!(m->weights[k] > 0.0f) || !isfinite(m->weights[k]))
			return 0;
		ws += m->weights[k];
		for (int j = 0; j < gmm_var_len(m->cov, m->D); j++)
			if (!(m->vars[(size_t) k * gmm_var_len(m->cov, m->D) + j] > 0.0f) ||
				!isfinite(m->vars[(size_t) k * gmm_var_len(m->cov, m->D) + j]))
				return 0;
		for (int d = 0; d < m->D; d++)
			if (!isfinite(m->means[(size_t) k * m->D + d]))
				return 0;
	}
	return fabs(ws - 1.0) < 1e-4;
}

static void
params(gmm_fit_params *p, int K, gmm_cov_type cov, int iters)
{
	gmm_fit_params_default(p, K);
	p->cov = cov;
	p->max_iter = iters;
	p->tol = -INFINITY;			/* exactly iters iterations */
}

static int	compare_with_reference2(const dataset *ds, int K, gmm_cov_type cov, int iters,
									double ll_tol, double mv_tol, gmm_cpu_precision prec,
									char *note, int notelen, int *mixed_passes);

/*
 * From the engine's k-means++ init, run `iters` EM iterations in the engine
 * and in the float64 reference; compare LL (ll_tol), means and variances
 * (mv_tol).  extra, when not NULL, is filled with a note.
 */
static int
compare_with_reference(const dataset *ds, int K, gmm_cov_type cov, int iters,
					   double ll_tol, double mv_tol, gmm_cpu_precision prec, char *note, int notelen)
{
	return compare_with_reference2(ds, K, cov, iters, ll_tol, mv_tol, prec, note, notelen, NULL);
}

static int
compare_with_reference2(const dataset *ds, int K, gmm_cov_type cov, int iters,
						double ll_tol, double mv_tol, gmm_cpu_precision prec, char *note, int notelen,
						int *mixed_passes)
{
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	gmm_cpu_options opt = {0};
	ref_model  *r;
	double		rll,
				lr,
				mr,
				vr;
	gmm_status	st;

	params(&p, K, cov, iters);
	st = gmm_init_kmeanspp(ds->X, ds->N, ds->D, &p, &m, &err);
	CHECK(st == GMM_OK, "init: %s", err.msg);
	r = ref_from_gmm(m);
	opt.precision = prec;
	st = gmm_cpu_em(ds->X, ds->N, m, &p, &opt, &rep, &err);
	if (st != GMM_OK)
	{
		gmm_model_free(m);
		ref_free(r);
		FAILF("em: %s", err.msg);
	}
	for (int i = 0; i < iters; i++)
	{
		if (isnan(ref_em_iter(r, ds->X, ds->N, p.reg_covar)))
		{
			gmm_model_free(m);
			ref_free(r);
			SKIPF("a component emptied in the reference (which does not re-seed)");
		}
	}
	rll = ref_score(r, ds->X, ds->N);
	lr = rel(rep.mean_loglik, rll);
	mr = means_rel(m, r->mu);
	vr = vars_rel(m, r->var);
	if (note)
		snprintf(note, (size_t) notelen, "LL %.10g vs %.10g (rel %.1e), means %.1e, vars %.1e, %d float64 / %d mixed / %d float32 passes",
				 rep.mean_loglik, rll, lr, mr, vr, opt.passes_double, opt.passes_mixed, opt.passes_float);
	if (mixed_passes)
		*mixed_passes = opt.passes_mixed;
	gmm_model_free(m);
	ref_free(r);
	CHECK(rep.iterations == iters, "ran %d iterations, expected %d", rep.iterations, iters);
	CHECK(rep.reseeded == 0, "re-seeded %d components", rep.reseeded);
	CHECK(lr <= ll_tol, "mean log-likelihood %.10g vs reference %.10g: rel %.2e > %.0e", rep.mean_loglik, rll, lr, ll_tol);
	CHECK(mr <= mv_tol, "means rel %.2e > %.0e", mr, mv_tol);
	CHECK(vr <= mv_tol, "variances rel %.2e > %.0e", vr, mv_tol);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* tests: float64 reference */

static char note[1024];

static int
t_ref(const char *set, int64_t rows, int K, gmm_cov_type cov, int iters, double ll_tol, double mv_tol)
{
	dataset		ds;
	int			rc;

	LOAD_OR_SKIP(set, rows, &ds);
	rc = compare_with_reference(&ds, K, cov, iters, ll_tol, mv_tol, GMM_CPU_PREC_AUTO, note, sizeof(note));
	free(ds.X);
	return rc;
}

static int t_ref_sift_spherical(void) { return t_ref("sift-10k", 0, 64, GMM_COV_SPHERICAL, 10, 1e-5, 1e-4); }
static int t_ref_sift_diag(void) { return t_ref("sift-10k", 0, 64, GMM_COV_DIAG, 10, 1e-5, 1e-4); }
static int t_ref_glove_spherical(void) { return t_ref("glove-twitter-25", 0, 64, GMM_COV_SPHERICAL, 10, 1e-5, 1e-4); }
static int t_ref_glove_diag(void) { return t_ref("glove-twitter-25", 0, 64, GMM_COV_DIAG, 10, 1e-5, 1e-4); }
/* high dimension with pixels that are zero inside a component: narrow variances */
static int t_ref_fashion_spherical(void) { return t_ref("fashion-mnist-784", 5000, 32, GMM_COV_SPHERICAL, 5, 1e-5, 1e-4); }
static int t_ref_fashion_diag(void) { return t_ref("fashion-mnist-784", 5000, 32, GMM_COV_DIAG, 5, 1e-5, 1e-4); }
static int t_d4096_spherical(void) { return t_ref("lex-cohere-4096", 0, 8, GMM_COV_SPHERICAL, 3, 1e-5, 1e-4); }
static int t_d4096_diag(void) { return t_ref("lex-cohere-4096", 0, 8, GMM_COV_DIAG, 3, 1e-5, 1e-4); }

/* both product precisions forced, on a well-conditioned problem */
static int
t_precision_paths(void)
{
	dataset		ds;
	int			rc;
	char		n1[256];

	LOAD_OR_SKIP("sift-10k", 3000, &ds);
	rc = compare_with_reference(&ds, 16, GMM_COV_SPHERICAL, 5, 1e-5, 1e-4, GMM_CPU_PREC_FLOAT, n1, sizeof(n1));
	if (rc == 1)
		rc = compare_with_reference(&ds, 16, GMM_COV_DIAG, 5, 1e-5, 1e-4, GMM_CPU_PREC_DOUBLE, note, sizeof(note));
	free(ds.X);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* tests: scikit-learn */

static const char *
python(void)
{
	const char *e = getenv("FLASHGMM_PYTHON");

	return e && e[0] ? e : "/usr/bin/python3";
}

static int
read_sklearn_result(const char *path, double *ll, int *n_iter)
{
	FILE	   *f = fopen(path, "r");
	char		key[64];
	int			got = 0;

	if (!f)
		return 0;
	while (fscanf(f, "%63s", key) == 1)
	{
		if (strcmp(key, "mean_loglik") == 0 && fscanf(f, "%lf", ll) == 1)
			got |= 1;
		else if (strcmp(key, "n_iter") == 0 && fscanf(f, "%d", n_iter) == 1)
			got |= 2;
		else
		{
			int			c;

			while ((c = fgetc(f)) != EOF && c != '\n')
				;
		}
	}
	fclose(f);
	return got == 3;
}

static int
t_sklearn(const char *set, int64_t rows, int K, gmm_cov_type cov, int iters)
{
	dataset		ds;
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	char		datapath[1024],
				initpath[1024],
				outpath[1024],
				cmd[4096];
	size_t		sz;
	void	   *buf;
	FILE	   *f;
	int			rc,
				n_iter = -1;
	double		sll = 0.0,
				lr;

	if (access(python(), X_OK) != 0)
		SKIPF("%s not found", python());
	LOAD_OR_SKIP(set, rows, &ds);
	fvecs_base_path(set, datapath, sizeof(datapath));
	params(&p, K, cov, iters);
	if (gmm_init_kmeanspp(ds.X, ds.N, ds.D, &p, &m, &err) != GMM_OK)
	{
		free(ds.X);
		FAILF("init: %s", err.msg);
	}
	snprintf(initpath, sizeof(initpath), "%s/sk-%s-%d-%d.init", BUILD_DIR, set, K, (int) cov);
	snprintf(outpath, sizeof(outpath), "%s/sk-%s-%d-%d.out", BUILD_DIR, set, K, (int) cov);
	sz = gmm_model_serialized_size(m->K, m->D, m->cov);
	buf = malloc(sz);
	gmm_model_serialize(m, buf);
	f = fopen(initpath, "wb");
	if (!f || fwrite(buf, 1, sz, f) != sz)
	{
		if (f)
			fclose(f);
		free(buf);
		free(ds.X);
		gmm_model_free(m);
		FAILF("cannot write %s", initpath);
	}
	fclose(f);
	free(buf);
	remove(outpath);
	snprintf(cmd, sizeof(cmd), "%s %s/sklearn_ref.py fit '%s' %lld '%s' %d %.17g '%s'",
			 python(), TEST_DIR, datapath, (long long) rows, initpath, iters, p.reg_covar, outpath);
	rc = system(cmd);
	if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
	{
		free(ds.X);
		gmm_model_free(m);
		if (rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 77)
			SKIPF("scikit-learn is not installed for %s", python());
		FAILF("%.3000s failed (status %d)", cmd, rc);
	}
	if (!read_sklearn_result(outpath, &sll, &n_iter))
	{
		free(ds.X);
		gmm_model_free(m);
		FAILF("cannot read %s", outpath);
	}
	if (gmm_em(ds.X, ds.N, m, &p, &rep, &err) != GMM_OK)
	{
		free(ds.X);
		gmm_model_free(m);
		FAILF("em: %s", err.msg);
	}
	free(ds.X);
	gmm_model_free(m);
	lr = rel(rep.mean_loglik, sll);
	snprintf(note, sizeof(note), "LL %.10g vs sklearn %.10g (rel %.1e)", rep.mean_loglik, sll, lr);
	CHECK(n_iter == iters, "sklearn ran %d iterations, expected %d", n_iter, iters);
	CHECK(lr <= 1e-4, "mean log-likelihood %.10g vs scikit-learn %.10g: rel %.2e > 1e-4", rep.mean_loglik, sll, lr);
	return 1;
}

static int t_sklearn_sift_spherical(void) { return t_sklearn("sift-10k", 0, 64, GMM_COV_SPHERICAL, 10); }
static int t_sklearn_sift_diag(void) { return t_sklearn("sift-10k", 0, 64, GMM_COV_DIAG, 10); }
static int t_sklearn_glove_spherical(void) { return t_sklearn("glove-twitter-25", 0, 64, GMM_COV_SPHERICAL, 10); }
static int t_sklearn_glove_diag(void) { return t_sklearn("glove-twitter-25", 0, 64, GMM_COV_DIAG, 10); }

/* ------------------------------------------------------------------------ */
/* tests: edge cases */

static int
t_n_equals_k(void)
{
	dataset		ds;

	LOAD_OR_SKIP("sift-10k", 32, &ds);
	for (int c = 0; c < 2; c++)
	{
		gmm_fit_params p;
		gmm_model  *m = NULL;
		gmm_fit_report rep;
		gmm_error	err;
		int			rc;

		params(&p, 32, (gmm_cov_type) c, 5);
		if (gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err) != GMM_OK)
		{
			free(ds.X);
			FAILF("fit (cov %d): %s", c, err.msg);
		}
		rc = model_finite(m) && isfinite(rep.mean_loglik);
		/* every row is its own component: each mean is a distinct row */
		for (int k = 0; k < 32 && rc; k++)
		{
			int			hit = 0;

			for (int64_t n = 0; n < ds.N; n++)
			{
				double		dd = 0;

				for (int d = 0; d < ds.D; d++)
					dd += fabs(m->means[(size_t) k * ds.D + d] - ds.X[n * ds.D + d]);
				if (dd < 1e-3)
					hit++;
			}
			rc = hit == 1;
		}
		gmm_model_free(m);
		if (!rc)
		{
			free(ds.X);
			FAILF("cov %d: model not finite or a mean is not a data row", c);
		}
		/* and the reference agrees from the same init */
		rc = compare_with_reference(&ds, 32, (gmm_cov_type) c, 3, 1e-5, 1e-4, GMM_CPU_PREC_AUTO, note, sizeof(note));
		if (rc != 1)
		{
			free(ds.X);
			return rc;
		}
	}
	free(ds.X);
	return 1;
}

static int
t_duplicates(void)
{
	dataset		src,
				ds;
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	int			rc;

	LOAD_OR_SKIP("sift-10k", 100, &src);
	/* 100 distinct rows, each 5 times */
	ds.N = 500;
	ds.D = src.D;
	ds.X = malloc(sizeof(float) * ds.N * ds.D);
	for (int64_t n = 0; n < ds.N; n++)
		memcpy(ds.X + n * ds.D, src.X + (n % 100) * src.D, sizeof(float) * src.D);
	rc = compare_with_reference(&ds, 20, GMM_COV_DIAG, 5, 1e-5, 1e-4, GMM_CPU_PREC_AUTO, note, sizeof(note));
	if (rc == 1)
		rc = compare_with_reference(&ds, 20, GMM_COV_SPHERICAL, 5, 1e-5, 1e-4, GMM_CPU_PREC_AUTO, NULL, 0);
	/* all rows identical, K = 4: must still give a usable model */
	for (int64_t n = 0; n < ds.N && rc == 1; n++)
		memcpy(ds.X + n * ds.D, src.X, sizeof(float) * src.D);
	for (int c = 0; c < 2 && rc == 1; c++)
	{
		params(&p, 4, (gmm_cov_type) c, 5);
		if (gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err) != GMM_OK)
		{
			snprintf(reason, sizeof(reason), "identical rows, cov %d: %s", c, err.msg);
			rc = 0;
		}
		else
		{
			if (!model_finite(m) || !isfinite(rep.mean_loglik))
			{
				snprintf(reason, sizeof(reason), "identical rows, cov %d: model or LL not finite", c);
				rc = 0;
			}
			gmm_model_free(m);
		}
	}
	free(src.X);
	free(ds.X);
	return rc;
}

static int
t_empty_component(void)
{
	dataset		ds;
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	double		ll0;
	int			ok;

	LOAD_OR_SKIP("sift-10k", 2000, &ds);
	for (int c = 0; c < 2; c++)
	{
		params(&p, 8, (gmm_cov_type) c, 5);
		if (gmm_init_kmeanspp(ds.X, ds.N, ds.D, &p, &m, &err) != GMM_OK)
		{
			free(ds.X);
			FAILF("init: %s", err.msg);
		}
		/* move component 3 far from every row: it gets no responsibility */
		for (int d = 0; d < ds.D; d++)
			m->means[3 * ds.D + d] += 1e5f;
		gmm_model_prepare(m, &err);
		gmm_score(m, ds.X, ds.N, &ll0, &err);
		if (gmm_em(ds.X, ds.N, m, &p, &rep, &err) != GMM_OK)
		{
			gmm_model_free(m);
			free(ds.X);
			FAILF("em: %s", err.msg);
		}
		ok = rep.reseeded >= 1 && model_finite(m) && rep.mean_loglik > ll0 &&
			m->weights[3] > 1e-4f && fabs(m->means[3 * ds.D]) < 1e3;
		snprintf(note, sizeof(note), "re-seeded %d, LL %.6g -> %.6g, weight[3] %.3g", rep.reseeded, ll0, rep.mean_loglik, m->weights[3]);
		gmm_model_free(m);
		if (!ok)
		{
			free(ds.X);
			FAILF("cov %d: %s", c, note);
		}
	}
	free(ds.X);
	return 1;
}

static int
t_constant_dimension(void)
{
	dataset		ds;
	int			rc;

	LOAD_OR_SKIP("sift-10k", 2000, &ds);
	for (int64_t n = 0; n < ds.N; n++)
		ds.X[n * ds.D + 5] = 7.0f;
	rc = compare_with_reference(&ds, 8, GMM_COV_DIAG, 5, 1e-5, 1e-4, GMM_CPU_PREC_AUTO, note, sizeof(note));
	if (rc == 1)
		rc = compare_with_reference(&ds, 8, GMM_COV_SPHERICAL, 5, 1e-5, 1e-4, GMM_CPU_PREC_AUTO, NULL, 0);
	free(ds.X);
	return rc;
}

/* xorshift normal samples for synthetic data */
static double
unif(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return ((*s >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double
normal(uint64_t *s)
{
	return sqrt(-2.0 * log(unif(s))) * cos(6.283185307179586 * unif(s));
}

/*
 * One component much narrower than the data (50 copies of one far point):
 * AUTO scores and sums that component in float64 (around its own mean)
 * beside float32 products for the rest (spherical); the result must still
 * match the reference.
 */
static int
t_narrow_component(void)
{
	dataset		src,
				ds;
	int			rc,
				mixed = 0;

	LOAD_OR_SKIP("sift-10k", 3000, &src);
	ds.D = src.D;
	ds.N = src.N + 50;
	ds.X = malloc(sizeof(float) * ds.N * ds.D);
	memcpy(ds.X, src.X, sizeof(float) * src.N * src.D);
	for (int64_t n = src.N; n < ds.N; n++)
		for (int d = 0; d < ds.D; d++)
			ds.X[n * ds.D + d] = src.X[d] + 400.0f;
	free(src.X);
	for (int c = 0; c < 2; c++)
	{
		rc = compare_with_reference2(&ds, 16, (gmm_cov_type) c, 5, 1e-5, 1e-4, GMM_CPU_PREC_AUTO,
									 note, sizeof(note), &mixed);
		if (rc != 1)
			break;
		if (c == 0 && mixed == 0)	/* diag: most SIFT components are narrow somewhere, all float64 */
		{
			snprintf(reason, sizeof(reason), "cov %d: no mixed-precision pass ran (%s)", c, note);
			rc = 0;
			break;
		}
	}
	/* gmm_score and gmm_assign on a fitted model with a narrow component
	 * (the stored-model path) against float64 */
	for (int c = 0; c < 2 && rc == 1; c++)
	{
		gmm_fit_params p;
		gmm_model  *m = NULL;
		gmm_fit_report rep;
		gmm_error	err;
		ref_model  *r;
		double		ll,
					rll;
		int32_t    *hard = malloc(sizeof(int32_t) * ds.N);
		double	   *sc = malloc(sizeof(double) * 16);
		int64_t		mism = 0;

		params(&p, 16, (gmm_cov_type) c, 5);
		if (gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err) != GMM_OK ||
			gmm_score(m, ds.X, ds.N, &ll, &err) != GMM_OK ||
			gmm_assign(m, ds.X, ds.N, 1, 0.0f, 1.0f, hard, NULL, &err) != GMM_OK)
		{
			snprintf(reason, sizeof(reason), "cov %d: %s", c, err.msg);
			rc = 0;
		}
		else
		{
			r = ref_from_gmm(m);
			rll = ref_score(r, ds.X, ds.N);
			for (int64_t n = 0; n < ds.N; n++)
			{
				int			best = 0;

				/* reference scores (log-sum-exp not needed for argmax) */
				for (int k = 0; k < 16; k++)
				{
					double		q = 0.0,
								lv = 0.0;

					for (int d = 0; d < ds.D; d++)
					{
						double		v = r->var[k * r->VL + (r->VL == 1 ? 0 : d)];
						double		t = ds.X[n * ds.D + d] - r->mu[k * ds.D + d];

						q += t * t / v;
						lv += log(v);
					}
					sc[k] = log(r->w[k]) - 0.5 * lv - 0.5 * q;
					if (sc[k] > sc[best])
						best = k;
				}
				if (hard[n] != best && fabs(sc[hard[n]] - sc[best]) > 1e-3)
					mism++;
			}
			ref_free(r);
			if (rel(ll, rll) > 1e-6 || mism > 0)
			{
				snprintf(reason, sizeof(reason), "cov %d: gmm_score %.10g vs float64 %.10g, %lld hard assignments differ",
						 c, ll, rll, (long long) mism);
				rc = 0;
			}
		}
		gmm_model_free(m);
		free(hard);
		free(sc);
	}
	free(ds.X);
	return rc;
}

static int
t_d1(void)
{
	dataset		ds;
	uint64_t	s = 12345;
	int			rc;

	ds.N = 3000;
	ds.D = 1;
	ds.X = malloc(sizeof(float) * ds.N);
	for (int64_t n = 0; n < ds.N; n++)
	{
		int			c = (int) (n % 3);

		ds.X[n] = (float) ((c == 0 ? -5.0 : c == 1 ? 0.0 : 7.0) + (c + 1) * 0.7 * normal(&s));
	}
	rc = compare_with_reference(&ds, 3, GMM_COV_DIAG, 10, 1e-5, 1e-4, GMM_CPU_PREC_AUTO, note, sizeof(note));
	if (rc == 1)
		rc = compare_with_reference(&ds, 3, GMM_COV_SPHERICAL, 10, 1e-5, 1e-4, GMM_CPU_PREC_AUTO, NULL, 0);
	free(ds.X);
	return rc;
}

static int
t_nonfinite_input(void)
{
	dataset		ds;
	gmm_fit_params p;
	gmm_model  *m = NULL,
			   *good = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	gmm_status	st;
	int32_t		comp[4];
	int32_t		order[4];
	double		ll;

	LOAD_OR_SKIP("sift-10k", 500, &ds);
	params(&p, 4, GMM_COV_SPHERICAL, 3);
	CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &good, &rep, &err) == GMM_OK, "fit on clean data: %s", err.msg);

	ds.X[17 * ds.D + 3] = NAN;
	st = gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err);
	CHECK(st == GMM_ENONFINITE && m == NULL, "fit with NaN returned %s", gmm_status_name(st));
	CHECK(strstr(err.msg, "row 17") != NULL && err.code == GMM_ENONFINITE, "message does not name the row: %s", err.msg);
	st = gmm_em(ds.X, ds.N, good, &p, &rep, &err);
	CHECK(st == GMM_ENONFINITE, "em with NaN returned %s", gmm_status_name(st));
	st = gmm_score(good, ds.X, ds.N, &ll, &err);
	CHECK(st == GMM_ENONFINITE, "score with NaN returned %s", gmm_status_name(st));
	st = gmm_assign(good, ds.X + 17 * ds.D, 1, 4, 0.25f, 1.0f, comp, NULL, &err);
	CHECK(st == GMM_ENONFINITE, "assign with NaN returned %s", gmm_status_name(st));
	st = gmm_rank(good, ds.X + 17 * ds.D, GMM_RANK_DISTANCE, 4, order, NULL, &err);
	CHECK(st == GMM_ENONFINITE, "rank with NaN returned %s", gmm_status_name(st));
	ds.X[17 * ds.D + 3] = INFINITY;
	st = gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err);
	CHECK(st == GMM_ENONFINITE, "fit with Inf returned %s", gmm_status_name(st));
	ds.X[17 * ds.D + 3] = -INFINITY;
	st = gmm_init_kmeanspp(ds.X, ds.N, ds.D, &p, &m, &err);
	CHECK(st == GMM_ENONFINITE, "init with -Inf returned %s", gmm_status_name(st));
	gmm_model_free(good);
	free(ds.X);
	return 1;
}

static int
t_bad_arguments(void)
{
	float		X[40];
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	int32_t		comp[8];
	int32_t		order[8];
	unsigned char junk[64] = {0};

	for (int i = 0; i < 40; i++)
		X[i] = (float) (i % 7);
	gmm_fit_params_default(&p, 11);
	CHECK(gmm_fit(X, 10, 4, &p, &m, &rep, &err) == GMM_EINVAL && m == NULL, "K > N accepted");
	CHECK(strlen(err.msg) > 0, "no message for K > N");
	gmm_fit_params_default(&p, 0);
	CHECK(gmm_fit(X, 10, 4, &p, &m, &rep, &err) == GMM_EINVAL, "K = 0 accepted");
	gmm_fit_params_default(&p, 2);
	CHECK(gmm_fit(X, 10, 0, &p, &m, &rep, &err) == GMM_EINVAL, "D = 0 accepted");
	CHECK(gmm_fit(X, 0, 4, &p, &m, &rep, &err) == GMM_EINVAL, "N = 0 accepted");
	CHECK(gmm_fit(NULL, 10, 4, &p, &m, &rep, &err) == GMM_EINVAL, "X = NULL accepted");
	CHECK(gmm_fit(X, 10, 4, &p, NULL, &rep, NULL) == GMM_EINVAL, "out = NULL accepted");
	p.max_iter = -1;
	CHECK(gmm_fit(X, 10, 4, &p, &m, &rep, &err) == GMM_EINVAL, "max_iter = -1 accepted");
	gmm_fit_params_default(&p, 2);
	p.reg_covar = -1.0;
	CHECK(gmm_fit(X, 10, 4, &p, &m, &rep, &err) == GMM_EINVAL, "reg_covar < 0 accepted");
	gmm_fit_params_default(&p, 2);
	p.cov = (gmm_cov_type) 7;
	CHECK(gmm_fit(X, 10, 4, &p, &m, &rep, &err) == GMM_EINVAL, "cov = 7 accepted");
	CHECK(gmm_model_alloc(0, 4, GMM_COV_DIAG, &err) == NULL && err.code == GMM_EINVAL, "alloc K = 0");

	gmm_fit_params_default(&p, 2);
	CHECK(gmm_fit(X, 10, 4, &p, &m, &rep, NULL) == GMM_OK, "fit with err = NULL failed");
	CHECK(gmm_assign(m, X, 10, 0, 0.5f, 1.0f, comp, NULL, &err) == GMM_EINVAL, "max_assign = 0 accepted");
	CHECK(gmm_assign(m, X, 10, 1, 0.5f, 0.0f, comp, NULL, &err) == GMM_EINVAL, "temperature 0 accepted");
	CHECK(gmm_assign(m, X, 10, 1, 0.5f, NAN, comp, NULL, &err) == GMM_EINVAL, "temperature NaN accepted");
	CHECK(gmm_rank(m, X, GMM_RANK_DISTANCE, 3, order, NULL, &err) == GMM_EINVAL, "rank n > K accepted");
	CHECK(gmm_rank(m, X, GMM_RANK_DISTANCE, 0, order, NULL, &err) == GMM_EINVAL, "rank n = 0 accepted");
	CHECK(gmm_model_deserialize(junk, sizeof(junk), &err) == NULL && err.code == GMM_EINVAL, "junk deserialized");
	CHECK(gmm_model_deserialize(junk, 3, &err) == NULL, "3 bytes deserialized");
	m->vars[0] = 0.0f;
	CHECK(gmm_model_prepare(m, &err) == GMM_EINVAL, "zero variance prepared");
	CHECK(gmm_assign(m, X, 10, 1, 0.5f, 1.0f, comp, NULL, &err) == GMM_EINVAL, "assign with zero variance");
	m->vars[0] = 1.0f;
	m->weights[1] = -1.0f;
	CHECK(gmm_model_prepare(m, &err) == GMM_EINVAL, "negative weight prepared");
	gmm_model_free(m);
	gmm_model_free(NULL);
	CHECK(strcmp(gmm_status_name(GMM_ENONFINITE), "non-finite input") == 0, "status name");
	return 1;
}

static int
t_deterministic(void)
{
	dataset		ds;
	gmm_fit_params p;
	gmm_model  *a = NULL,
			   *b = NULL,
			   *c = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	size_t		sz;
	unsigned char *ba,
			   *bb,
			   *bc;
	int			same_ab,
				same_ac;

	LOAD_OR_SKIP("sift-10k", 3000, &ds);
	params(&p, 16, GMM_COV_SPHERICAL, 5);
	p.seed = 7;
	CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &a, &rep, &err) == GMM_OK, "%s", err.msg);
	CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &b, &rep, &err) == GMM_OK, "%s", err.msg);
	p.seed = 8;
	CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &c, &rep, &err) == GMM_OK, "%s", err.msg);
	sz = gmm_model_serialized_size(16, ds.D, GMM_COV_SPHERICAL);
	ba = malloc(sz);
	bb = malloc(sz);
	bc = malloc(sz);
	gmm_model_serialize(a, ba);
	gmm_model_serialize(b, bb);
	gmm_model_serialize(c, bc);
	same_ab = memcmp(ba, bb, sz) == 0;
	same_ac = memcmp(ba, bc, sz) == 0;
	free(ba);
	free(bb);
	free(bc);
	gmm_model_free(a);
	gmm_model_free(b);
	gmm_model_free(c);
	free(ds.X);
	CHECK(same_ab, "same seed gave different models");
	CHECK(!same_ac, "different seeds gave the same model");
	return 1;
}

static int
t_serialize_roundtrip(void)
{
	dataset		ds;

	LOAD_OR_SKIP("glove-twitter-25", 2000, &ds);
	for (int c = 0; c < 2; c++)
	{
		gmm_fit_params p;
		gmm_model  *m = NULL,
				   *r,
				   *cl;
		gmm_fit_report rep;
		gmm_error	err;
		size_t		sz;
		unsigned char *buf;
		int			ok;
		double		l1,
					l2;

		params(&p, 10, (gmm_cov_type) c, 3);
		CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err) == GMM_OK, "%s", err.msg);
		sz = gmm_model_serialized_size(m->K, m->D, m->cov);
		CHECK(sz == 16 + 4 * (size_t) (10 + 10 * ds.D + 10 * gmm_var_len(m->cov, ds.D)), "size %zu", sz);
		buf = malloc(sz);
		gmm_model_serialize(m, buf);
		r = gmm_model_deserialize(buf, sz, &err);
		CHECK(r != NULL, "deserialize: %s", err.msg);
		CHECK(gmm_model_deserialize(buf, sz - 1, &err) == NULL && err.code == GMM_EINVAL, "short buffer accepted");
		buf[0] ^= 0xff;
		CHECK(gmm_model_deserialize(buf, sz, &err) == NULL && err.code == GMM_EINVAL, "bad magic accepted");
		free(buf);
		cl = gmm_model_clone(m, &err);
		ok = r->K == m->K && r->D == m->D && r->cov == m->cov &&
			memcmp(r->weights, m->weights, 4 * m->K) == 0 &&
			memcmp(r->means, m->means, 4 * (size_t) m->K * m->D) == 0 &&
			memcmp(r->vars, m->vars, 4 * (size_t) m->K * gmm_var_len(m->cov, m->D)) == 0 &&
			memcmp(r->log_norm, m->log_norm, 4 * m->K) == 0 &&
			memcmp(r->prec, m->prec, 4 * (size_t) m->K * gmm_var_len(m->cov, m->D)) == 0 &&
			memcmp(cl->means, m->means, 4 * (size_t) m->K * m->D) == 0 &&
			memcmp(cl->log_norm, m->log_norm, 4 * m->K) == 0;
		gmm_score(m, ds.X, ds.N, &l1, &err);
		gmm_score(r, ds.X, ds.N, &l2, &err);
		ok = ok && l1 == l2 && rel(l1, rep.mean_loglik) < 1e-6;
		gmm_model_free(m);
		gmm_model_free(r);
		gmm_model_free(cl);
		if (!ok)
		{
			free(ds.X);
			FAILF("cov %d: round trip changed the model or its score (%.10g vs %.10g)", c, l1, l2);
		}
	}
	free(ds.X);
	return 1;
}

static int
t_assign(void)
{
	dataset		ds;
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	ref_model  *r;
	int			M = 4,
				K = 32;
	int32_t    *comp,
			   *hard;
	float	   *resp,
			   *hresp;
	double	   *s;
	int64_t		mism = 0,
				copies1 = 0,
				copies10 = 0;
	double		worst = 0.0;

	LOAD_OR_SKIP("glove-twitter-25", 3000, &ds);
	params(&p, K, GMM_COV_SPHERICAL, 5);
	CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err) == GMM_OK, "%s", err.msg);
	r = ref_from_gmm(m);
	comp = malloc(sizeof(int32_t) * ds.N * M);
	resp = malloc(sizeof(float) * ds.N * M);
	hard = malloc(sizeof(int32_t) * ds.N);
	hresp = malloc(sizeof(float) * ds.N);
	s = malloc(sizeof(double) * K);
	CHECK(gmm_assign(m, ds.X, ds.N, M, 1.0f / K, 1.0f, comp, resp, &err) == GMM_OK, "%s", err.msg);
	CHECK(gmm_assign(m, ds.X, ds.N, 1, 1.0f / K, 1.0f, hard, hresp, &err) == GMM_OK, "%s", err.msg);
	for (int64_t n = 0; n < ds.N; n++)
	{
		double		lz;
		int			best = 0;
		double		rsum = 0.0;

		/* reference posterior (float64) */
		{
			double		mx = -INFINITY,
						sum = 0.0;

			for (int k = 0; k < K; k++)
			{
				double		q = 0.0;

				for (int d = 0; d < ds.D; d++)
				{
					double		t = ds.X[n * ds.D + d] - r->mu[k * ds.D + d];

					q += t * t;
				}
				s[k] = log(r->w[k]) - 0.5 * ds.D * (1.8378770664093453 + log(r->var[k])) - 0.5 * q / r->var[k];
				if (s[k] > mx)
					mx = s[k];
			}
			for (int k = 0; k < K; k++)
				sum += exp(s[k] - mx);
			lz = mx + log(sum);
		}
		for (int k = 1; k < K; k++)
			if (s[k] > s[best])
				best = k;
		if (hard[n] != best && fabs(s[hard[n]] - s[best]) > 1e-4)
			mism++;
		if (comp[n * M] != hard[n] || resp[n * M] != hresp[n])
			mism++;
		for (int j = 0; j < M; j++)
		{
			int			k = comp[n * M + j];

			if (k < 0)
			{
				if (resp[n * M + j] != 0.0f)
					FAILF("row %lld: padded slot with resp %g", (long long) n, resp[n * M + j]);
				for (int j2 = j; j2 < M; j2++)
					if (comp[n * M + j2] != -1)
						FAILF("row %lld: a component after padding", (long long) n);
				break;
			}
			copies1++;
			if (j > 0 && !(resp[n * M + j] > 1.0f / K))
				FAILF("row %lld: slot %d has resp %g <= tau", (long long) n, j, resp[n * M + j]);
			if (j > 0 && resp[n * M + j] > resp[n * M + j - 1])
				FAILF("row %lld: responsibilities not descending", (long long) n);
			if (fabs(resp[n * M + j] - exp(s[k] - lz)) > worst)
				worst = fabs(resp[n * M + j] - exp(s[k] - lz));
			rsum += resp[n * M + j];
		}
		if (rsum > 1.0 + 1e-5)
			FAILF("row %lld: responsibilities sum to %g", (long long) n, rsum);
	}
	CHECK(mism == 0, "%lld rows disagree with the float64 posterior's best component", (long long) mism);
	CHECK(worst < 1e-4, "responsibility differs from float64 by %.2e", worst);
	/* tempering spreads rows over more lists */
	CHECK(gmm_assign(m, ds.X, ds.N, M, 1.0f / K, 10.0f, comp, resp, &err) == GMM_OK, "%s", err.msg);
	for (int64_t j = 0; j < ds.N * M; j++)
		copies10 += comp[j] >= 0;
	snprintf(note, sizeof(note), "copies per row %.3f at T = 1, %.3f at T = 10; max |r - r64| %.1e",
			 (double) copies1 / ds.N, (double) copies10 / ds.N, worst);
	CHECK(copies10 > copies1, "temperature 10 gave no more copies (%lld vs %lld)", (long long) copies10, (long long) copies1);
	free(comp);
	free(resp);
	free(hard);
	free(hresp);
	free(s);
	ref_free(r);
	gmm_model_free(m);
	free(ds.X);
	return 1;
}

static int
t_rank(void)
{
	dataset		ds;

	LOAD_OR_SKIP("sift-10k", 3000, &ds);
	for (int c = 0; c < 2; c++)
	{
		gmm_fit_params p;
		gmm_model  *m = NULL;
		gmm_fit_report rep;
		gmm_error	err;
		int			K = 24;
		int32_t		order[24],
					part[5];
		float		key[24];

		params(&p, K, (gmm_cov_type) c, 3);
		CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err) == GMM_OK, "%s", err.msg);
		for (int qi = 0; qi < 20; qi++)
		{
			const float *q = ds.X + (int64_t) (qi * 97) * ds.D;

			for (int mode = 0; mode < 2; mode++)
			{
				double		keys[24];

				CHECK(gmm_rank(m, q, (gmm_rank_mode) mode, K, order, key, &err) == GMM_OK, "%s", err.msg);
				CHECK(gmm_rank(m, q, (gmm_rank_mode) mode, 5, part, NULL, &err) == GMM_OK, "%s", err.msg);
				CHECK(memcmp(part, order, sizeof(part)) == 0, "best 5 is not the prefix of the full order");
				for (int k = 0; k < K; k++)
				{
					double		e = 0.0,
								lv = 0.0;
					int			VL = gmm_var_len(m->cov, ds.D);

					for (int d = 0; d < ds.D; d++)
					{
						double		t = (double) q[d] - m->means[k * ds.D + d];
						double		v = m->vars[k * VL + (VL == 1 ? 0 : d)];

						e += mode == 0 ? t * t : t * t / v;
						lv += log(v);
					}
					keys[k] = mode == 0 ? e : log(m->weights[k]) - 0.5 * (ds.D * 1.8378770664093453 + lv) - 0.5 * e;
				}
				for (int i = 0; i < K; i++)
				{
					double		tolk = 1e-5 * (fabs(keys[order[i]]) + 1.0);

					CHECK(fabs(key[i] - keys[order[i]]) <= tolk, "mode %d: key %g vs %g", mode, key[i], keys[order[i]]);
					if (i > 0)
					{
						if (mode == 0)
							CHECK(keys[order[i]] >= keys[order[i - 1]] - tolk, "distance order wrong at %d", i);
						else
							CHECK(keys[order[i]] <= keys[order[i - 1]] + tolk, "posterior order wrong at %d", i);
					}
				}
				/* no component twice */
				for (int i = 0; i < K; i++)
					for (int j = i + 1; j < K; j++)
						CHECK(order[i] != order[j], "component %d listed twice", order[i]);
			}
		}
		gmm_model_free(m);
	}
	free(ds.X);
	return 1;
}

static int
t_convergence(void)
{
	dataset		ds;
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	double		prev = -INFINITY;

	LOAD_OR_SKIP("glove-twitter-25", 3000, &ds);
	/* stops on tol */
	gmm_fit_params_default(&p, 16);
	p.max_iter = 500;
	p.tol = 1e-3;
	CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err) == GMM_OK, "%s", err.msg);
	CHECK(rep.converged == 1 && rep.iterations < 500, "did not converge (iterations %d)", rep.iterations);
	CHECK(rep.seconds_init >= 0 && rep.seconds_estep > 0 && rep.seconds_mstep >= 0, "phase times not filled");
	gmm_model_free(m);
	/* the log-likelihood never goes down, one iteration at a time */
	params(&p, 16, GMM_COV_DIAG, 0);
	CHECK(gmm_init_kmeanspp(ds.X, ds.N, ds.D, &p, &m, &err) == GMM_OK, "%s", err.msg);
	p.max_iter = 1;
	for (int it = 0; it < 15; it++)
	{
		CHECK(gmm_em(ds.X, ds.N, m, &p, &rep, &err) == GMM_OK, "%s", err.msg);
		CHECK(rep.mean_loglik >= prev - 1e-7 * fabs(prev), "LL went down at iteration %d: %.10g -> %.10g", it, prev, rep.mean_loglik);
		prev = rep.mean_loglik;
	}
	/* max_iter = 0 only scores */
	p.max_iter = 0;
	CHECK(gmm_em(ds.X, ds.N, m, &p, &rep, &err) == GMM_OK && rep.iterations == 0, "max_iter 0");
	CHECK(rel(rep.mean_loglik, prev) < 1e-6, "max_iter 0 LL %.10g vs %.10g", rep.mean_loglik, prev);
	gmm_model_free(m);
	free(ds.X);
	return 1;
}

static int
t_tiles(void)
{
	dataset		ds;

	LOAD_OR_SKIP("sift-10k", 3000, &ds);
	for (int c = 0; c < 2; c++)
	{
		gmm_fit_params p;
		gmm_model  *a = NULL,
				   *b = NULL;
		gmm_fit_report ra,
					rb;
		gmm_error	err;
		double		worst = 0;

		params(&p, 16, (gmm_cov_type) c, 5);
		CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &a, &ra, &err) == GMM_OK, "%s", err.msg);
		p.tile_rows = 7;
		CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &b, &rb, &err) == GMM_OK, "%s", err.msg);
		for (int j = 0; j < 16 * ds.D; j++)
			if (fabs(a->means[j] - b->means[j]) > worst)
				worst = fabs(a->means[j] - b->means[j]);
		gmm_model_free(a);
		gmm_model_free(b);
		CHECK(rel(ra.mean_loglik, rb.mean_loglik) < 1e-6, "cov %d: LL %.10g with default tiles, %.10g with 7-row tiles", c, ra.mean_loglik, rb.mean_loglik);
		CHECK(worst < 1e-3, "cov %d: means differ by %g between tile sizes", c, worst);
	}
	free(ds.X);
	return 1;
}

static int	cancel_calls;

static int
cancel_cb(void *arg, const char *phase, int64_t done, int64_t total)
{
	(void) arg;
	(void) done;
	(void) total;
	cancel_calls++;
	return strcmp(phase, "em") == 0;
}

static int
t_cancel(void)
{
	dataset		ds;
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	gmm_status	st;

	LOAD_OR_SKIP("glove-twitter-25", 2000, &ds);
	params(&p, 8, GMM_COV_SPHERICAL, 10);
	p.progress = cancel_cb;
	st = gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err);
	free(ds.X);
	CHECK(st == GMM_ECANCELED && m == NULL, "progress callback did not cancel (%s)", gmm_status_name(st));
	CHECK(cancel_calls >= 2, "callback called only %d times", cancel_calls);
	return 1;
}

static int
t_score_matches_fit(void)
{
	dataset		ds;

	LOAD_OR_SKIP("sift-10k", 0, &ds);
	for (int c = 0; c < 2; c++)
	{
		gmm_fit_params p;
		gmm_model  *m = NULL;
		gmm_fit_report rep;
		gmm_error	err;
		double		ll;

		params(&p, 32, (gmm_cov_type) c, 4);
		CHECK(gmm_fit(ds.X, ds.N, ds.D, &p, &m, &rep, &err) == GMM_OK, "%s", err.msg);
		CHECK(gmm_score(m, ds.X, ds.N, &ll, &err) == GMM_OK, "%s", err.msg);
		gmm_model_free(m);
		CHECK(rel(ll, rep.mean_loglik) < 1e-6, "cov %d: score %.10g vs fit %.10g", c, ll, rep.mean_loglik);
	}
	free(ds.X);
	return 1;
}


/* ------------------------------------------------------------------------ */
/* equal weights (gmm_fit_params.equal_weights) */

/* Weights stay 1/K; means, variances and LL match the float64 reference with fixed weights. */
static int
t_equal_weights_ref(void)
{
	dataset		ds;
	gmm_fit_params p;
	gmm_model  *m = NULL;
	gmm_fit_report rep;
	gmm_error	err;
	ref_model  *r;
	double		rll,
				lr,
				mr,
				vr;
	int			K = 32,
				iters = 5,
				wbad = 0;

	LOAD_OR_SKIP("sift-10k", 0, &ds);
	params(&p, K, GMM_COV_SPHERICAL, iters);
	p.equal_weights = 1;
	CHECK(gmm_init_kmeanspp(ds.X, ds.N, ds.D, &p, &m, &err) == GMM_OK, "init: %s", err.msg);
	for (int k = 0; k < K; k++)
		wbad += m->weights[k] != (float) (1.0 / K);
	CHECK(wbad == 0, "init: %d weights are not 1/K", wbad);
	r = ref_from_gmm(m);
	CHECK(gmm_em(ds.X, ds.N, m, &p, &rep, &err) == GMM_OK, "em: %s", err.msg);
	for (int i = 0; i < iters; i++)
		if (isnan(ref_em_iter_w(r, ds.X, ds.N, p.reg_covar, 1)))
		{
			gmm_model_free(m);
			ref_free(r);
			SKIPF("a component emptied in the reference (which does not re-seed)");
		}
	rll = ref_score(r, ds.X, ds.N);
	lr = rel(rep.mean_loglik, rll);
	mr = means_rel(m, r->mu);
	vr = vars_rel(m, r->var);
	for (int k = 0; k < K; k++)
		wbad += m->weights[k] != (float) (1.0 / K);
	snprintf(note, sizeof(note), "LL %.10g vs %.10g (rel %.1e), means %.1e, vars %.1e", rep.mean_loglik, rll, lr, mr, vr);
	gmm_model_free(m);
	ref_free(r);
	free(ds.X);
	CHECK(wbad == 0, "em: %d weights are not 1/K", wbad);
	CHECK(rep.iterations == iters, "ran %d iterations, expected %d", rep.iterations, iters);
	CHECK(lr <= 1e-6, "mean log-likelihood %.10g vs reference %.10g: rel %.2e", rep.mean_loglik, rll, lr);
	CHECK(mr <= 1e-4 && vr <= 1e-4, "means rel %.2e, variances rel %.2e > 1e-4", mr, vr);
	return 1;
}

/* uniform in (0, 1), never 0 */
static double
lcg01(uint64_t *st)
{
	*st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
	return ((*st >> 11) + 0.5) / 9007199254740992.0;
}

/*
 * Weakly clustered data (scripts/demo.sh --clusters 1000 at a smaller size:
 * many overlapping clusters, so the data is close to one Gaussian blob):
 * learned weights let a broad component near the centre take a large share
 * of the rows; equal weights keep the largest list a few times the mean.
 */
static int
t_equal_weights_balance(void)
{
	int			N = 8000,
				D = 64,
				C = 400,
				K = 64,
				M = 8;
	float	   *X = malloc(sizeof(float) * (size_t) N * D),
			   *cen = malloc(sizeof(float) * (size_t) C * D);
	int32_t    *comp = malloc(sizeof(int32_t) * (size_t) N * M);
	uint64_t	st = 12345;
	double		share[2],
				copies[2];

	CHECK(X && cen && comp, "out of memory");
	for (int i = 0; i < C * D; i++)
		cen[i] = (float) (lcg01(&st) * 10 - 5);
	for (int n = 0; n < N; n++)
		for (int d = 0; d < D; d++)
			X[(size_t) n * D + d] = cen[(size_t) (n % C) * D + d] +
				(float) (3 * sqrt(-2 * log(lcg01(&st))) * cos(2 * M_PI * lcg01(&st)));
	for (int eq = 0; eq < 2; eq++)
	{
		gmm_fit_params p;
		gmm_model  *m = NULL;
		gmm_fit_report rep;
		gmm_error	err;
		int64_t		cnt[64] = {0},
					tot = 0,
					mx = 0;

		params(&p, K, GMM_COV_SPHERICAL, 20);
		p.tol = 1e-4;
		p.equal_weights = eq;
		CHECK(gmm_fit(X, N, D, &p, &m, &rep, &err) == GMM_OK, "fit: %s", err.msg);
		CHECK(gmm_assign(m, X, N, M, 1.0f / K, 1.0f, comp, NULL, &err) == GMM_OK, "assign: %s", err.msg);
		gmm_model_free(m);
		for (int i = 0; i < N * M; i++)
			if (comp[i] >= 0)
			{
				cnt[comp[i]]++;
				tot++;
			}
		for (int k = 0; k < K; k++)
			mx = cnt[k] > mx ? cnt[k] : mx;
		share[eq] = (double) mx / N;
		copies[eq] = (double) tot / N;
	}
	free(X);
	free(cen);
	free(comp);
	snprintf(note, sizeof(note), "largest list %.1f%% of rows learned, %.1f%% equal; copies %.2f, %.2f",
			 100 * share[0], 100 * share[1], copies[0], copies[1]);
	CHECK(share[1] < 0.5 * share[0], "equal weights: largest list %.1f%% of rows vs %.1f%% learned",
		  100 * share[1], 100 * share[0]);
	CHECK(copies[1] <= copies[0], "equal weights gave more copies (%.2f vs %.2f)", copies[1], copies[0]);
	return 1;
}
/* ------------------------------------------------------------------------ */

typedef struct test
{
	const char *name;
	int			(*fn) (void);
} test;

static const test tests[] = {
	{"bad_arguments", t_bad_arguments},
	{"nonfinite_input", t_nonfinite_input},
	{"serialize_roundtrip", t_serialize_roundtrip},
	{"deterministic_seed", t_deterministic},
	{"convergence_and_monotone_ll", t_convergence},
	{"tile_size_invariance", t_tiles},
	{"cancel", t_cancel},
	{"score_matches_fit", t_score_matches_fit},
	{"assign_soft_hard_temperature", t_assign},
	{"rank_distance_and_posterior", t_rank},
	{"edge_n_equals_k", t_n_equals_k},
	{"edge_duplicate_points", t_duplicates},
	{"edge_empty_component_reseeded", t_empty_component},
	{"edge_constant_dimension", t_constant_dimension},
	{"edge_d1", t_d1},
	{"edge_narrow_component_mixed_precision", t_narrow_component},
	{"edge_d4096_spherical", t_d4096_spherical},
	{"edge_d4096_diag", t_d4096_diag},
	{"precision_paths_float_and_double", t_precision_paths},
	{"equal_weights_ref64_sift10k", t_equal_weights_ref},
	{"equal_weights_balance_weak_clusters", t_equal_weights_balance},
	{"ref64_sift10k_spherical", t_ref_sift_spherical},
	{"ref64_sift10k_diag", t_ref_sift_diag},
	{"ref64_glove25_spherical", t_ref_glove_spherical},
	{"ref64_glove25_diag", t_ref_glove_diag},
	{"ref64_fashion5k_spherical", t_ref_fashion_spherical},
	{"ref64_fashion5k_diag", t_ref_fashion_diag},
	{"sklearn_sift10k_spherical", t_sklearn_sift_spherical},
	{"sklearn_sift10k_diag", t_sklearn_sift_diag},
	{"sklearn_glove25_spherical", t_sklearn_glove_spherical},
	{"sklearn_glove25_diag", t_sklearn_glove_diag},
};

int
main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;
	int			verbose = getenv("FLASHGMM_TEST_VERBOSE") != NULL;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
	{
		int			rc;

		if (only && !strstr(tests[i].name, only))
			continue;
		reason[0] = '\0';
		note[0] = '\0';
		rc = tests[i].fn();
		if (rc == 1)
		{
			n_pass++;
			if (verbose && note[0])
				printf("PASS %s (%s)\n", tests[i].name, note);
			else
				printf("PASS %s\n", tests[i].name);
		}
		else if (rc < 0)
		{
			n_skip++;
			printf("SKIP %s: %s\n", tests[i].name, reason);
		}
		else
		{
			n_fail++;
			printf("FAIL %s: %s\n", tests[i].name, reason);
		}
	}
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail > 0 ? 1 : 0;
}
