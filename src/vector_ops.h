/*
 * vector_ops.h - real[] vectors as flashgmm sees them: validation and the
 * three distances (L2, negative inner product, cosine) shared by the SQL
 * operators and the access method.
 */
#ifndef FLASHGMM_VECTOR_OPS_H
#define FLASHGMM_VECTOR_OPS_H

#include "postgres.h"
#include "utils/array.h"

/* Metric of an operator class; stored in the metapage. */
typedef enum FlashgmmMetric
{
	FLASHGMM_METRIC_L2 = 1,
	FLASHGMM_METRIC_IP = 2,
	FLASHGMM_METRIC_COSINE = 3
} FlashgmmMetric;

/*
 * Check that a is a usable vector: one dimension, no NULL elements, at least
 * one element, every element finite.  Returns a pointer to its floats (inside
 * a, which must be detoasted) and sets *dim.  ERRORs with an errcode, a
 * message naming the problem, and `what` ("query vector", "indexed vector",
 * ...) in the detail.
 */
extern const float4 *flashgmm_vector_check(ArrayType *a, int *dim, const char *what);

/* ERROR unless a and b have the same dimension. */
extern void flashgmm_check_same_dim(int a, int b, const char *what);

extern double flashgmm_l2_squared(const float4 *a, const float4 *b, int dim);
extern double flashgmm_inner_product(const float4 *a, const float4 *b, int dim);
/* 1 - cos(a, b); a zero vector has no direction: distance 1 to everything
 * (documented: zero vectors sort after every vector with a direction that
 * is closer than orthogonal). */
extern double flashgmm_cosine_distance(const float4 *a, const float4 *b, int dim);
extern double flashgmm_norm(const float4 *a, int dim);

/* Distance the opclass orders by (what <->, <#> or <=> returns). */
extern double flashgmm_distance(FlashgmmMetric metric, const float4 *a, const float4 *b, int dim);

#endif
