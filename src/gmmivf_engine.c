/*
 * gmmivf_engine.c - which engine trains and assigns: flashgmm.device.
 *
 *   cpu   the CPU engine.
 *   gpu   the CUDA engine ($libdir/flashgmm_cuda.so, dlopened on first use in
 *         this backend, never in the postmaster); ERROR when it cannot be used.
 *   auto  the CUDA engine when it loads and runs, else the CPU engine with a
 *         NOTICE that says why.
 *
 * The library path is fixed (pkglib_path): no user can make the server
 * dlopen a file of their choosing.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "gmmivf.h"

static bool gpu_tried = false;
static gmm_status gpu_load_status = GMM_EDEVICE;
static gmm_error gpu_load_err;

static bool
gpu_available(const char **why)
{
	if (!gpu_tried)
	{
		char		path[MAXPGPATH];

		snprintf(path, sizeof(path), "%s/flashgmm_cuda%s", pkglib_path, DLSUFFIX);
		memset(&gpu_load_err, 0, sizeof(gpu_load_err));
		gpu_load_status = gmm_gpu_load(path, &gpu_load_err);
		gpu_tried = true;
	}
	if (gpu_load_status != GMM_OK)
	{
		*why = gpu_load_err.msg[0] ? gpu_load_err.msg : gmm_status_name(gpu_load_status);
		return false;
	}
	*why = NULL;
	return true;
}

static void
gpu_unavailable_error(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("flashgmm.device is \"gpu\" but the GPU engine is not available"),
			 errdetail("%s", why),
			 errhint("SET flashgmm.device = auto (or cpu) to train on the CPU.")));
}

/* True when flashgmm.device lets the GPU train and the CUDA engine loads. */
bool
gmmivf_engine_gpu_usable(void)
{
	const char *why;

	return gmmivf_device != GMMIVF_DEVICE_CPU && gpu_available(&why);
}

gmm_status
gmmivf_engine_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
				  gmm_model **out, gmm_fit_report *report, gmm_error *err, bool *used_gpu)
{
	const char *why = NULL;
	gmm_status	st;

	*used_gpu = false;
	if (gmmivf_device == GMMIVF_DEVICE_CPU)
		return gmm_fit(X, N, D, p, out, report, err);

	if (gpu_available(&why))
	{
		st = gmm_gpu_fit(X, N, D, p, out, report, err);
		if (st == GMM_OK)
		{
			*used_gpu = true;
			return st;
		}
		if (st != GMM_EDEVICE && st != GMM_ENOMEM)
			return st;
		why = err->msg[0] ? pstrdup(err->msg) : gmm_status_name(st);
	}
	if (gmmivf_device == GMMIVF_DEVICE_GPU)
		gpu_unavailable_error(why);
	ereport(NOTICE,
			(errmsg("gmmivf: training on the CPU"),
			 errdetail("GPU engine not used: %s", why)));
	memset(err, 0, sizeof(*err));
	return gmm_fit(X, N, D, p, out, report, err);
}

gmm_status
gmmivf_engine_assign(const gmm_model *m, const float *X, int64_t N,
					 int max_assign, float tau, float temperature,
					 int32_t *comp, float *resp, gmm_error *err, bool allow_gpu)
{
	if (allow_gpu)
	{
		gmm_status	st = gmm_gpu_assign(m, X, N, max_assign, tau, temperature, comp, resp, err);

		if (st != GMM_EDEVICE && st != GMM_ENOMEM)
			return st;
		if (gmmivf_device == GMMIVF_DEVICE_GPU)
			gpu_unavailable_error(err->msg);
		memset(err, 0, sizeof(*err));
	}
	return gmm_assign(m, X, N, max_assign, tau, temperature, comp, resp, err);
}

/* flashgmm_gpu_status(): 'available: <device>' or why the GPU engine is not used. */
PG_FUNCTION_INFO_V1(flashgmm_gpu_status);
Datum
flashgmm_gpu_status(PG_FUNCTION_ARGS)
{
	const char *why;

	if (gpu_available(&why))
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("available: %s", gmm_gpu_device_name())));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("unavailable: %s", why)));
}
