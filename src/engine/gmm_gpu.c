/*
 * gmm_gpu.c - reaches the CUDA engine (cuda/, flashgmm_cuda.so) through
 * dlopen, only when asked.  The extension never links libcudart: nothing
 * CUDA is loaded or initialised until gmm_gpu_load() runs, which the access
 * method calls lazily in the backend that builds an index (never in the
 * postmaster: CUDA does not survive fork).
 *
 * gmm_gpu_load() dlopens the library at the path the caller gives (the
 * access method passes $libdir/flashgmm_cuda.so: never a user-settable path),
 * checks its ABI version, and initialises CUDA (which reports a missing
 * device or a driver that is too old).  Failures are remembered, so a
 * backend that found no GPU does not retry on every call.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "gmm.h"
#include "../../cuda/flashgmm_cuda.h"

typedef int (*fn_abi_version) (void);
typedef void (*fn_abi_sizes) (size_t *, size_t *, size_t *);
typedef gmm_status (*fn_init) (gmm_error *);
typedef const char *(*fn_device_name) (void);
typedef gmm_status (*fn_set_precision) (int, gmm_error *);
typedef gmm_status (*fn_fit) (const float *, int64_t, int, const gmm_fit_params *, float *, float *, float *,
							  gmm_fit_report *, gmm_error *);
typedef gmm_status (*fn_em) (const float *, int64_t, int, int, int, const gmm_fit_params *, float *, float *,
							 float *, gmm_fit_report *, gmm_error *);
typedef gmm_status (*fn_score) (const float *, int64_t, int, int, int, const float *, const float *,
								const float *, double *, gmm_error *);
typedef gmm_status (*fn_assign) (const float *, int64_t, int, int, int, const float *, const float *,
								 const float *, int, float, float, int32_t *, float *, gmm_error *);
typedef gmm_status (*fn_last_stats) (gmm_gpu_stats *, gmm_error *);
typedef void (*fn_set_mem_budget) (int64_t);

static struct
{
	void	   *handle;
	int			state;			/* 0 not tried, 1 ready, -1 failed */
	gmm_error	why;			/* reason of the failure, when state = -1 */
	fn_device_name device_name;
	fn_set_precision set_precision;
	fn_fit		fit;
	fn_em		em;
	fn_score	score;
	fn_assign	assign;
	fn_last_stats last_stats;
	fn_set_mem_budget set_mem_budget;
}			gpu;

static gmm_status
set_err(gmm_error *err, gmm_status code, const char *msg)
{
	if (err)
	{
		err->code = code;
		snprintf(err->msg, sizeof(err->msg), "%s", msg);
	}
	return code;
}

static gmm_status
not_loaded(gmm_error *err)
{
	if (gpu.state < 0)
	{
		if (err)
			*err = gpu.why;
		return gpu.why.code;
	}
	return set_err(err, GMM_EDEVICE, "the GPU engine is not loaded (gmm_gpu_load was not called)");
}

#define LOOKUP(field, type, name) \
	do { \
		gpu.field = (type) dlsym(gpu.handle, name); \
		if (gpu.field == NULL) \
		{ \
			snprintf(gpu.why.msg, sizeof(gpu.why.msg), "%s has no symbol %s: not a flashgmm CUDA library of this version", library_path, name); \
			goto fail; \
		} \
	} while (0)

gmm_status
gmm_gpu_load(const char *library_path, gmm_error *err)
{
	fn_abi_version abi_version;
	fn_abi_sizes abi_sizes;
	fn_init		init;
	size_t		a,
				b,
				c;
	gmm_status	st;

	if (gpu.state > 0)
		return set_err(err, GMM_OK, "");
	if (gpu.state < 0)
		return not_loaded(err);

	gpu.why.code = GMM_EDEVICE;
	if (library_path == NULL || library_path[0] == '\0')
	{
		snprintf(gpu.why.msg, sizeof(gpu.why.msg), "no path to the CUDA library given");
		goto fail;
	}
	gpu.handle = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
	if (gpu.handle == NULL)
	{
		const char *e = dlerror();

		snprintf(gpu.why.msg, sizeof(gpu.why.msg), "could not load the CUDA library: %s",
				 e ? e : library_path);
		goto fail;
	}
	LOOKUP(device_name, fn_device_name, "fgc_device_name");
	abi_version = (fn_abi_version) dlsym(gpu.handle, "fgc_abi_version");
	abi_sizes = (fn_abi_sizes) dlsym(gpu.handle, "fgc_abi_sizes");
	init = (fn_init) dlsym(gpu.handle, "fgc_init");
	if (!abi_version || !abi_sizes || !init)
	{
		snprintf(gpu.why.msg, sizeof(gpu.why.msg), "%s is not a flashgmm CUDA library", library_path);
		goto fail;
	}
	abi_sizes(&a, &b, &c);
	if (abi_version() != FGC_ABI_VERSION || a != sizeof(gmm_fit_params) || b != sizeof(gmm_fit_report) ||
		c != sizeof(gmm_gpu_stats))
	{
		snprintf(gpu.why.msg, sizeof(gpu.why.msg),
				 "%s was built for another version of flashgmm (ABI %d, expected %d); reinstall both together",
				 library_path, abi_version(), FGC_ABI_VERSION);
		goto fail;
	}
	LOOKUP(set_precision, fn_set_precision, "fgc_set_precision");
	LOOKUP(fit, fn_fit, "fgc_fit");
	LOOKUP(em, fn_em, "fgc_em");
	LOOKUP(score, fn_score, "fgc_score");
	LOOKUP(assign, fn_assign, "fgc_assign");
	LOOKUP(last_stats, fn_last_stats, "fgc_last_stats");
	LOOKUP(set_mem_budget, fn_set_mem_budget, "fgc_set_mem_budget");

	/* CUDA starts here, in the calling process */
	st = init(&gpu.why);
	if (st != GMM_OK)
	{
		gpu.why.code = st;
		goto fail;
	}
	gpu.state = 1;
	return set_err(err, GMM_OK, "");

fail:
	if (gpu.why.code == GMM_OK)
		gpu.why.code = GMM_EDEVICE;
	/* keep the library mapped once CUDA may have run in it; unload otherwise */
	gpu.state = -1;
	return not_loaded(err);
}

static gmm_status
check_model(const gmm_model *m, gmm_error *err)
{
	if (m == NULL || m->weights == NULL || m->means == NULL || m->vars == NULL || m->K < 1 || m->D < 1)
		return set_err(err, GMM_EINVAL, "no model, or a model without parameters");
	return GMM_OK;
}

/* The CUDA engine's EM as it is (weights learned). */
static gmm_status
gpu_em_raw(const float *X, int64_t N, gmm_model *m, const gmm_fit_params *p,
		   gmm_fit_report *report, gmm_error *err)
{
	gmm_status	st;

	st = gpu.em(X, N, m->K, m->D, m->cov, p, m->weights, m->means, m->vars, report, err);
	if (st != GMM_OK)
		return st;
	return gmm_model_prepare(m, err);
}

gmm_status
gmm_gpu_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
			gmm_model **out, gmm_fit_report *report, gmm_error *err)
{
	gmm_model  *m;
	gmm_status	st;

	if (gpu.state <= 0)
		return not_loaded(err);
	if (out == NULL || p == NULL)
		return set_err(err, GMM_EINVAL, "no output model or no parameters");
	*out = NULL;
	if (p->K < 1 || D < 1)
		return set_err(err, GMM_EINVAL, "K and D must be >= 1");
	m = gmm_model_alloc(p->K, D, p->cov, err);
	if (m == NULL)
		return err ? err->code : GMM_ENOMEM;
	/* the CUDA engine keeps the weights at 1/K itself under p->equal_weights */
	st = gpu.fit(X, N, D, p, m->weights, m->means, m->vars, report, err);
	if (st == GMM_OK)
		st = gmm_model_prepare(m, err);
	if (st != GMM_OK)
	{
		gmm_model_free(m);
		return st;
	}
	*out = m;
	return GMM_OK;
}

gmm_status
gmm_gpu_em(const float *X, int64_t N, gmm_model *m, const gmm_fit_params *p,
		   gmm_fit_report *report, gmm_error *err)
{
	gmm_status	st;

	if (gpu.state <= 0)
		return not_loaded(err);
	if ((st = check_model(m, err)) != GMM_OK)
		return st;
	if (p != NULL && p->equal_weights)
	{
		/* as the CPU engine: the first E pass already uses weights 1/K */
		for (int k = 0; k < m->K; k++)
			m->weights[k] = (float) (1.0 / m->K);
	}
	return gpu_em_raw(X, N, m, p, report, err);
}

gmm_status
gmm_gpu_score(const gmm_model *m, const float *X, int64_t N, double *mean_loglik, gmm_error *err)
{
	gmm_status	st;

	if (gpu.state <= 0)
		return not_loaded(err);
	if ((st = check_model(m, err)) != GMM_OK)
		return st;
	return gpu.score(X, N, m->K, m->D, m->cov, m->weights, m->means, m->vars, mean_loglik, err);
}

gmm_status
gmm_gpu_assign(const gmm_model *m, const float *X, int64_t N, int max_assign, float tau,
			   float temperature, int32_t *out_comp, float *out_resp, gmm_error *err)
{
	gmm_status	st;

	if (gpu.state <= 0)
		return not_loaded(err);
	if ((st = check_model(m, err)) != GMM_OK)
		return st;
	return gpu.assign(X, N, m->K, m->D, m->cov, m->weights, m->means, m->vars, max_assign, tau,
					  temperature, out_comp, out_resp, err);
}

gmm_status
gmm_gpu_set_precision(gmm_gpu_precision prec, gmm_error *err)
{
	if (gpu.state <= 0)
		return not_loaded(err);
	return gpu.set_precision((int) prec, err);
}

gmm_status
gmm_gpu_last_stats(gmm_gpu_stats *out, gmm_error *err)
{
	if (gpu.state <= 0)
		return not_loaded(err);
	return gpu.last_stats(out, err);
}

void
gmm_gpu_set_mem_budget(int64_t bytes)
{
	if (gpu.state > 0)
		gpu.set_mem_budget(bytes);
}

const char *
gmm_gpu_device_name(void)
{
	return gpu.state > 0 ? gpu.device_name() : "";
}
