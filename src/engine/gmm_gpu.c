/*
 * gmm_gpu.c - reaches the CUDA engine (cuda/, libflashgmm_cuda.so) through
 * dlopen, only when asked.  Placeholder until the CUDA engine lands: every
 * call reports that no GPU engine is available, so callers fall back to the
 * CPU (flashgmm.device = auto) or error (= gpu).
 */
#include <stdio.h>
#include <string.h>

#include "gmm.h"

static gmm_status
no_gpu(gmm_error *err)
{
	if (err)
	{
		err->code = GMM_EDEVICE;
		snprintf(err->msg, sizeof(err->msg), "this build of flashgmm has no GPU engine");
	}
	return GMM_EDEVICE;
}

gmm_status
gmm_gpu_load(const char *library_path, gmm_error *err)
{
	(void) library_path;
	return no_gpu(err);
}

gmm_status
gmm_gpu_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
			gmm_model **out, gmm_fit_report *report, gmm_error *err)
{
	return no_gpu(err);
}

gmm_status
gmm_gpu_em(const float *X, int64_t N, gmm_model *m, const gmm_fit_params *p,
		   gmm_fit_report *report, gmm_error *err)
{
	return no_gpu(err);
}

gmm_status
gmm_gpu_assign(const gmm_model *m, const float *X, int64_t N, int max_assign, float tau,
			   float temperature, int32_t *out_comp, float *out_resp, gmm_error *err)
{
	return no_gpu(err);
}

const char *
gmm_gpu_device_name(void)
{
	return "";
}
