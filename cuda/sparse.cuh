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
 * Steps, per block of rows (EStep::run_sparse):
 *   1. lse_wg_kernel<SCREEN_MAX> (hopper.cuh): the row's best screened score
 *      s1max, one product x_hi.W_hi per pair (the one-product assignment's
 *      score).  Components a single product cannot score (screen-flagged:
 *      u e_k / sqrt(D) > SCREEN_ERR with u = 2^-11, or already flagged for
 *      three products) get -inf here and are scored exactly in step 3, for
 *      every row.
 *   2. lse_wg_kernel<SCREEN_COLLECT>: the components with s1 >= s1max - W,
 *      W = SPARSE_T + 2 SCREEN_MARGIN nats, into the row's list (at most
 *      SPARSE_CAP; a longer list marks the row as overflowed).
 *   3. sparse_exact_kernel: a warp per row scores its candidates and every
 *      screen-flagged component from the differences in FP32 (direct_score's
 *      arithmetic: sum (x - mu)^2 / var, the engine's most accurate score),
 *      an overflowed row every component; logZ by log-sum-exp over them; then
 *      r = exp(s - logZ) and, for r >= SPARSE_RMIN, the statistics: sum r x
 *      by FP32 atomics into psx (flushed into the FP64 sums after each block
 *      of rows), sum r and sum r ||x||^2 by FP64 atomics.  Components flagged
 *      for three products keep flag_stats_kernel's statistics (from logZ).
 *
 * What is left out, and its bound: a pair outside the window has a true score
 * below best - SPARSE_T when the screen's error is below SCREEN_MARGIN (the
 * screen flags bound it: u e_k / sqrt(D) <= SCREEN_ERR), so it carries r <
 * e^-SPARSE_T; pairs with r < SPARSE_RMIN are left out of the statistics
 * (not of logZ).  Atomics: the statistics' summation order varies run to run;
 * gmm_fit_params.deterministic takes the dense pass.
 */
#pragma once
#include "half.cuh"

namespace fgc {
namespace sp {

constexpr float SPARSE_T = 22.f;		/* nats below the row's best that may still count */
constexpr float SCREEN_MARGIN = 1.f;	/* nats of screen error allowed, at each end */
constexpr double SCREEN_ERR = 0.5;		/* flag threshold on u e_k / sqrt(D) for the screen, nats (sparse_proto.c's) */
constexpr double U_FP16 = 1.0 / 2048.0;	/* the screen operands' unit roundoff */
constexpr int SPARSE_CAP = 64;			/* candidates per row (two per lane) */
constexpr int SPARSE_FMAX = 64;			/* screen-flagged components the exact kernel holds (shared memory) */
constexpr float SPARSE_RMIN = 9.3132257e-10f;	/* 2^-30: smaller responsibilities stay out of the statistics */
constexpr int EXACT_WARPS = 8;

/* c2s = the one-product constants in log2 units, -inf for the screen-flagged components */
__global__ void screen_constants_kernel(const float *__restrict__ colc, const float *__restrict__ colp,
										const int *__restrict__ sflag, int Kp, float *__restrict__ c2s)
{
	for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < Kp; k += gridDim.x * blockDim.x)
	{
		c2s[k] = sflag[k] ? -INFINITY : colc[k] * h16::L2E;
		c2s[Kp + k] = colp[k] * h16::L2E;
	}
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
 * Exact scores and statistics (step 3 above).  A warp per row (rows strided
 * over the grid); lane l holds the row's features l, l + 32, l + 64, l + 96
 * (D <= 128).  Lane j keeps the scores of list entries j and 32 + j and of
 * screen-flagged components j and 32 + j.  The screen-flagged components'
 * means are in shared memory (read by every row).
 */
__global__ void __launch_bounds__(EXACT_WARPS * 32)
sparse_exact_kernel(const float *__restrict__ X, int64_t nrows, int D, int K, Direct dr,
					const int *__restrict__ sfidx, int nsf, const int *__restrict__ sflag,
					const int32_t *__restrict__ cand, const int32_t *__restrict__ count, float *__restrict__ logZ,
					double *__restrict__ blockll, int stats, float *__restrict__ psx, double *__restrict__ nk,
					double *__restrict__ sxn)
{
	extern __shared__ float fmu[];	/* [nsf][D] */
	__shared__ float fc[SPARSE_FMAX], fp[SPARSE_FMAX];	/* their cdir and 1 / var (spherical) */
	__shared__ double lsum[EXACT_WARPS];
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	for (int i = tid; i < nsf * D; i += blockDim.x)
		fmu[i] = __ldg(dr.mu + (int64_t) __ldg(sfidx + i / D) * D + i % D);
	for (int i = tid; i < nsf; i += blockDim.x)
	{
		fc[i] = __ldg(dr.cdir + sfidx[i]);
		fp[i] = 1.f / __ldg(dr.var + sfidx[i]);
	}
	__syncthreads();

	double mine = 0.0;
	for (int64_t row = (int64_t) blockIdx.x * EXACT_WARPS + warp; row < nrows; row += (int64_t) gridDim.x * EXACT_WARPS)
	{
		float x[4];
#pragma unroll
		for (int i = 0; i < 4; i++)
		{
			const int d = lane + 32 * i;
			x[i] = d < D ? __ldg(X + row * D + d) : 0.f;
		}
		/* exact score of component k (a warp-uniform k >= 0), mean from global or shared memory */
		auto score_g = [&](int k) {
			const float *m = dr.mu + (int64_t) k * D;
			float q = 0.f;
#pragma unroll
			for (int i = 0; i < 4; i++)
			{
				const int d = lane + 32 * i;
				const float t = d < D ? x[i] - __ldg(m + d) : 0.f;
				q = fmaf(t, t, q);
			}
			return __ldg(dr.cdir + k) - 0.5f * warp_sum(q) / __ldg(dr.var + k);
		};
		auto score_f = [&](int f) {
			const float *m = fmu + f * D;
			float q = 0.f;
#pragma unroll
			for (int i = 0; i < 4; i++)
			{
				const int d = lane + 32 * i;
				const float t = d < D ? x[i] - m[d] : 0.f;
				q = fmaf(t, t, q);
			}
			return fc[f] - 0.5f * warp_sum(q) * fp[f];
		};
		const int n = __ldg(count + row);
		const bool over = n > SPARSE_CAP;
		/* the lane's entries: list slots lane, lane + 32; screen-flagged lane, lane + 32 */
		int kc[2];
		float sc[2], sf[2];
#pragma unroll
		for (int u = 0; u < 2; u++)
		{
			const int j = lane + 32 * u;
			kc[u] = (!over && j < n) ? __ldg(cand + row * SPARSE_CAP + j) : -1;
			sc[u] = NEG_INF;
			sf[u] = NEG_INF;
		}
		float M = NEG_INF, L = 0.f;	/* the lane's online log-sum-exp */
		auto add = [&](float s) {
			if (s > M)
			{
				L = L * __expf(M - s) + 1.f;
				M = s;
			}
			else if (s > NEG_INF)
				L += __expf(s - M);
		};
		if (!over)
		{
#pragma unroll
			for (int u = 0; u < 2; u++)
			{
				const int lim = min(n - 32 * u, 32);
				for (int j = 0; j < lim; j++)
				{
					const int k = __shfl_sync(0xffffffffu, kc[u], j);
					const float s = score_g(k);
					if (lane == j)
						sc[u] = s;
				}
				add(sc[u]);
			}
		}
		else	/* every component but the screen-flagged ones (scored below) */
			for (int k0 = 0; k0 < K; k0 += 32)
			{
				float s = NEG_INF;
				for (int j = 0; j < 32 && k0 + j < K; j++)
				{
					const int k = k0 + j;
					if (__ldg(sflag + k))
						continue;
					const float v = score_g(k);
					if (lane == j)
						s = v;
				}
				add(s);
			}
#pragma unroll
		for (int u = 0; u < 2; u++)
		{
			const int lim = min(nsf - 32 * u, 32);
			for (int j = 0; j < lim; j++)
			{
				const float s = score_f(32 * u + j);
				if (lane == j)
					sf[u] = s;
			}
			add(sf[u]);
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

		/* statistics of the pairs with r >= SPARSE_RMIN (not the three-product-flagged: flag_stats_kernel) */
		float xx = 0.f;
#pragma unroll
		for (int i = 0; i < 4; i++)
			xx = fmaf(x[i], x[i], xx);
		xx = warp_sum(xx);
		auto accumulate = [&](int k, float r) {
#pragma unroll
			for (int i = 0; i < 4; i++)
			{
				const int d = lane + 32 * i;
				if (d < D)
					atomicAdd(psx + (int64_t) k * D + d, r * x[i]);
			}
			if (lane == 0)
			{
				atomicAdd(nk + k, (double) r);
				atomicAdd(sxn + k, (double) r * (double) xx);
			}
		};
		/* lanes holding a pair (k, s) that counts: one warp-wide accumulate per pair */
		auto emit = [&](int k, float s) {
			const float r = __expf(s - lz);
			const bool keep = k >= 0 && r >= SPARSE_RMIN && !__ldg(dr.flag + k);
			uint32_t b = __ballot_sync(0xffffffffu, keep);
			while (b)
			{
				const int j = __ffs(b) - 1;
				b &= b - 1;
				accumulate(__shfl_sync(0xffffffffu, k, j), __shfl_sync(0xffffffffu, r, j));
			}
		};
		if (!over)
		{
#pragma unroll
			for (int u = 0; u < 2; u++)
				emit(kc[u], sc[u]);
		}
		else
			for (int k0 = 0; k0 < K; k0 += 32)
			{
				float s = NEG_INF;
				int kk = -1;
				for (int j = 0; j < 32 && k0 + j < K; j++)
				{
					const int k = k0 + j;
					if (__ldg(sflag + k))
						continue;
					const float v = score_g(k);
					if (lane == j)
						s = v, kk = k;
				}
				emit(kk, s);
			}
#pragma unroll
		for (int u = 0; u < 2; u++)
		{
			const int f = 32 * u + lane;
			emit(f < nsf ? __ldg(sfidx + f) : -1, sf[u]);
		}
	}
	block_sum_fixed<EXACT_WARPS>(mine, lsum, blockll ? blockll + blockIdx.x : nullptr);
}

/* sx += psx (the block's FP32 sums into the FP64 statistics), psx = 0 for the next block */
__global__ void flush_psx_kernel(float *__restrict__ psx, double *__restrict__ sx, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n; i += (int64_t) gridDim.x * blockDim.x)
	{
		sx[i] += (double) psx[i];
		psx[i] = 0.f;
	}
}

}	/* namespace sp */
}	/* namespace fgc */
