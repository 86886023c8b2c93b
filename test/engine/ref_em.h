/* ref_em.h - a straightforward float64 EM for the engine tests (no tiles, no
 * BLAS, no tricks): the reference the engine is checked against. */
#ifndef FLASHGMM_TEST_REF_EM_H
#define FLASHGMM_TEST_REF_EM_H

#include <stdint.h>

#include "gmm.h"

typedef struct ref_model
{
	int			K;
	int			D;
	int			VL;				/* 1 (spherical) or D (diag) */
	double	   *w;				/* K */
	double	   *mu;				/* K x D */
	double	   *var;			/* K x VL */
} ref_model;

ref_model  *ref_from_gmm(const gmm_model *m);
void		ref_free(ref_model *r);
/* Mean log-likelihood of X under r. */
double		ref_score(const ref_model *r, const float *X, int64_t N);
/* One EM iteration (E-step, then M-step with variance floor reg); returns
 * the mean log-likelihood of the model before the update, or NAN when a
 * component empties (the reference does not re-seed). */
double		ref_em_iter(ref_model *r, const float *X, int64_t N, double reg);
/* The same with the weights fixed at 1/K when equal_weights (gmm_fit_params.equal_weights). */
double		ref_em_iter_w(ref_model *r, const float *X, int64_t N, double reg, int equal_weights);

#endif
