/*
 * vector_ops.c - distances on real[] and the SQL functions/operators behind
 * <-> (L2), <#> (negative inner product) and <=> (cosine distance).
 *
 * Sums are accumulated in double: the operators are the ground truth the
 * index is checked against, and a float sum over 4096 dimensions loses digits.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "vector_ops.h"

const float4 *
flashgmm_vector_check(ArrayType *a, int *dim, const char *what)
{
	int			n;
	const float4 *x;

	if (ARR_ELEMTYPE(a) != FLOAT4OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s must be an array of real", what)));
	if (ARR_NDIM(a) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%s must not be empty", what),
				 errhint("A vector needs at least one dimension.")));
	if (ARR_NDIM(a) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what),
				 errdetail("The array has %d dimensions.", ARR_NDIM(a))));
	if (ARR_HASNULL(a) && array_contains_nulls(a))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain NULL elements", what)));
	n = ARR_DIMS(a)[0];
	if (n < 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%s must not be empty", what)));
	x = (const float4 *) ARR_DATA_PTR(a);
	for (int i = 0; i < n; i++)
	{
		if (!isfinite(x[i]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("%s must not contain NaN or Infinity", what),
					 errdetail("Element %d is %s.", i + 1,
							   isnan(x[i]) ? "NaN" : (x[i] > 0 ? "Infinity" : "-Infinity"))));
	}
	*dim = n;
	return x;
}

void
flashgmm_check_same_dim(int a, int b, const char *what)
{
	if (a != b)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%s: different vector dimensions %d and %d", what, a, b)));
}

double
flashgmm_l2_squared(const float4 *a, const float4 *b, int dim)
{
	double		s = 0;

	for (int i = 0; i < dim; i++)
	{
		double		d = (double) a[i] - (double) b[i];

		s += d * d;
	}
	return s;
}

double
flashgmm_inner_product(const float4 *a, const float4 *b, int dim)
{
	double		s = 0;

	for (int i = 0; i < dim; i++)
		s += (double) a[i] * (double) b[i];
	return s;
}

double
flashgmm_norm(const float4 *a, int dim)
{
	return sqrt(flashgmm_inner_product(a, a, dim));
}

double
flashgmm_cosine_distance(const float4 *a, const float4 *b, int dim)
{
	double		na = flashgmm_norm(a, dim);
	double		nb = flashgmm_norm(b, dim);
	double		c;

	if (na == 0 || nb == 0)
		return 1.0;
	c = flashgmm_inner_product(a, b, dim) / (na * nb);
	/* rounding can push |c| just past 1 */
	if (c > 1)
		c = 1;
	else if (c < -1)
		c = -1;
	return 1.0 - c;
}

double
flashgmm_distance(FlashgmmMetric metric, const float4 *a, const float4 *b, int dim)
{
	switch (metric)
	{
		case FLASHGMM_METRIC_L2:
			return sqrt(flashgmm_l2_squared(a, b, dim));
		case FLASHGMM_METRIC_IP:
			return -flashgmm_inner_product(a, b, dim);
		case FLASHGMM_METRIC_COSINE:
			return flashgmm_cosine_distance(a, b, dim);
	}
	elog(ERROR, "flashgmm: unknown metric %d", (int) metric);
	return 0;					/* keep compiler quiet */
}

/* SQL-callable wrappers: both arguments validated, dimensions must match. */
static void
get_pair(FunctionCallInfo fcinfo, const float4 **a, const float4 **b, int *dim)
{
	ArrayType  *x = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *y = PG_GETARG_ARRAYTYPE_P(1);
	int			da,
				db;

	*a = flashgmm_vector_check(x, &da, "vector");
	*b = flashgmm_vector_check(y, &db, "vector");
	flashgmm_check_same_dim(da, db, "cannot compare vectors");
	*dim = da;
}

PG_FUNCTION_INFO_V1(flashgmm_l2_distance);
Datum
flashgmm_l2_distance(PG_FUNCTION_ARGS)
{
	const float4 *a,
			   *b;
	int			dim;

	get_pair(fcinfo, &a, &b, &dim);
	PG_RETURN_FLOAT8(sqrt(flashgmm_l2_squared(a, b, dim)));
}

PG_FUNCTION_INFO_V1(flashgmm_l2_squared_distance);
Datum
flashgmm_l2_squared_distance(PG_FUNCTION_ARGS)
{
	const float4 *a,
			   *b;
	int			dim;

	get_pair(fcinfo, &a, &b, &dim);
	PG_RETURN_FLOAT8(flashgmm_l2_squared(a, b, dim));
}

PG_FUNCTION_INFO_V1(flashgmm_inner_product_sql);
Datum
flashgmm_inner_product_sql(PG_FUNCTION_ARGS)
{
	const float4 *a,
			   *b;
	int			dim;

	get_pair(fcinfo, &a, &b, &dim);
	PG_RETURN_FLOAT8(flashgmm_inner_product(a, b, dim));
}

PG_FUNCTION_INFO_V1(flashgmm_negative_inner_product);
Datum
flashgmm_negative_inner_product(PG_FUNCTION_ARGS)
{
	const float4 *a,
			   *b;
	int			dim;

	get_pair(fcinfo, &a, &b, &dim);
	PG_RETURN_FLOAT8(-flashgmm_inner_product(a, b, dim));
}

PG_FUNCTION_INFO_V1(flashgmm_cosine_distance_sql);
Datum
flashgmm_cosine_distance_sql(PG_FUNCTION_ARGS)
{
	const float4 *a,
			   *b;
	int			dim;

	get_pair(fcinfo, &a, &b, &dim);
	PG_RETURN_FLOAT8(flashgmm_cosine_distance(a, b, dim));
}

PG_FUNCTION_INFO_V1(flashgmm_vector_norm);
Datum
flashgmm_vector_norm(PG_FUNCTION_ARGS)
{
	ArrayType  *x = PG_GETARG_ARRAYTYPE_P(0);
	int			dim;
	const float4 *a = flashgmm_vector_check(x, &dim, "vector");

	PG_RETURN_FLOAT8(flashgmm_norm(a, dim));
}
