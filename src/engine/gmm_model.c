/*
 * gmm_model.c - the model struct: allocation, derived constants, clone,
 * serialisation, status names and fit defaults.  Pure C, no PostgreSQL.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gmm.h"
#include "gmm_internal.h"

#define GMM_LOG_2PI 1.8378770664093454835606594728112

/* "GMM1" little-endian: header is magic, K, D, cov (4 x uint32). */
#define GMM_SER_MAGIC 0x314d4d47u
#define GMM_SER_HEADER 16

void
gmm_set_error(gmm_error *err, gmm_status code, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL)
		return;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

gmm_status
gmm_fail(gmm_error *err, gmm_status code, const char *fmt,...)
{
	va_list		ap;

	if (err != NULL)
	{
		err->code = code;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

static void
clear_error(gmm_error *err)
{
	if (err)
	{
		err->code = GMM_OK;
		err->msg[0] = '\0';
	}
}

const char *
gmm_status_name(gmm_status s)
{
	switch (s)
	{
		case GMM_OK:
			return "ok";
		case GMM_EINVAL:
			return "invalid argument";
		case GMM_ENONFINITE:
			return "non-finite input";
		case GMM_ENOMEM:
			return "out of memory";
		case GMM_EDEVICE:
			return "device error";
		case GMM_ECANCELED:
			return "canceled";
		case GMM_EINTERNAL:
			return "internal error";
	}
	return "unknown status";
}

void
gmm_fit_params_default(gmm_fit_params *p, int K)
{
	memset(p, 0, sizeof(*p));
	p->K = K;
	p->cov = GMM_COV_SPHERICAL;
	p->max_iter = 20;
	p->tol = 1e-4;
	p->reg_covar = 1e-6;
	p->seed = 42;
	p->tile_rows = 0;
	p->deterministic = 0;
	p->equal_weights = 0;
	p->device_mem_budget = 0;
	p->progress = NULL;
	p->progress_arg = NULL;
}

gmm_model *
gmm_model_alloc(int K, int D, gmm_cov_type cov, gmm_error *err)
{
	gmm_model  *m;
	size_t		kd,
				vl;

	clear_error(err);
	if (K < 1 || D < 1)
	{
		gmm_set_error(err, GMM_EINVAL, "model needs K >= 1 and D >= 1 (got K = %d, D = %d)", K, D);
		return NULL;
	}
	if (cov != GMM_COV_SPHERICAL && cov != GMM_COV_DIAG)
	{
		gmm_set_error(err, GMM_EINVAL, "unknown covariance type %d", (int) cov);
		return NULL;
	}
	kd = (size_t) K * (size_t) D;
	if (kd / (size_t) K != (size_t) D || kd > ((size_t) 1 << 40))
	{
		gmm_set_error(err, GMM_EINVAL, "model of K = %d by D = %d is too large", K, D);
		return NULL;
	}
	vl = (size_t) K * (size_t) gmm_var_len(cov, D);

	m = calloc(1, sizeof(gmm_model));
	if (m == NULL)
		goto oom;
	m->K = K;
	m->D = D;
	m->cov = cov;
	m->weights = calloc((size_t) K, sizeof(float));
	m->means = calloc(kd, sizeof(float));
	m->vars = calloc(vl, sizeof(float));
	m->log_norm = calloc((size_t) K, sizeof(float));
	m->prec = calloc(vl, sizeof(float));
	m->mean_sqnorm = calloc((size_t) K, sizeof(float));
	if (!m->weights || !m->means || !m->vars || !m->log_norm || !m->prec || !m->mean_sqnorm)
		goto oom;
	return m;

oom:
	gmm_model_free(m);
	gmm_set_error(err, GMM_ENOMEM, "out of memory allocating a model of K = %d, D = %d", K, D);
	return NULL;
}

void
gmm_model_free(gmm_model *m)
{
	if (m == NULL)
		return;
	free(m->weights);
	free(m->means);
	free(m->vars);
	free(m->log_norm);
	free(m->prec);
	free(m->mean_sqnorm);
	free(m);
}

gmm_status
gmm_model_prepare(gmm_model *m, gmm_error *err)
{
	int			K,
				D,
				VL;

	clear_error(err);
	if (m == NULL || m->K < 1 || m->D < 1 || !m->weights || !m->means || !m->vars)
		return gmm_fail(err, GMM_EINVAL, "model is missing or empty");
	K = m->K;
	D = m->D;
	VL = gmm_var_len(m->cov, D);

	for (int k = 0; k < K; k++)
	{
		double		w = m->weights[k];
		double		slv = 0.0,
					msq = 0.0;
		const float *mu = m->means + (size_t) k * D;
		const float *v = m->vars + (size_t) k * VL;
		float	   *pr = m->prec + (size_t) k * VL;

		if (!(w > 0.0) || !isfinite(w))
			return gmm_fail(err, GMM_EINVAL, "component %d has weight %g; weights must be positive and finite", k, w);
		for (int j = 0; j < VL; j++)
		{
			if (!(v[j] > 0.0f) || !isfinite(v[j]))
				return gmm_fail(err, GMM_EINVAL, "component %d has variance %g; variances must be positive and finite", k, (double) v[j]);
			pr[j] = (float) (1.0 / (double) v[j]);
			slv += log((double) v[j]);
		}
		if (m->cov == GMM_COV_SPHERICAL)
			slv *= D;
		for (int d = 0; d < D; d++)
		{
			if (!isfinite(mu[d]))
				return gmm_fail(err, GMM_EINVAL, "component %d has a non-finite mean", k);
			msq += (double) mu[d] * mu[d];
		}
		m->log_norm[k] = (float) (log(w) - 0.5 * (D * GMM_LOG_2PI + slv));
		m->mean_sqnorm[k] = (float) msq;
	}
	return GMM_OK;
}

gmm_model *
gmm_model_clone(const gmm_model *m, gmm_error *err)
{
	gmm_model  *c;
	size_t		kd,
				vl;

	if (m == NULL)
	{
		gmm_set_error(err, GMM_EINVAL, "no model to clone");
		return NULL;
	}
	c = gmm_model_alloc(m->K, m->D, m->cov, err);
	if (c == NULL)
		return NULL;
	kd = (size_t) m->K * m->D;
	vl = (size_t) m->K * gmm_var_len(m->cov, m->D);
	memcpy(c->weights, m->weights, sizeof(float) * m->K);
	memcpy(c->means, m->means, sizeof(float) * kd);
	memcpy(c->vars, m->vars, sizeof(float) * vl);
	memcpy(c->log_norm, m->log_norm, sizeof(float) * m->K);
	memcpy(c->prec, m->prec, sizeof(float) * vl);
	memcpy(c->mean_sqnorm, m->mean_sqnorm, sizeof(float) * m->K);
	return c;
}

size_t
gmm_model_serialized_size(int K, int D, gmm_cov_type cov)
{
	if (K < 1 || D < 1)
		return 0;
	return GMM_SER_HEADER + sizeof(float) * ((size_t) K + (size_t) K * D +
											 (size_t) K * gmm_var_len(cov, D));
}

static void
put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char) (v & 0xff);
	p[1] = (unsigned char) ((v >> 8) & 0xff);
	p[2] = (unsigned char) ((v >> 16) & 0xff);
	p[3] = (unsigned char) ((v >> 24) & 0xff);
}

static uint32_t
get_u32(const unsigned char *p)
{
	return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static unsigned char *
put_floats(unsigned char *p, const float *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
	{
		uint32_t	u;

		memcpy(&u, &f[i], 4);
		put_u32(p, u);
		p += 4;
	}
	return p;
}

static const unsigned char *
get_floats(const unsigned char *p, float *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
	{
		uint32_t	u = get_u32(p);

		memcpy(&f[i], &u, 4);
		p += 4;
	}
	return p;
}

void
gmm_model_serialize(const gmm_model *m, void *buf)
{
	unsigned char *p = buf;
	size_t		kd = (size_t) m->K * m->D;
	size_t		vl = (size_t) m->K * gmm_var_len(m->cov, m->D);

	put_u32(p, GMM_SER_MAGIC);
	put_u32(p + 4, (uint32_t) m->K);
	put_u32(p + 8, (uint32_t) m->D);
	put_u32(p + 12, (uint32_t) m->cov);
	p += GMM_SER_HEADER;
	p = put_floats(p, m->weights, (size_t) m->K);
	p = put_floats(p, m->means, kd);
	(void) put_floats(p, m->vars, vl);
}

gmm_model *
gmm_model_deserialize(const void *buf, size_t len, gmm_error *err)
{
	const unsigned char *p = buf;
	uint32_t	magic,
				K,
				D,
				cov;
	size_t		need;
	gmm_model  *m;

	clear_error(err);
	if (buf == NULL || len < GMM_SER_HEADER)
	{
		gmm_set_error(err, GMM_EINVAL, "serialized model is too short (%zu bytes)", len);
		return NULL;
	}
	magic = get_u32(p);
	K = get_u32(p + 4);
	D = get_u32(p + 8);
	cov = get_u32(p + 12);
	if (magic != GMM_SER_MAGIC)
	{
		gmm_set_error(err, GMM_EINVAL, "serialized model has a bad magic number 0x%08x", magic);
		return NULL;
	}
	if (K < 1 || D < 1 || K > 0x7fffffffu || D > 0x7fffffffu ||
		(cov != GMM_COV_SPHERICAL && cov != GMM_COV_DIAG))
	{
		gmm_set_error(err, GMM_EINVAL, "serialized model has a bad header (K = %u, D = %u, cov = %u)", K, D, cov);
		return NULL;
	}
	need = gmm_model_serialized_size((int) K, (int) D, (gmm_cov_type) cov);
	if (len != need)
	{
		gmm_set_error(err, GMM_EINVAL, "serialized model has %zu bytes, expected %zu", len, need);
		return NULL;
	}
	m = gmm_model_alloc((int) K, (int) D, (gmm_cov_type) cov, err);
	if (m == NULL)
		return NULL;
	p += GMM_SER_HEADER;
	p = get_floats(p, m->weights, K);
	p = get_floats(p, m->means, (size_t) K * D);
	(void) get_floats(p, m->vars, (size_t) K * gmm_var_len((gmm_cov_type) cov, (int) D));
	if (gmm_model_prepare(m, err) != GMM_OK)
	{
		gmm_model_free(m);
		return NULL;
	}
	return m;
}
