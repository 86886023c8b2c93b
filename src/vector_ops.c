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

/*
 * The distance loops are most of an index scan's time (perf: 45% at probes 8
 * on sift-opencv-100k).  One scalar chain of dependent double adds is
 * latency-bound, so on x86-64 CPUs with AVX2 and FMA the sums run in two
 * 4-wide double accumulators (floats widened to double, as in the scalar
 * loop).  The SQL operators and the index scan call the same function, so
 * the index always orders rows by exactly what the operators return.
 */
typedef double (*pair_fn) (const float4 *a, const float4 *b, int dim);

static double
l2_squared_scalar(const float4 *a, const float4 *b, int dim)
{
	double		s = 0;

	for (int i = 0; i < dim; i++)
	{
		double		d = (double) a[i] - (double) b[i];

		s += d * d;
	}
	return s;
}

static double
inner_product_scalar(const float4 *a, const float4 *b, int dim)
{
	double		s = 0;

	for (int i = 0; i < dim; i++)
		s += (double) a[i] * (double) b[i];
	return s;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FLASHGMM_HAVE_AVX2_PATH 1

__attribute__((target("avx2,fma")))
static inline double
hsum_pd(__m256d v)
{
	__m128d		lo = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));

	return _mm_cvtsd_f64(lo) + _mm_cvtsd_f64(_mm_unpackhi_pd(lo, lo));
}

__attribute__((target("avx2,fma")))
static double
l2_squared_avx2(const float4 *a, const float4 *b, int dim)
{
	__m256d		acc0 = _mm256_setzero_pd();
	__m256d		acc1 = _mm256_setzero_pd();
	double		s;
	int			i = 0;

	for (; i + 8 <= dim; i += 8)
	{
		__m256d		d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i)),
									   _mm256_cvtps_pd(_mm_loadu_ps(b + i)));
		__m256d		d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i + 4)),
									   _mm256_cvtps_pd(_mm_loadu_ps(b + i + 4)));

		acc0 = _mm256_fmadd_pd(d0, d0, acc0);
		acc1 = _mm256_fmadd_pd(d1, d1, acc1);
	}
	s = hsum_pd(_mm256_add_pd(acc0, acc1));
	for (; i < dim; i++)
	{
		double		d = (double) a[i] - (double) b[i];

		s += d * d;
	}
	return s;
}

__attribute__((target("avx2,fma")))
static double
inner_product_avx2(const float4 *a, const float4 *b, int dim)
{
	__m256d		acc0 = _mm256_setzero_pd();
	__m256d		acc1 = _mm256_setzero_pd();
	double		s;
	int			i = 0;

	for (; i + 8 <= dim; i += 8)
	{
		acc0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i)),
							   _mm256_cvtps_pd(_mm_loadu_ps(b + i)), acc0);
		acc1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i + 4)),
							   _mm256_cvtps_pd(_mm_loadu_ps(b + i + 4)), acc1);
	}
	s = hsum_pd(_mm256_add_pd(acc0, acc1));
	for (; i < dim; i++)
		s += (double) a[i] * (double) b[i];
	return s;
}
#endif

static pair_fn l2_squared_impl = NULL;
static pair_fn inner_product_impl = NULL;

/* Pick the loops once per backend, by what this CPU supports. */
static void
choose_impl(void)
{
	l2_squared_impl = l2_squared_scalar;
	inner_product_impl = inner_product_scalar;
#ifdef FLASHGMM_HAVE_AVX2_PATH
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
	{
		l2_squared_impl = l2_squared_avx2;
		inner_product_impl = inner_product_avx2;
	}
#endif
}

double
flashgmm_l2_squared(const float4 *a, const float4 *b, int dim)
{
	if (unlikely(l2_squared_impl == NULL))
		choose_impl();
	return l2_squared_impl(a, b, dim);
}

double
flashgmm_inner_product(const float4 *a, const float4 *b, int dim)
{
	if (unlikely(inner_product_impl == NULL))
		choose_impl();
	return inner_product_impl(a, b, dim);
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
