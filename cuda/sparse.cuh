/*
 * sparse.cuh - the sparse E pass: screen every (row, component) pair with one
 * FP16 product, then score exactly, and accumulate statistics for, only the
 * pairs that can matter.
 *
 * Why (cuda/NOTES.md, "Toward the EM targets"): after a few EM iterations a
 * row has 4-16 components within 30 nats of its best (at most ~70 of 1024 at
 * a k-means++ start); all the others together carry less than 1e-12 of its
 * responsibility.  The dense passes spend three FP16 products on every pair
 * twice (logZ, then the statistics); this pass spends one product per pair
 * and exact work per candidate.
 *
 * Steps, per block of SPARSE_ROWS rows (EStep::run_sparse):
 *   1. The screen, one FP16 product x_hi.W_hi per pair (the one-product
 *      assignment's score, lse_wg_kernel in hopper.cuh).  Each component k
 *      gets an error bound e_k = SCREEN_MARGIN + SCREEN_SIGMAS u e'_k /
 *      sqrt(D) nats (below); the screen's constants are shifted by -e_k (lo,
 *      a lower bound on the true score) and +e_k (hi, an upper bound).
 *      Components whose bound exceeds SCREEN_ERR_MAX, or flagged for three
 *      products, are screen-flagged: -inf here, scored exactly in step 2 for
 *      every row.
 *        SCREEN_MAX: the row's best lower bound; SCREEN_COLLECT: the
 *        components whose upper bound is within the window T of it
 *        (sparse_window), into the
 *        row's list (at most SPARSE_CAP; a longer one overflows).
 *        SCREEN_ONEPASS (once the last pass left each row's best lower
 *        bound): both in one walk, the threshold from that bound less
 *        SPARSE_SLACK and the running maximum; a row whose bound fell
 *        further, or whose list overflowed, is collected again
 *        (SCREEN_COLLECT over those rows gathered, from the full maximum
 *        the walk left; the whole block where they are more than 5%).
 *      Rows with overflowed lists are gathered and run through the dense h16
 *      pass; a block with more than 5% of them takes the dense pass whole.
 *   2. sparse_exact_kernel: a warp per row (sparse_exact2_kernel: two rows a
 *      warp, where lists are sorted or there are no statistics, nothing is
 *      screen-flagged and D = 128) scores its candidates and every
 *      screen-flagged component from the differences in FP32 (direct_score's
 *      arithmetic: sum (x - mu)^2 / var, the engine's most accurate score;
 *      the divisions by __fdividef, 2 ulp),
 *      logZ by log-sum-exp over them, r = exp(s - logZ), and for r >=
 *      SPARSE_RMIN (run time: rmin) the statistics around the component's mean: sum r (x - mu)
 *      [and sum r (x - mu)^2] by 16-byte FP32 atomics into psx, sum r and
 *      (spherical) sum r ||x - mu||^2 by FP64 atomics; flush_sparse_kernel
 *      turns them into the FP64 sums of x every two blocks (at most 2^19
 *      rows).  Components
 *      flagged for three products keep flag_stats_kernel's statistics.
 *      Past 2M rows (sparse_sorted_for) the pairs of lists of at most
 *      32 entries go to the sorted statistics instead of atomics:
 *      counted per component, put in component order and summed a run of
 *      one component at a time (pair_offsets, pair_scatter, pair_sums
 *      below), with r left in the list where it has room, else scored
 *      again.
 *
 * What is left out, and its bound: when the screen's error stays within the
 * bounds, a pair outside the window has a true score more than T below
 * the row's best, so r < e^-T; pairs with r < SPARSE_RMIN are left out
 * of the statistics (not of logZ).  Atomics: the statistics' summation order
 * varies run to run; gmm_fit_params.deterministic takes the dense pass.
 * Where it is the default (on wgmma: mixtures of K >= 1024 components of
 * either covariance, and not where the rows have many candidates: see
 * want_sparse and SPARSE_CANDS_* in flashgmm_cuda.cu) and what it measured:
 * cuda/NOTES.md, v7 to v11.
 */
#pragma once
#include "half.cuh"

namespace fgc {
namespace sp {

/*
 * The window: nats below the row's best that may still count.  A pair
 * outside it has r < e^-T; a row's logZ leaves out at most K e^-T of its
 * mass (under K e^-T nats), so T = ln(K / SPARSE_LOST) keeps that under
 * SPARSE_LOST = 1/160 nat (2e-5 of the mean log-likelihoods the tests
 * measure), and never below SPARSE_T_MIN = 12, which keeps every pair the
 * statistics take (r >= SPARSE_RMIN, 9.7 nats below logZ, so below the
 * best) 2.3 nats inside it.  At K = 1024 that is 12.0 (16 before, 22
 * before v12).  Seeded, H100 (NOTES v17): 10M x 1024 diag 16 -> 12: 5.04 ->
 * 3.12 candidates a row, overflowed rows 126k -> 8.9k a pass, 40.6-40.8 ->
 * 36.1-36.2 ms an iteration (14: 38.1-39.0, 11: 35.2-35.6, 10: 34.8, where
 * the final LL moves in the 8th digit); 1M x 1024 spherical 2.46-2.57 ->
 * 2.41-2.42 (2.00 candidates a row instead of 3.12); 1M x 1024 diag and the
 * K = 4096 tables the same within noise.
 */
constexpr float SPARSE_T_MIN = 12.f;
constexpr double SPARSE_LOST = 1.0 / 160;
inline float sparse_window(int K) { return (float) std::max((double) SPARSE_T_MIN, std::log(K / SPARSE_LOST)); }
/*
 * The screen's error bound for component k, nats: SCREEN_MARGIN + SCREEN_SIGMAS
 * u e_k / sqrt(D) (u = 2^-11; u e_k / sqrt(D) is the random-rounding estimate
 * of DevModel::prepare; sparse_proto.c measured errors below 0.2 nats where it
 * is <= 0.5).  Components whose bound exceeds SCREEN_ERR_MAX are scored
 * exactly for every row instead (screen-flagged).
 */
constexpr double SCREEN_MARGIN = 1.0;
constexpr double SCREEN_SIGMAS = 6.0;
constexpr double SCREEN_ERR_MAX = 8.0;
constexpr double U_FP16 = 1.0 / 2048.0;	/* the screen operands' unit roundoff */
/* one screen pass (SCREEN_ONEPASS) from the last pass's bounds: how far a row's best may fall meanwhile, nats */
constexpr double SPARSE_SLACK = 3.0;
/*
 * The same from FP16 seeds (past 4M rows), where the rows a one-pass screen
 * fails wait for the dense pass with the overflowed ones instead of being
 * collected again: a tighter threshold gives shorter lists (10M x 1024 diag:
 * 5.0 candidates a row instead of 5.7, 126k rows a pass to the dense pass
 * instead of 164k); H100, 10M x 1024 diag, seeded: 3 nats 54.4-55.0 ms an
 * iteration, 2 nats 49.6-52.1, 1.5 nats 49.0-49.8, 1 nat 49.5-50.3 (NOTES v16).
 */
constexpr double SPARSE_SLACK16 = 1.5;
constexpr int SPARSE_CAP = 64;			/* candidates a row's list may hold (two per lane; the host picks 32 or 64, FLASHGMM_GPU_SPARSE_CAP also 16) */
constexpr int SPARSE_FMAX = 64;			/* screen-flagged components the exact kernel holds (shared memory) */
/*
 * Smaller responsibilities stay out of the statistics (not out of logZ):
 * 2^-14 = 6.1e-5, 9.7 nats below the row's logZ.  A component loses under
 * 2^-14 of a row's weight from each row it is a minor candidate of; what
 * that moves is far inside the engine's bounds (GPU tests, H100: sift
 * spherical means rel 6.2e-6 -> 2.6e-5, diag 5.7e-5 -> 8.4e-5, flagged
 * components' nk 6.8e-6 -> 6.8e-5, against 1e-3).  What it saves is the
 * pairs' statistics: seeded 10M x 1024 diag 5.03 -> 1.39 pairs a row, the
 * sums 9.1 -> 4.8 ms a pass, an iteration 45.2 -> 40.5 ms; 1M x 1024
 * spherical (atomics) 3.07 -> 1.16 pairs a row, 3.3 -> 2.45-2.53 ms (2^-20:
 * 41.1 and 2.80; 2^-10 moves the final LL in the 5th digit).  Before:
 * 2^-30 (NOTES v17).  FLASHGMM_GPU_SPARSE_RMIN_LOG2 overrides.
 */
constexpr float SPARSE_RMIN = 6.1035156e-05f;	/* 2^-14 */
constexpr int EXACT_WARPS = 8;

/*
 * The sorted statistics (below) take every list of at most 32 entries (the
 * exact kernel holds entry j in lane j).  Each pair's r goes where the list
 * has room for it: in its second half when that holds 32 (lists of 64), so
 * pair_sums_kernel reads it; with lists of 32 (the default past 2M rows)
 * there is no room, and pair_sums_kernel scores the pair again from the
 * differences it forms anyway (the exact kernel's arithmetic, so the same
 * r) and the row's logZ.  (Before, only lists of at most cap / 2 entries
 * were sorted and the longer ones took an atomic add a pair: 10M x 1024
 * diag, H100, lists of 32: the exact step 26.7 -> 10.4 ms a pass, the sums
 * 5.6 -> 12.5, an iteration 77.1 -> 65.5 ms; cuda/NOTES.md v15.)
 */
__host__ __device__ constexpr int sort_rows_max(int cap) { return cap < 32 ? cap : 32; }
/*
 * Where a sorted pair's r is (EStep::sort_rmode): in the list's second half
 * (lists of 64); scored again in the sums (lists of 32); or packed with the
 * component into the entry itself (lists of 32, Kp <= 65535: pack_pair).
 * SORT_R_PACKED took the 10M x 1024 diag sums from 13.0 ms a pass (rescored)
 * to 9.2 (r read), 60.5 -> 56.9 ms an iteration on an H100 (NOTES v16).
 */
enum
{
	SORT_R_HALF = 0,
	SORT_R_RESCORE = 1,
	SORT_R_PACKED = 2
};
/*
 * A packed entry: the component in the low 16 bits, FP16 of r 2^15 in the
 * high 16 (r in (0, 1]: 2^15 at most, normal down to r = 2^-29, so every
 * r >= 2^-29 keeps 11 bits but the last; 0: not counted).
 */
__device__ __forceinline__ int32_t pack_pair(int k, float r)
{
	return (int32_t) ((uint32_t) (k & 0xffff) | ((uint32_t) __half_as_ushort(__float2half_rn(r * 32768.f)) << 16));
}
__device__ __forceinline__ int pair_k(int32_t e) { return e & 0xffff; }
__device__ __forceinline__ float pair_r(int32_t e)
{
	return __half2float(__ushort_as_half((unsigned short) ((uint32_t) e >> 16))) * (1.f / 32768.f);
}

/*
 * The screen's constants in log2 units, c2s = [lo | hi | p | dl]: the
 * one-product constant less (lo: for the row's best, a lower bound on the
 * true best) or plus (hi: for the candidates, an upper bound on each true
 * score) the component's error bound serr, -inf for the screen-flagged
 * components; dl = lo - hi (0 for those), what SCREEN_ONEPASS adds to its
 * upper-bound scores for the lower bounds.
 */
__global__ void screen_constants_kernel(const float *__restrict__ colc, const float *__restrict__ colp,
										const float *__restrict__ serr, const int *__restrict__ sflag, int Kp,
										float *__restrict__ c2s)
{
	for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < Kp; k += gridDim.x * blockDim.x)
	{
		const float c = colc[k], e = serr[k];
		c2s[k] = sflag[k] ? -INFINITY : (c - e) * h16::L2E;
		c2s[Kp + k] = sflag[k] ? -INFINITY : (c + e) * h16::L2E;
		c2s[2 * Kp + k] = colp[k] * h16::L2E;
		c2s[3 * Kp + k] = sflag[k] ? 0.f : c2s[k] - c2s[Kp + k];
	}
}

/* colc with -inf at the flagged components: the dense passes leave them to flag_lse_kernel */
__global__ void mask_constants_kernel(const float *__restrict__ colc, const int *__restrict__ flag, int Kp,
									  float *__restrict__ out)
{
	for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < Kp; k += gridDim.x * blockDim.x)
		out[k] = flag[k] ? -INFINITY : colc[k];
}

/* lane l's four features 4l .. 4l + 3 of a D-long row (0 past D): one 16-byte load when rows are 16-byte aligned */
__device__ __forceinline__ void load4(const float *__restrict__ p, int D, int lane, float (&v)[4])
{
	if (D % 4 == 0)
	{
		const float4 a = 4 * lane < D ? __ldg(reinterpret_cast<const float4 *>(p) + lane) : make_float4(0.f, 0.f, 0.f, 0.f);
		v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
	}
	else
#pragma unroll
		for (int i = 0; i < 4; i++)
			v[i] = 4 * lane + i < D ? __ldg(p + 4 * lane + i) : 0.f;
}

/*
 * fn(row, x) for this warp's rows in a warp-per-row kernel (one row per warp,
 * EXACT_WARPS warps a block, rows strided over the grid); x holds the row's
 * features 4l .. 4l + 3 in lane l (0 past D).
 */
template <class Fn>
__device__ __forceinline__ void each_row(const float *__restrict__ X, int64_t nrows, int D, Fn fn)
{
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	for (int64_t row = (int64_t) blockIdx.x * EXACT_WARPS + warp; row < nrows; row += (int64_t) gridDim.x * EXACT_WARPS)
	{
		float x[4];
		load4(X + row * D, D, lane, x);
		fn(row, x);
	}
}

/*
 * The exact kernel's divisions: __fdividef (2 ulp; FGC_EXACT_FASTDIV=0 at
 * build time: IEEE).  An IEEE division is a reciprocal, four FMAs and a
 * checked slow path; diag scores take four a lane per candidate.  Seeded
 * 1M x 1024 diag, --steady (H100, v12): 2.70 / 2.52 -> 2.46 / 2.48 ms an
 * iteration; the GPU tests pass with either.
 */
#ifndef FGC_EXACT_FASTDIV
#define FGC_EXACT_FASTDIV 1
#endif
__device__ __forceinline__ float exact_div(float a, float b) { return FGC_EXACT_FASTDIV ? __fdividef(a, b) : a / b; }

/* four independent warp sums at once (their shuffles interleave), on every lane */
__device__ __forceinline__ void warp_sum4(float (&q)[4])
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
#pragma unroll
		for (int u = 0; u < 4; u++)
			q[u] += __shfl_xor_sync(0xffffffffu, q[u], o);
}

/* online log-sum-exp: (M, L) with L = sum exp(s - M), s added */
__device__ __forceinline__ void lse_add(float &M, float &L, float s)
{
	if (s > M)
	{
		L = L * __expf(M - s) + 1.f;
		M = s;
	}
	else if (s > NEG_INF)
		L += __expf(s - M);
}

/* the warp's sum of v, on every lane */
__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/*
 * A set of components scored from the differences for every row (flagged):
 * their means, 1 / variances and direct constants in shared memory, and
 * for a cheap test per (row, component) the means' norms and the smallest
 * 1 / variance.
 *
 * The test (may_count): |x - mu|^2 >= (|x| - |mu|)^2, so a component's score
 * is at most c - 0.5 pmin (|x| - |mu|)^2; below zlo - RESP_CUT (zlo: a lower
 * bound on the row's logZ) its responsibility is under e^-80, nothing in
 * FP32, and the D-long score is skipped.  The flagged components are mostly
 * re-seeded singletons with variances at reg_covar (1M x 4096 after 12
 * iterations: ~380 of them), each within a tiny radius of one row: the test
 * leaves out nearly every pair.  The norms' FP32 rounding is taken off the
 * difference (1e-5 relative, far above it).
 */
struct FlagSet
{
	float *mu, *iv, *c, *nrm, *pmin;	/* [nf][D], [nf][D or 1], [nf], [nf], [nf] */
	int nf, D, diag;

	__host__ __device__ static size_t bytes(int nf, int D, bool diag) { return sizeof(float) * (size_t) nf * (D + (diag ? D : 1) + 3); }
	/* smem: 16-byte aligned (extern __shared__ float4) */
	__device__ void load(float *smem, const Direct &dr, const int *__restrict__ fidx, int nf_, int D_)
	{
		nf = nf_;
		D = D_;
		diag = dr.diag;
		const int VL = diag ? D : 1;
		mu = smem;
		iv = mu + nf * D;
		c = iv + nf * VL;
		nrm = c + nf;
		pmin = nrm + nf;
		for (int i = threadIdx.x; i < nf * D; i += blockDim.x)
			mu[i] = __ldg(dr.mu + (int64_t) __ldg(fidx + i / D) * D + i % D);
		for (int i = threadIdx.x; i < nf * VL; i += blockDim.x)
			iv[i] = 1.f / __ldg(dr.var + (int64_t) __ldg(fidx + i / VL) * VL + i % VL);
		for (int i = threadIdx.x; i < nf; i += blockDim.x)
			c[i] = __ldg(dr.cdir + fidx[i]);
		__syncthreads();
		/* a warp per component: |mu|, min 1 / var */
		const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
		for (int f = warp; f < nf; f += nw)
		{
			float q = 0.f, p = INFINITY;
			for (int d = lane; d < D; d += 32)
			{
				q = fmaf(mu[f * D + d], mu[f * D + d], q);
				p = fminf(p, iv[f * VL + (diag ? d : 0)]);
			}
#pragma unroll
			for (int o = 16; o > 0; o >>= 1)
			{
				q += __shfl_xor_sync(0xffffffffu, q, o);
				p = fminf(p, __shfl_xor_sync(0xffffffffu, p, o));
			}
			if (lane == 0)
				nrm[f] = sqrtf(q), pmin[f] = p;
		}
		__syncthreads();
	}
	/* whether component f can count for a row of norm xn whose logZ is at least zlo (the test above) */
	__device__ __forceinline__ bool may_count(int f, float xn, float zlo) const
	{
		const float d = fmaxf(fabsf(xn - nrm[f]) - 1e-5f * (xn + nrm[f]), 0.f);
		return !(c[f] - 0.5f * pmin[f] * d * d < zlo - RESP_CUT);
	}
	/* the score of flagged component f for the row whose features lane l holds as x[i] = x_{4 l + i} */
	__device__ __forceinline__ float partial(int f, const float (&x)[4], int lane) const
	{
		const float *m = mu + f * D, *v = iv + f * D;
		float mv[4], vv[4];
		if (D % 4 == 0)
		{
			/* one 16-byte shared load per lane (four 4-byte ones at stride 16 bytes were 4-way bank conflicts) */
			const float4 a = 4 * lane < D ? reinterpret_cast<const float4 *>(m)[lane] : make_float4(0.f, 0.f, 0.f, 0.f);
			mv[0] = a.x, mv[1] = a.y, mv[2] = a.z, mv[3] = a.w;
			if (diag)
			{
				const float4 w = 4 * lane < D ? reinterpret_cast<const float4 *>(v)[lane] : make_float4(0.f, 0.f, 0.f, 0.f);
				vv[0] = w.x, vv[1] = w.y, vv[2] = w.z, vv[3] = w.w;
			}
		}
		else
#pragma unroll
			for (int i = 0; i < 4; i++)
			{
				const int d = 4 * lane + i;
				mv[i] = d < D ? m[d] : 0.f;
				vv[i] = diag && d < D ? v[d] : 0.f;
			}
		float q = 0.f;
#pragma unroll
		for (int i = 0; i < 4; i++)
		{
			const float t = x[i] - mv[i];	/* (0 past D: x is 0 there) */
			q = diag ? fmaf(t * t, vv[i], q) : fmaf(t, t, q);
		}
		return q;
	}
	__device__ __forceinline__ float finish(int f, float qsum) const
	{
		return c[f] - 0.5f * (diag ? qsum : qsum * iv[f]);
	}
	/* the scores of flagged components ks[0..4) (-1: none, -inf), on every lane */
	__device__ __forceinline__ void scores4(const int (&ks)[4], const float (&x)[4], int lane, float (&s)[4]) const
	{
		float q[4];
#pragma unroll
		for (int u = 0; u < 4; u++)
			q[u] = ks[u] >= 0 ? partial(ks[u], x, lane) : 0.f;
		warp_sum4(q);
#pragma unroll
		for (int u = 0; u < 4; u++)
			s[u] = ks[u] >= 0 ? finish(ks[u], q[u]) : NEG_INF;
	}
	/*
	 * fn(ks, s) for the components of g0 .. g0 + 31 that may count (may_count)
	 * four at a time: ks their indices (-1: none), s their scores.
	 */
	template <class Fn>
	__device__ __forceinline__ void each_counting(int g0, float xn, float zlo, const float (&x)[4], int lane, Fn fn) const
	{
		uint32_t b = __ballot_sync(0xffffffffu, g0 + lane < nf && may_count(g0 + lane, xn, zlo));
		while (b)
		{
			int ks[4];
#pragma unroll
			for (int v = 0; v < 4; v++)
			{
				ks[v] = b ? g0 + __ffs(b) - 1 : -1;
				b &= b - 1;
			}
			float sv[4];
			scores4(ks, x, lane, sv);
			fn(ks, sv);
		}
	}
};

/* the row's norm, on every lane (features 4l .. 4l + 3 in lane l, 0 past D) */
__device__ __forceinline__ float row_norm(const float (&x)[4])
{
	float q = x[0] * x[0];
	q = fmaf(x[1], x[1], q);
	q = fmaf(x[2], x[2], q);
	q = fmaf(x[3], x[3], q);
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		q += __shfl_xor_sync(0xffffffffu, q, o);
	return sqrtf(q);
}

/*
 * logZ of the dense passes (which leave the flagged components out: their
 * constants are -inf) merged with the flagged components' scores from the
 * differences: logZ = log(e^lz + sum_f e^s_f).  A warp per row, four
 * components at a time (independent shuffle sums); blockll: the block's sum
 * of the merged logZ.  (Scoring them inside the dense epilogues took a
 * thread a D-long loop per (row, component): 1M x 1024 spherical, 4 flagged
 * components, 50 ms per iteration instead of 6.)  Pairs that cannot count
 * are skipped (FlagSet::may_count) against the logZ so far or, where logZ
 * holds nothing yet (the sparse pass, before its exact kernel), the screen's
 * best lower bound best2 (log2 units).
 */
__global__ void __launch_bounds__(EXACT_WARPS * 32)
flag_lse_kernel(const float *__restrict__ X, int64_t nrows, int D, Direct dr, const int *__restrict__ fidx, int nf,
				float *__restrict__ logZ, double *__restrict__ blockll, const float *__restrict__ best2 = nullptr)
{
	extern __shared__ float4 fsm4[];
	__shared__ double lsum[EXACT_WARPS];
	FlagSet fs;
	fs.load(reinterpret_cast<float *>(fsm4), dr, fidx, nf, D);
	const int lane = threadIdx.x & 31;
	double mine = 0.0;
	each_row(X, nrows, D, [&](int64_t row, const float (&x)[4]) {
		const float xn = row_norm(x);
		float M = __ldg(logZ + row), L = M == NEG_INF ? 0.f : 1.f;
		/* a lower bound on the final logZ: the logZ so far (M only grows), or the screen's best (best2, log2 units) */
		const float zb = best2 ? __ldg(best2 + row) * h16::LN2 : NEG_INF;
		for (int g0 = 0; g0 < nf; g0 += 32)
			fs.each_counting(g0, xn, fmaxf(M, zb), x, lane, [&](const int (&)[4], const float (&s)[4]) {
#pragma unroll
				for (int u = 0; u < 4; u++)
					lse_add(M, L, s[u]);
			});
		if (lane == 0)
		{
			const float lz = M + __logf(L);
			logZ[row] = lz;
			mine += (double) lz;
		}
	});
	block_sum_fixed<EXACT_WARPS>(mine, lsum, blockll ? blockll + blockIdx.x : nullptr);
}

/*
 * The flagged components' statistics for fits that need not be
 * deterministic (flag_stats_warp_kernel's sums, in any order): a warp per
 * row scores the nf components of a FlagSet and, for the pairs whose
 * responsibility counts (s - logZ > -RESP_CUT, as there), adds r t and r t^2
 * (t = x - mu, features 4l .. 4l + 3 in lane l) and r to s1, s2, fnk by FP64
 * atomics.  The rows are read once per FlagSet, not once per component:
 * with a few hundred flagged components (re-seeded singletons at K = 4096)
 * the per-component kernel read X that many times (cuda/NOTES.md, v8).
 * Pairs that count are few (a singleton's own row and its near neighbours):
 * FlagSet::may_count skips the others.
 */
__global__ void __launch_bounds__(EXACT_WARPS * 32)
flag_stats_atomic_kernel(const float *__restrict__ X, int64_t nrows, int D, Direct dr, const int *__restrict__ fidx,
						 int nf, const float *__restrict__ logZ, double *__restrict__ s1, double *__restrict__ s2,
						 double *__restrict__ fnk)
{
	extern __shared__ float4 fsm4[];
	FlagSet fs;
	fs.load(reinterpret_cast<float *>(fsm4), dr, fidx, nf, D);
	const int lane = threadIdx.x & 31;
	each_row(X, nrows, D, [&](int64_t row, const float (&x)[4]) {
		const float xn = row_norm(x);
		const float lz = __ldg(logZ + row);
		for (int g0 = 0; g0 < nf; g0 += 32)
			fs.each_counting(g0, xn, lz, x, lane, [&](const int (&ks)[4], const float (&s)[4]) {
#pragma unroll
			for (int u = 0; u < 4; u++)
			{
				const float dlt = s[u] - lz;	/* (the same on every lane) */
				if (!(dlt > -RESP_CUT))
					continue;
				const double r = (double) __expf(dlt);
				const int f = ks[u];
				const float *m = fs.mu + f * D;
#pragma unroll
				for (int i = 0; i < 4; i++)
				{
					const int d = 4 * lane + i;
					if (d < D)
					{
						const double t = (double) (x[i] - m[d]);
						atomicAdd(s1 + (int64_t) f * D + d, r * t);
						atomicAdd(s2 + (int64_t) f * D + d, r * t * t);
					}
				}
				if (lane == 0)
					atomicAdd(fnk + f, r);
			}
			});
	});
}

/*
 * The exact kernel's score of component k for the row x (lane l: features
 * 4l .. 4l + 3), with its arithmetic (the same bits), on every lane.
 */
template <bool DIAG>
__device__ __forceinline__ float pair_score(const float (&x)[4], const Direct &dr, int D, int k, int lane)
{
	float mv[4], vv[4];
	load4(dr.mu + (int64_t) k * D, D, lane, mv);
	if (DIAG)
		load4(dr.var + (int64_t) k * D, D, lane, vv);
	float q = 0.f;
#pragma unroll
	for (int i = 0; i < 4; i++)
	{
		const float t = x[i] - mv[i];
		if (DIAG)
			q += 4 * lane + i < D ? exact_div(t * t, vv[i]) : 0.f;
		else
			q = fmaf(t, t, q);
	}
	q = warp_sum(q);
	return __ldg(dr.cdir + k) - 0.5f * (DIAG ? q : exact_div(q, __ldg(dr.var + k)));
}

/*
 * One lane's share of a pair's FP32 sums around the mean into the block's
 * psx (component k's row: sum r t, then, diag, sum r t^2): a, b hold
 * features 4l .. 4l + 3.  One 16-byte atomic per lane and sum where rows are
 * 16-byte aligned (sm_90: a quarter of the L2 atomic operations), else one
 * per feature.
 */
template <bool DIAG>
__device__ __forceinline__ void psx_add(float *__restrict__ psx, int D, int k, int lane, const float (&a)[4],
										const float (&b)[4])
{
	float *o = psx + (int64_t) k * (DIAG ? 2 * D : D) + 4 * lane;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	if (D % 4 == 0)
	{
		if (4 * lane < D)
		{
			atomicAdd(reinterpret_cast<float4 *>(o), make_float4(a[0], a[1], a[2], a[3]));
			if (DIAG)
				atomicAdd(reinterpret_cast<float4 *>(o + D), make_float4(b[0], b[1], b[2], b[3]));
		}
		return;
	}
#endif
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (4 * lane + i < D)
		{
			atomicAdd(o + i, a[i]);
			if (DIAG)
				atomicAdd(o + D + i, b[i]);
		}
}

/*
 * One pair's statistics by atomics, warp-wide: row x (features 4l .. 4l + 3
 * in lane l), component k, responsibility r: sum r t [, sum r t^2] into psx,
 * r into bnk[k] and (spherical) r ||t||^2 into bsxn[k] (FP64).  The exact
 * kernel's path where a row's pairs do not go through the sorted
 * statistics (below), and the scatter's for pairs past the sorted buffer.
 */
template <bool DIAG>
__device__ __forceinline__ void pair_atomic(const float (&x)[4], const float *__restrict__ mu, int D, int k, float r,
											int lane, float *__restrict__ psx, double *__restrict__ bnk,
											double *__restrict__ bsxn)
{
	float mv[4];
	load4(mu + (int64_t) k * D, D, lane, mv);
	float tt = 0.f, rt[4], rtt[4];
#pragma unroll
	for (int i = 0; i < 4; i++)
	{
		const float t = x[i] - mv[i];	/* (0 past D) */
		rt[i] = r * t;
		rtt[i] = rt[i] * t;
		tt = fmaf(t, t, tt);
	}
	psx_add<DIAG>(psx, D, k, lane, rt, rtt);
	if (!DIAG)
		tt = warp_sum(tt);
	if (lane == 0)
	{
		atomicAdd(bnk + k, (double) r);
		if (!DIAG)
			atomicAdd(bsxn + k, (double) r * (double) tt);
	}
}

/*
 * One list entry into the sorted statistics (pair_sums_kernel): entry j of
 * the row's list (n entries), component k (-1: none), score s, the row's
 * logZ lz.  A pair that counts leaves its r in the list's second half, slot
 * cap / 2 + j (0: not counted), unless scored again in the sums
 * (SORT_R_RESCORE: every counted pair is kept) or packed into the entry
 * (SORT_R_PACKED), and is counted per component (hk > 0: in the block's
 * bins shist, else in hist).  Returns whether it is a pair of the
 * statistics (r >= rmin), for the profile's count.
 */
__device__ __forceinline__ bool sorted_entry(int32_t *__restrict__ cand, int64_t row, int cap, int j, int n, int k,
											 float s, float lz, const Direct &dr, int rmode, float rmin, int hk,
											 int *shist, int32_t *__restrict__ hist)
{
	const float r = __expf(s - lz);
	const bool counted = k >= 0 && !__ldg(dr.flag + k);
	const bool keep = rmode == SORT_R_RESCORE ? counted : counted && r >= rmin;
	if (rmode == SORT_R_HALF && j < n)
		cand[row * cap + cap / 2 + j] = __float_as_int(keep ? r : 0.f);
	else if (rmode == SORT_R_PACKED && j < n)
		cand[row * cap + j] = pack_pair(k, keep ? r : 0.f);
	if (keep)
		atomicAdd(hk > 0 ? shist + k : hist + k, 1);
	return counted && r >= rmin;
}

/*
 * The exact kernels' end: the block's pair counts (shist, hk > 0) into hist,
 * one add a component a block (measured at par with a global atomic a pair,
 * and with the counting in a kernel of its own: what had kept the exact step
 * at 26 ms a pass at 10M x 1024 diag was the lists of 17 to 32 entries'
 * atomic adds, before every list of at most 32 was sorted: cuda/NOTES.md
 * v14, v15); the block's sum of logZ into blockll; lane 0's counts into
 * npairs ([0]: pairs in the statistics, [1]: candidates scored; profiling,
 * [1] the back-off too).
 */
__device__ __forceinline__ void exact_finish(int hk, const int *shist, int32_t *__restrict__ hist, double mine,
											 double *lsum, double *__restrict__ blockll,
											 unsigned long long *__restrict__ npairs, unsigned long long pairs,
											 unsigned long long cands, int lane)
{
	if (hk > 0)
	{
		__syncthreads();
		for (int i = threadIdx.x; i < hk; i += blockDim.x)
			if (shist[i])
				atomicAdd(hist + i, shist[i]);
	}
	block_sum_fixed<EXACT_WARPS>(mine, lsum, blockll ? blockll + blockIdx.x : nullptr);
	if (npairs && lane == 0)
	{
		atomicAdd(npairs, pairs);
		atomicAdd(npairs + 1, cands);
	}
}

/*
 * Exact scores and statistics (step 2 above).  A warp per row (rows handed out
 * by tickets, below); lane l holds the row's features 4l .. 4l + 3
 * (D <= 128).  Lane j keeps the scores of list entries j and 32 + j and of
 * screen-flagged components j and 32 + j (at most SPARSE_FMAX; with fold,
 * logZ already holds the log-sum-exp of the others, flagged ones); scores are computed four at a time
 * (independent shuffle sums).  The screen-flagged components' means are in
 * shared memory (read by every row).  At most 64 registers, for four blocks
 * (32 warps) an SM: ncu found it latency-bound at three (71 registers; 12.6
 * cycles per issued instruction, 55% of cycles with no eligible warp).
 * DIAG: the covariance (dr.diag); DC: the row length when fixed at compile
 * time (128: a float4 a lane, no bounds checks), else 0 (D_ at run time).
 * ncu (v12): with D and the covariance at run time, 1220 warp instructions
 * a spherical row (5.7 candidates, 3.6 pairs), issue-bound (61% of slots);
 * templated, seeded diag 1M x 1024 went 2.81 -> 2.46 ms an iteration with
 * exact_div.
 */
template <bool DIAG, int DC>
__global__ void __launch_bounds__(EXACT_WARPS * 32, 4)
sparse_exact_kernel(const float *__restrict__ X, int64_t nrows, int D_, Direct dr, const int *__restrict__ sfidx, int nsf,
					int fold, int32_t *__restrict__ cand, const int32_t *__restrict__ count, float *__restrict__ logZ,
					double *__restrict__ blockll, int stats, float *__restrict__ psx, double *__restrict__ bnk,
					double *__restrict__ bsxn, unsigned long long *__restrict__ npairs, int cap, int32_t *__restrict__ hist,
					int hk, int rmode, float rmin)
{
	const int D = DC > 0 ? DC : D_;
	extern __shared__ float4 fsm4[];
	__shared__ double lsum[EXACT_WARPS];
	/* the block's pairs a component (hk > 0: hist's first hk bins counted here, added once at the end) */
	int *shist = reinterpret_cast<int *>(reinterpret_cast<char *>(fsm4) + FlagSet::bytes(nsf, D, DIAG));
	for (int i = threadIdx.x; i < hk; i += blockDim.x)
		shist[i] = 0;	/* (visible after fs.load's barrier) */
	FlagSet fs;
	fs.load(reinterpret_cast<float *>(fsm4), dr, sfidx, nsf, D);
	const int lane = threadIdx.x & 31;
	double mine = 0.0;
	unsigned long long pairs = 0, cands = 0;
	/*
	 * The block's rows (a contiguous share of the launch's) handed out to
	 * its warps one at a time by a shared counter, the next one taken while
	 * this one is scored.  With a fixed stride, rows' varying candidates
	 * left a quarter of the warp samples waiting at the block's final
	 * barrier (ncu, v10); one global counter for the whole launch instead
	 * helped the spherical fits (exact step 4.06 -> 3.62 ms) and slowed the
	 * diag ones (1.34 -> 1.68: 65k atomics on one address a launch); global
	 * pieces of 4 or 16 rows a ticket were no faster (v12).
	 */
	__shared__ int rtick;
	if (threadIdx.x == 0)
		rtick = 0;
	__syncthreads();
	const int64_t share = (nrows + gridDim.x - 1) / gridDim.x, r0 = (int64_t) blockIdx.x * share,
				  r1 = min(nrows, r0 + share);
	int tn = 0;
	auto ticket = [&]() {
		int t = 0;
		if (lane == 0)
			t = atomicAdd(&rtick, 1);
		return t;
	};
	auto row_of = [&](int t) { return r0 + __shfl_sync(0xffffffffu, t, 0); };
	for (int64_t row = row_of(ticket()); row < r1; row = row_of(tn))
	{
		tn = ticket();
		float x[4];
		load4(X + row * D, D, lane, x);
		/* exact scores of the (warp-uniform) components ks[0..4), -1 = none: every lane gets them */
		auto score4 = [&](const int (&ks)[4], float (&s)[4]) {
			float q[4];
#pragma unroll
			for (int u = 0; u < 4; u++)
			{
				q[u] = 0.f;
				if (ks[u] >= 0)
				{
					float mv[4], vv[4];
					load4(dr.mu + (int64_t) ks[u] * D, D, lane, mv);
					if (DIAG)
						load4(dr.var + (int64_t) ks[u] * D, D, lane, vv);
#pragma unroll
					for (int i = 0; i < 4; i++)
					{
						const float t = x[i] - mv[i];	/* (0 past D) */
						if (DIAG)	/* (direct_score's arithmetic) */
							q[u] += 4 * lane + i < D ? exact_div(t * t, vv[i]) : 0.f;
						else
							q[u] = fmaf(t, t, q[u]);
					}
				}
			}
			warp_sum4(q);
#pragma unroll
			for (int u = 0; u < 4; u++)
				s[u] = ks[u] < 0 ? NEG_INF
						: __ldg(dr.cdir + ks[u]) - 0.5f * (DIAG ? q[u] : exact_div(q[u], __ldg(dr.var + ks[u])));
		};
		const int n = __ldg(count + row);
		if (n > cap)	/* (cap <= SPARSE_CAP: the lists' stride) */
			continue;	/* an overflowed list: the dense pass scores this row (EStep::run_sparse) */
		cands += n;
		/* the lane's entries: list slots lane, lane + 32; screen-flagged lane, lane + 32 */
		int kc[2];
		float sc[2], sf[2];
#pragma unroll
		for (int u = 0; u < 2; u++)
		{
			const int j = lane + 32 * u;
			kc[u] = j < n ? __ldg(cand + row * cap + j) : -1;
			sc[u] = NEG_INF;
			sf[u] = NEG_INF;
		}
		float M = NEG_INF, L = 0.f;	/* the lane's online log-sum-exp */
		if (fold && lane == 0)
		{
			/* logZ holds the log-sum-exp of the flagged components past the FlagSet (flag_lse_kernel) */
			const float z = __ldg(logZ + row);
			if (z > NEG_INF)
				M = z, L = 1.f;
		}
		auto add = [&](float s) { lse_add(M, L, s); };
		{
#pragma unroll
			for (int u = 0; u < 2; u++)
			{
				const int lim = min(n - 32 * u, 32);
				for (int j = 0; j < lim; j += 4)
				{
					int ks[4];
					float s4[4];
#pragma unroll
					for (int v = 0; v < 4; v++)
						ks[v] = __shfl_sync(0xffffffffu, kc[u], (j + v) & 31);
#pragma unroll
					for (int v = 0; v < 4; v++)
						if (j + v >= lim)
							ks[v] = -1;
					score4(ks, s4);
#pragma unroll
					for (int v = 0; v < 4; v++)
						if (lane == j + v)
							sc[u] = s4[v];
				}
				if (lim > 0)	/* (warp-uniform: n is the row's) */
					add(sc[u]);
			}
		}
		if (nsf > 0)
		{
			/* the screen-flagged components that may count against the best so far (FlagSet::may_count) */
			float zlo = M;
#pragma unroll
			for (int o = 16; o > 0; o >>= 1)
				zlo = fmaxf(zlo, __shfl_xor_sync(0xffffffffu, zlo, o));
			const float xn = row_norm(x);
#pragma unroll
			for (int u = 0; u < 2; u++)
			{
				fs.each_counting(32 * u, xn, zlo, x, lane, [&](const int (&ks)[4], const float (&s4)[4]) {
#pragma unroll
					for (int v = 0; v < 4; v++)
						if (ks[v] == 32 * u + lane)
							sf[u] = s4[v];
				});
				add(sf[u]);
			}
		}
		/* the row's logZ from the lanes' (M, L) */
		float Mr = M;
#pragma unroll
		for (int o = 16; o > 0; o >>= 1)
			Mr = fmaxf(Mr, __shfl_xor_sync(0xffffffffu, Mr, o));
		const float lz = Mr + __logf(warp_sum(M == NEG_INF ? 0.f : L * __expf(M - Mr)));
		if (lane == 0)
		{
			logZ[row] = lz;
			mine += (double) lz;
		}
		if (!stats)
			continue;

		/*
		 * Statistics of the pairs with r >= rmin (SPARSE_RMIN; not the
		 * three-product-flagged: flag_stats_kernel), around the component's
		 * mean, t = x - mu_k: sum r t [, sum r t^2] (FP32, psx: Kp x Wd),
		 * sum r and (spherical) sum r ||t||^2 (FP64, bnk, bsxn), for this
		 * block of rows; flush_sparse_kernel turns them into sums of x.
		 * Sums around the mean keep the variance's cancellation out of FP32.
		 */
		auto accumulate = [&](int k, float r) { pair_atomic<DIAG>(x, dr.mu, D, k, r, lane, psx, bnk, bsxn); };
		/* lanes holding a pair (k, s) that counts: one warp-wide accumulate per pair */
		auto emit = [&](int k, float s) {
			const float r = __expf(s - lz);
			const bool keep = k >= 0 && r >= rmin && !__ldg(dr.flag + k);
			uint32_t b = __ballot_sync(0xffffffffu, keep);
			pairs += __popc(b);
			while (b)
			{
				const int j = __ffs(b) - 1;
				b &= b - 1;
				accumulate(__shfl_sync(0xffffffffu, k, j), __shfl_sync(0xffffffffu, r, j));
			}
		};
		if (hist && n <= sort_rows_max(cap))	/* sorted statistics: the list's entries are all in lane j < n <= 32 */
			pairs += __popc(__ballot_sync(0xffffffffu, sorted_entry(cand, row, cap, lane, n, kc[0], sc[0], lz, dr, rmode,
																   rmin, hk, shist, hist)));
		else	/* (only the slots that hold entries: each emit is an exp, a flag load and a vote) */
#pragma unroll
			for (int u = 0; u < 2; u++)
				if (n > 32 * u)
					emit(kc[u], sc[u]);
#pragma unroll
		for (int u = 0; u < 2; u++)
			if (nsf > 32 * u)
			{
				const int f = 32 * u + lane;
				emit(f < nsf ? __ldg(sfidx + f) : -1, sf[u]);
			}
	}
	exact_finish(hk, shist, hist, mine, lsum, blockll, npairs, pairs, cands, lane);
}

/*
 * The exact kernel with two rows a warp (EXACT2), where every list is
 * sorted or there are no statistics, no component is screen-flagged and
 * D = 128: the case of the large tables (lists of at most 32; 10M x 1024
 * diag).  Half-warp h (lanes 16 h ..) holds row 2 i + h of the warp's
 * ticket, eight features a lane (two 16-byte loads), list entries hl and
 * hl + 16 (hl = lane & 15).  What one row a warp spent on its own, two
 * rows now share: the ticket, the loop over candidates (to the longer
 * list of the two), and every reduction, which is four levels over 16 lanes
 * instead of five over 32.  The four candidates' sums of a group are
 * reduced and scattered at once (reduce_scatter4): lane hl ends with the sum
 * of candidate hl & 3, the one whose list entry it holds, in five shuffles
 * instead of sixteen (twenty for the one-row kernel's row).  The arithmetic
 * of each score is the one-row kernel's (direct_score's: sum (x - mu)^2 /
 * var by exact_div), summed in another order.  Why (ncu, v12): the one-row kernel is issue-bound, 630
 * warp instructions a row for 1.2 candidates, of which a group of four
 * candidates is 172 and the row's own work 290.
 */
__device__ __forceinline__ float reduce_scatter4(const float (&q)[4], int hl)
{
	const bool b0 = hl & 1, b1 = hl & 2;
	/* xor 1: keep the values of this lane's parity (b0, 2 + b0), send the others */
	const float a0 = (b0 ? q[1] : q[0]) + __shfl_xor_sync(0xffffffffu, b0 ? q[0] : q[1], 1);
	const float a1 = (b0 ? q[3] : q[2]) + __shfl_xor_sync(0xffffffffu, b0 ? q[2] : q[3], 1);
	/* xor 2: keep value b0 + 2 b1 */
	float c = (b1 ? a1 : a0) + __shfl_xor_sync(0xffffffffu, b1 ? a0 : a1, 2);
	c += __shfl_xor_sync(0xffffffffu, c, 4);
	return c + __shfl_xor_sync(0xffffffffu, c, 8);
}

template <bool DIAG>
__global__ void __launch_bounds__(EXACT_WARPS * 32, 4)
sparse_exact2_kernel(const float *__restrict__ X, int64_t nrows, Direct dr, int32_t *__restrict__ cand,
					 const int32_t *__restrict__ count, float *__restrict__ logZ, double *__restrict__ blockll,
					 int stats, unsigned long long *__restrict__ npairs, int cap, int32_t *__restrict__ hist, int hk,
					 int rmode, float rmin)
{
	constexpr int D = 128;
	extern __shared__ float4 fsm4[];
	__shared__ double lsum[EXACT_WARPS];
	int *shist = reinterpret_cast<int *>(fsm4);	/* the block's pairs a component (as sparse_exact_kernel's) */
	for (int i = threadIdx.x; i < hk; i += blockDim.x)
		shist[i] = 0;
	__shared__ int rtick;
	if (threadIdx.x == 0)
		rtick = 0;
	__syncthreads();
	const int lane = threadIdx.x & 31, hl = lane & 15, half = lane >> 4;
	double mine = 0.0;
	unsigned long long pairs = 0, cands = 0;
	/* the block's contiguous share of rows, two a ticket (sparse_exact_kernel's tickets) */
	const int64_t share = (nrows + gridDim.x - 1) / gridDim.x, r0 = (int64_t) blockIdx.x * share,
				  r1 = min(nrows, r0 + share);
	auto ticket = [&]() {
		int t = 0;
		if (lane == 0)
			t = atomicAdd(&rtick, 2);
		return t;
	};
	int tn = 0;
	for (int64_t pr = r0 + __shfl_sync(0xffffffffu, ticket(), 0); pr < r1; pr = r0 + __shfl_sync(0xffffffffu, tn, 0))
	{
		tn = ticket();
		const int64_t row = pr + half;
		const bool live = row < r1;
		const int cnt = live ? __ldg(count + row) : 0;
		const int n = cnt <= cap ? cnt : 0;	/* an overflowed list: the dense pass scores this row (EStep::run_sparse) */
		float x[8];
		{
			const float4 *xr = reinterpret_cast<const float4 *>(X + (live ? row : r0) * D) + 2 * hl;
			const float4 a = __ldg(xr), b = __ldg(xr + 1);
			x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
		}
		cands += n;
		int kc[2];
		float sc[2] = {NEG_INF, NEG_INF};
#pragma unroll
		for (int u = 0; u < 2; u++)
		{
			const int j = hl + 16 * u;
			kc[u] = j < n ? __ldg(cand + row * cap + j) : -1;
		}
		/* the longer list of the two (warp-uniform) */
		const int nmax = max(n, __shfl_xor_sync(0xffffffffu, n, 16));
		for (int j = 0; j < nmax; j += 4)
		{
			const int u = j >> 4;	/* (uniform: entries j .. j + 3 are in the same register) */
			int ks[4];
#pragma unroll
			for (int v = 0; v < 4; v++)
			{
				ks[v] = __shfl_sync(0xffffffffu, u ? kc[1] : kc[0], (j + v) & 15, 16);
				if (j + v >= n)
					ks[v] = -1;
			}
			float q[4];
#pragma unroll
			for (int v = 0; v < 4; v++)
			{
				q[v] = 0.f;
				if (ks[v] >= 0)
				{
					const float4 *mp = reinterpret_cast<const float4 *>(dr.mu + (int64_t) ks[v] * D) + 2 * hl;
					const float4 ma = __ldg(mp), mb = __ldg(mp + 1);
					const float mv[8] = {ma.x, ma.y, ma.z, ma.w, mb.x, mb.y, mb.z, mb.w};
					if (DIAG)
					{
						const float4 *vp = reinterpret_cast<const float4 *>(dr.var + (int64_t) ks[v] * D) + 2 * hl;
						const float4 va = __ldg(vp), vb = __ldg(vp + 1);
						const float vv[8] = {va.x, va.y, va.z, va.w, vb.x, vb.y, vb.z, vb.w};
#pragma unroll
						for (int i = 0; i < 8; i++)
						{
							const float t = x[i] - mv[i];
							q[v] += exact_div(t * t, vv[i]);
						}
					}
					else
#pragma unroll
						for (int i = 0; i < 8; i++)
						{
							const float t = x[i] - mv[i];
							q[v] = fmaf(t, t, q[v]);
						}
				}
			}
			/* lane hl: the sum of candidate j + (hl & 3), its entry's when hl is in j .. j + 3 (mod 16) */
			const float qs = reduce_scatter4(q, hl);
			const int v = hl & 3;
			const int k = v == 0 ? ks[0] : v == 1 ? ks[1] : v == 2 ? ks[2] : ks[3];
			if ((hl & ~3) == (j & 15) && k >= 0)
			{
				const float s = __ldg(dr.cdir + k) - 0.5f * (DIAG ? qs : exact_div(qs, __ldg(dr.var + k)));
				if (u)
					sc[1] = s;
				else
					sc[0] = s;
			}
		}
		/* the row's logZ: the lanes' log-sum-exp over the half */
		float M = NEG_INF, L = 0.f;
		lse_add(M, L, sc[0]);
		lse_add(M, L, sc[1]);
		float Mr = M;
#pragma unroll
		for (int o = 8; o > 0; o >>= 1)
			Mr = fmaxf(Mr, __shfl_xor_sync(0xffffffffu, Mr, o));
		float ls = M == NEG_INF ? 0.f : L * __expf(M - Mr);
#pragma unroll
		for (int o = 8; o > 0; o >>= 1)
			ls += __shfl_xor_sync(0xffffffffu, ls, o);
		const float lz = Mr + __logf(ls);
		if (hl == 0 && live && cnt <= cap)
		{
			logZ[row] = lz;
			mine += (double) lz;
		}
		if (!stats)
			continue;
		/* sorted statistics (every list here has at most 32 entries), entry j in lane j % 16 of its half */
#pragma unroll
		for (int u = 0; u < 2; u++)
			pairs += __popc(__ballot_sync(0xffffffffu, sorted_entry(cand, row, cap, hl + 16 * u, n, kc[u], sc[u], lz, dr,
																   rmode, rmin, hk, shist, hist)));
	}
	cands += __shfl_down_sync(0xffffffffu, cands, 16);	/* (lane 0: both halves' rows) */
	exact_finish(hk, shist, hist, mine, lsum, blockll, npairs, pairs, cands, lane);
}

/*
 * Sorted statistics: the exact kernel's pairs summed a component at a time.
 *
 * Why: the exact kernel added each pair's sums by 16-byte FP32 atomics into
 * psx, 32 a pair (64 diag).  At 10M x 1024 diag (4.6 pairs a row) those
 * atomics took 39 of the exact step's 51 ms a pass (H100, stop 18: the same
 * launch without them 11.8 ms), at the L2's atomic rate.  Here the block's
 * pairs are put in component order (a counting sort: hist, pair_offsets,
 * pair_scatter), and pair_sums_kernel sums runs of one component's pairs in
 * registers, reading each pair's row again (512 bytes at D = 128: from L2
 * where the block's rows still are), with one atomic per lane a run.
 *
 * The pairs: entry j of row i's list (component cand[i cap + j]), for rows
 * with at most sort_rows_max(cap) = 32 entries (longer ones take the exact
 * kernel's atomics); its r in cand[i cap + cap / 2 + j] (0: not counted)
 * where the list has room (lists of 64), else scored again in the sums
 * (SORT_R_RESCORE: lists of 32), or packed into the entry (SORT_R_PACKED);
 * a pair is named by its entry's index
 * i cap + j.  pidx holds pcap of them; pairs past pcap go by atomics in the
 * scatter.
 */

/*
 * List entry e (row e / cap, slot e % cap) as a pair by rmode: its component
 * k and r, from the entry (SORT_R_PACKED) or the list's second half
 * (SORT_R_HALF); SORT_R_RESCORE: 1 if counted (the component not flagged),
 * r itself comes later.  r = 0: not counted.
 */
__device__ __forceinline__ void entry_pair(const int32_t *__restrict__ cand, int64_t e, int cap, int rmode,
										   const int *__restrict__ flag, int &k, float &r)
{
	const int32_t ent = __ldg(cand + e);
	k = rmode == SORT_R_PACKED ? pair_k(ent) : ent;
	if (rmode == SORT_R_PACKED)
		r = pair_r(ent);
	else if (rmode == SORT_R_RESCORE)
		r = __ldg(flag + k) ? 0.f : 1.f;
	else
		r = __int_as_float(__ldg(cand + e + cap / 2));
}

/* components up to which the exact and scatter kernels count pairs in shared memory (4 bytes each), else globally */
constexpr int SORT_BINS_MAX = 8192;

/* the warp's inclusive prefix sum of v (lane l: v of lanes 0..l) */
__device__ __forceinline__ int32_t warp_incl_scan(int32_t v, int lane)
{
#pragma unroll
	for (int o = 1; o < 32; o <<= 1)
	{
		const int32_t t = __shfl_up_sync(0xffffffffu, v, o);
		if (lane >= o)
			v += t;
	}
	return v;
}

/* exclusive prefix sums of hist[0..Kp) into off; hist and cur zeroed; *total: their sum.  One block of 1024 threads. */
__global__ void __launch_bounds__(1024)
pair_offsets_kernel(int32_t *__restrict__ hist, int32_t *__restrict__ off, int32_t *__restrict__ cur, int Kp,
					int32_t *__restrict__ total)
{
	__shared__ int32_t wsum[32], ctot;
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int32_t carry = 0;	/* the sum of the chunks before */
	for (int k0 = 0; k0 < Kp; k0 += 1024)
	{
		const int k = k0 + threadIdx.x;
		const int32_t v = k < Kp ? hist[k] : 0;
		const int32_t inc = warp_incl_scan(v, lane);
		if (lane == 31)
			wsum[warp] = inc;
		__syncthreads();
		if (warp == 0)
		{
			const int32_t w = wsum[lane], wi = warp_incl_scan(w, lane);
			wsum[lane] = wi - w;	/* exclusive over the warps */
			if (lane == 31)
				ctot = wi;
		}
		__syncthreads();
		if (k < Kp)
		{
			off[k] = carry + wsum[warp] + inc - v;
			hist[k] = 0;
			cur[k] = 0;
		}
		carry += ctot;
		__syncthreads();	/* (wsum and ctot reused by the next chunk) */
	}
	if (threadIdx.x == 0)
		*total = carry;
}

/*
 * The counted pairs of each row into component order: pidx[off[k] + c] for
 * component k's c-th (in no fixed order).  A block takes a contiguous share
 * of the rows, SCATTER_LANES lanes a row (SCATTER_ROWS rows a warp at a
 * time, entries sub, sub + SCATTER_LANES, .. of the row's list in lane sub
 * of its group); rows with more than sort_rows_max(cap) entries (or
 * overflowed) kept their pairs out (the exact kernel's atomics, or the
 * dense pass).  With hk > 0 (bins for every component in shared memory) the
 * block counts its pairs a component, reserves each component's range by
 * one atomic on cur, then places them by shared atomics: a global atomic a
 * pair on Kp cursors took 6.7 ms a pass at 10M x 1024 diag.  Pairs past
 * pcap are added here by atomics (pair_atomic, the warp on one pair at a
 * time).  (A warp a row, before: 2.65 ms a pass at 10M x 1024 diag for 1.5
 * pairs a row, each row's count and list a chain of dependent loads with
 * 31 lanes idle: NOTES v19.)
 */
constexpr int SCATTER_LANES = 8;
constexpr int SCATTER_ROWS = 32 / SCATTER_LANES;
template <bool DIAG, int DC>
__global__ void __launch_bounds__(EXACT_WARPS * 32)
pair_scatter_kernel(const float *__restrict__ X, int64_t nrows, int D_, const float *__restrict__ mu,
					const int32_t *__restrict__ cand, const int32_t *__restrict__ count, int cap, int rmode,
					const int32_t *__restrict__ off, int32_t *__restrict__ cur, int32_t *__restrict__ pidx, int64_t pcap,
					float *__restrict__ psx, double *__restrict__ bnk, double *__restrict__ bsxn, int hk,
					const float *__restrict__ lz, Direct dr, float rmin)
{
	extern __shared__ int sbin[];	/* [hk] */
	const int D = DC > 0 ? DC : D_;
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane % SCATTER_LANES;
	const int64_t share = (nrows + gridDim.x - 1) / gridDim.x, r0 = (int64_t) blockIdx.x * share,
				  r1 = min(nrows, r0 + share);
	/*
	 * fn(row, j, k, r) for entry j of each row of the block's share this lane
	 * holds (k = -1, r = 0 where none); warp-uniform calls, so fn may shuffle
	 */
	auto each_entry = [&](auto fn) {
		for (int64_t rb = r0 + (int64_t) warp * SCATTER_ROWS; rb < r1; rb += EXACT_WARPS * SCATTER_ROWS)
		{
			const int64_t row = rb + lane / SCATTER_LANES;
			int n = row < r1 ? __ldg(count + row) : 0;
			if (n > sort_rows_max(cap))
				n = 0;
			int nmax = n;
#pragma unroll
			for (int o = SCATTER_LANES; o < 32; o <<= 1)
				nmax = max(nmax, __shfl_xor_sync(0xffffffffu, nmax, o));
			for (int j0 = 0; j0 < nmax; j0 += SCATTER_LANES)
			{
				const int j = j0 + sub;
				int k = -1;
				float r = 0.f;
				if (j < n)
					entry_pair(cand, row * cap + j, cap, rmode, dr.flag, k, r);
				fn(row, j, k, r);
			}
		}
	};
	if (hk > 0)
	{
		for (int i = threadIdx.x; i < hk; i += blockDim.x)
			sbin[i] = 0;
		__syncthreads();
		each_entry([&](int64_t, int, int k, float r) {
			if (r > 0.f)
				atomicAdd(sbin + k, 1);
		});
		__syncthreads();
		for (int i = threadIdx.x; i < hk; i += blockDim.x)
			if (sbin[i])
				sbin[i] = __ldg(off + i) + atomicAdd(cur + i, sbin[i]);
		__syncthreads();
	}
	each_entry([&](int64_t row, int j, int k, float r) {
		const bool keep = r > 0.f;
		int64_t pos = -1;
		if (keep)
		{
			pos = hk > 0 ? atomicAdd(sbin + k, 1) : (int64_t) __ldg(off + k) + atomicAdd(cur + k, 1);
			if (pos < pcap)
				pidx[pos] = (int32_t) (row * cap + j);
		}
		/* past pcap: the warp adds each such pair by atomics, its row's x loaded by every lane */
		uint32_t b = __ballot_sync(0xffffffffu, keep && pos >= pcap);
		while (b)
		{
			const int l = __ffs(b) - 1;
			b &= b - 1;
			const int64_t rl = __shfl_sync(0xffffffffu, row, l);
			const int kj = __shfl_sync(0xffffffffu, k, l);
			float rj = __shfl_sync(0xffffffffu, r, l);
			float x[4];
			load4(X + rl * D, D, lane, x);
			if (rmode == SORT_R_RESCORE)
			{
				rj = __expf(pair_score<DIAG>(x, dr, D, kj, lane) - __ldg(lz + rl));
				if (!(rj >= rmin))	/* (warp-uniform) */
					continue;
			}
			pair_atomic<DIAG>(x, mu, D, kj, rj, lane, psx, bnk, bsxn);
		}
	});
}

/* pairs a warp sums in pair_sums_kernel (then the next warps' turn) */
constexpr int PAIR_RUN = 128;
/* rows pair_sums_kernel loads ahead (their loads in flight together) */
#ifndef FGC_PAIR_AHEAD
#define FGC_PAIR_AHEAD 4
#endif
constexpr int PAIR_AHEAD = FGC_PAIR_AHEAD;

/*
 * The sorted pairs' statistics: warp w sums pairs pidx[w PAIR_RUN ..) in
 * order, keeping the sums of the current component in registers (lane l:
 * features 4l .. 4l + 3; sum r and r ||t||^2 in FP64) and adding them to
 * psx, bnk, bsxn (psx_add, FP64 atomics) when the component changes and at
 * the run's end: about one add a run instead of one a pair.  Rows are read
 * PAIR_AHEAD pairs ahead (their loads in flight together).
 */
template <bool DIAG, int DC>
__global__ void __launch_bounds__(EXACT_WARPS * 32)
pair_sums_kernel(const float *__restrict__ X, int D_, const float *__restrict__ mu, const int32_t *__restrict__ cand,
				 int cap, int rmode, const int32_t *__restrict__ pidx, const int32_t *__restrict__ total, int64_t pcap,
				 float *__restrict__ psx, double *__restrict__ bnk, double *__restrict__ bsxn, const float *__restrict__ lz,
				 Direct dr, float rmin)
{
	const int D = DC > 0 ? DC : D_;
	const int lane = threadIdx.x & 31;
	const int64_t np = min((int64_t) __ldg(total), pcap);
	const int64_t nw = (int64_t) gridDim.x * EXACT_WARPS;
	for (int64_t p0 = ((int64_t) blockIdx.x * EXACT_WARPS + (threadIdx.x >> 5)) * PAIR_RUN; p0 < np; p0 += nw * PAIR_RUN)
	{
		const int64_t p1 = min(p0 + PAIR_RUN, np);
		int kc = -1;	/* the component being summed */
		float mv[4] = {0.f, 0.f, 0.f, 0.f}, a[4] = {0.f, 0.f, 0.f, 0.f}, b[4] = {0.f, 0.f, 0.f, 0.f};
		double sr = 0.0, sq = 0.0;	/* sum r; sum r ||t||^2 over the lane's features (spherical) */
		auto flush = [&]() {
			psx_add<DIAG>(psx, D, kc, lane, a, b);
			if (!DIAG)
			{
#pragma unroll
				for (int o = 16; o > 0; o >>= 1)
					sq += __shfl_xor_sync(0xffffffffu, sq, o);
			}
			if (lane == 0)
			{
				atomicAdd(bnk + kc, sr);
				if (!DIAG)
					atomicAdd(bsxn + kc, sq);
			}
#pragma unroll
			for (int i = 0; i < 4; i++)
				a[i] = b[i] = 0.f;
			sr = sq = 0.0;
		};
		for (int64_t g = p0; g < p1; g += 32)
		{
			/* lane i: pair g + i's entry, component, r */
			const int m = (int) min((int64_t) 32, p1 - g);
			int e = 0, k = -1;
			float r = 0.f;
			if (lane < m)
			{
				e = __ldg(pidx + g + lane);
				entry_pair(cand, e, cap, rmode, dr.flag, k, r);	/* (SORT_R_RESCORE: scored below) */
			}
			for (int j0 = 0; j0 < m; j0 += PAIR_AHEAD)
			{
				float x[PAIR_AHEAD][4], lzu[PAIR_AHEAD];
#pragma unroll
				for (int u = 0; u < PAIR_AHEAD; u++)
				{
					const int eu = __shfl_sync(0xffffffffu, e, (j0 + u) & 31);
					if (j0 + u < m)
					{
						load4(X + (int64_t) (eu / cap) * D, D, lane, x[u]);
						if (rmode == SORT_R_RESCORE)
							lzu[u] = __ldg(lz + eu / cap);
					}
				}
#pragma unroll
				for (int u = 0; u < PAIR_AHEAD; u++)
				{
					if (j0 + u >= m)	/* (warp-uniform) */
						break;
					const int ku = __shfl_sync(0xffffffffu, k, j0 + u);
					float ru = __shfl_sync(0xffffffffu, r, j0 + u);
					if (ku != kc)
					{
						if (kc >= 0)
							flush();
						kc = ku;
						load4(mu + (int64_t) kc * D, D, lane, mv);
					}
					float t[4], tt = 0.f;
#pragma unroll
					for (int i = 0; i < 4; i++)
					{
						t[i] = x[u][i] - mv[i];	/* (0 past D) */
						tt = fmaf(t[i], t[i], tt);
					}
					if (rmode == SORT_R_RESCORE)
					{
						/* the exact kernel's score and r (the fallback's: the model's rows read again) */
						ru = __expf(pair_score<DIAG>(x[u], dr, D, ku, lane) - lzu[u]);
						if (!(ru >= rmin))	/* (warp-uniform) */
							continue;
					}
#pragma unroll
					for (int i = 0; i < 4; i++)
					{
						a[i] = fmaf(ru, t[i], a[i]);
						b[i] = fmaf(ru * t[i], t[i], b[i]);
					}
					sr += (double) ru;
					if (!DIAG)
						sq += (double) ru * (double) tt;
				}
			}
		}
		if (kc >= 0)
			flush();
	}
}

/* -inf into v[0..n) */
__global__ void neg_inf_kernel(float *__restrict__ v, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n; i += (int64_t) gridDim.x * blockDim.x)
		v[i] = NEG_INF;
}

/*
 * The one-pass screen's seeds (wg::Screen::best) kept as FP16 for tables
 * whose FP32 seeds would not fit (EStep::run_sparse): a block's seeds to
 * FP32 before its screen, and its bests back after it, rounded down so
 * that a lower bound stays one (below -65504 log2 units: -inf, no seed).
 */
__global__ void seeds_in_kernel(const __half *__restrict__ s16, int64_t n, float *__restrict__ best)
{
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n; i += (int64_t) gridDim.x * blockDim.x)
		best[i] = __half2float(s16[i]);
}
__global__ void seeds_out_kernel(const float *__restrict__ best, int64_t n, __half *__restrict__ s16)
{
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n; i += (int64_t) gridDim.x * blockDim.x)
		s16[i] = __float2half_rd(best[i]);
}

/* a block's overflowed rows (block rows) as the chunk's rows b0 + rows[i], appended at out */
__global__ void offset_rows_kernel(const int32_t *__restrict__ rows, int n, int64_t b0, int64_t *__restrict__ out)
{
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
		out[i] = b0 + rows[i];
}

/* logZ of the overflowed rows (scored by the dense pass, in their gathered order) back to their places */
template <class Idx>
__global__ void scatter_logz_kernel(const float *__restrict__ lzc, const Idx *__restrict__ rows, int n,
									float *__restrict__ logZ)
{
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
		logZ[rows[i]] = lzc[i];
}

/*
 * A block's sums around the means into the FP64 statistics of x (block k =
 * component k), in FP64: with n = sum r, a = sum r t, b = sum r t^2
 * (t = x - mu):  sum r x = a + mu n,  sum r x^2 = b + 2 mu a + mu^2 n,
 * sum r ||x||^2 = sum r ||t||^2 + 2 mu.a + ||mu||^2 n.  Then the block's
 * buffers are zeroed for the next block.
 */
__global__ void __launch_bounds__(128)
flush_sparse_kernel(const float *__restrict__ mu, int D, int diag, float *__restrict__ psx, double *__restrict__ bnk,
					double *__restrict__ bsxn, double *__restrict__ sx, double *__restrict__ nk,
					double *__restrict__ sxn)
{
	const int k = blockIdx.x, Wd = diag ? 2 * D : D;
	const double n = bnk[k];
	__shared__ double red[128];
	double q = 0.0;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
	{
		const double m = mu[(int64_t) k * D + d], a = psx[(int64_t) k * Wd + d];
		sx[(int64_t) k * Wd + d] += a + m * n;
		psx[(int64_t) k * Wd + d] = 0.f;
		if (diag)
		{
			const double b = psx[(int64_t) k * Wd + D + d];
			sx[(int64_t) k * Wd + D + d] += b + 2.0 * m * a + m * m * n;
			psx[(int64_t) k * Wd + D + d] = 0.f;
		}
		else
			q += 2.0 * m * a + m * m * n;
	}
	red[threadIdx.x] = q;
	__syncthreads();
	for (int o = 64; o > 0; o >>= 1)
	{
		if (threadIdx.x < o)
			red[threadIdx.x] += red[threadIdx.x + o];
		__syncthreads();
	}
	if (threadIdx.x == 0)
	{
		nk[k] += n;
		bnk[k] = 0.0;
		if (!diag)
			sxn[k] += bsxn[k] + red[0];
		bsxn[k] = 0.0;
	}
}

}	/* namespace sp */
}	/* namespace fgc */
