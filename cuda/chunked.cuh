/*
 * chunked.cuh - kernels of the "chunked GEMM" E pass (the default when cuBLAS
 * loads; cuda/NOTES.md has the measurements).
 *
 * The fused kernels (kernels.cuh) never hold a score in memory; their own
 * matrix products reach 5-7% of the card.  This variant hands both products
 * to cuBLAS and keeps the score matrix of one block of rows at a time
 * (Rc x K floats, a few MiB: it lives in L2), never N x K:
 *
 *   1. pack_rows_kernel   A = [x | x^2] (score operand, row-major) and
 *                         Y^T = [x | x^2 | ||x||^2 | 1]^T (statistics operand,
 *                         feature-major), split into TF32 hi + lo.
 *   2. cuBLAS TF32 GEMM   S^T = B A^T (K x rows), B = the model's score matrix Wm split
 *                         the same way.  "3xTF32" in one call: A = [a_hi | a_hi | a_lo],
 *                         B = [b_hi | b_lo | b_hi], inner dimension 3 Dp2, so the
 *                         products are hi*hi + hi*lo + lo*hi (about FP32).
 *                         direct_scores_kernel then writes the ill-conditioned
 *                         components' scores from differences.
 *   3. softmax_cols_kernel scores finished (constants, -prec/2 ||x||^2), logZ by an
 *                         online log-sum-exp in FP32, r = exp(s - logZ) rounded to
 *                         TF32 once, written over S^T.
 *   4. cuBLAS TF32 GEMM   T_p += R_p^T Y_p ("2xTF32": r is TF32-exact, y = y_hi + y_lo
 *                         as two column blocks), FP32 over a group of row blocks; the
 *                         block's rows are cut into P slices (a batched GEMM) so that
 *                         the K x 2Ws product has enough thread blocks to fill the
 *                         card.  S^T and Y^T make both operands K-major: the layout
 *                         for which cuBLAS has Hopper (wgmma) TF32 kernels.
 *   5. flush_stats_kernel T into the FP64 statistics (nk, sum r x, sum r x^2 or
 *                         sum r ||x||^2) after each group: FP64 across groups.
 *
 * Every reduction has a fixed order (cuBLAS GEMMs are deterministic for a given
 * shape on a given card), so runs are bit-identical.
 *
 * topk_rows_kernel is the assignment's step 3: top-m components per row and the
 * tempered log-sum-exp from the same finished scores.
 */
#pragma once
#include "kernels.cuh"

namespace fgc {

/* columns of the row operands */
struct ChunkLayout
{
	int D, Dp, Dp2;				/* features, padded to DK, score operand width (Dp or 2 Dp) */
	int L;						/* A / B row width: Dp2 (TF32) or 3 Dp2 (3xTF32) */
	int Wd;						/* statistics columns: D (spherical) or 2 D (diag) */
	int Ws;						/* Wd + ||x||^2 + 1, padded to 4 */
	int W2;						/* Y / T row width: Ws (TF32) or 2 Ws (hi | lo) */
	int split;					/* 1: 3xTF32 scores and 2xTF32 statistics */
	int diag;
};

__device__ __forceinline__ float tf32_hi(float x) { return __uint_as_float(to_tf32(x)); }

constexpr int PACK_TC = 128;	/* feature columns per shared-memory tile in pack_rows_kernel */

/*
 * Block of 32 rows (256 threads).  A (row-major, L floats per row; rows < nr):
 * a warp per row.  Y^T (statistics operand, feature-major: row j of Y^T holds
 * feature j of every row of the block, leading dimension ldy, so that the
 * statistics GEMM reads both operands K-major and gets Hopper's wgmma
 * kernels): lane = row, warps over features; rows nr .. np get zeros (the
 * statistics GEMM runs over np rows, a multiple of its P slices).  Y may be
 * null (assignment).  xn = ||x||^2 in FP32 (sequential in d within a lane,
 * then a fixed shuffle tree).
 */
__global__ void __launch_bounds__(256)
pack_rows_kernel(const float *__restrict__ X, int64_t nr, int64_t np, ChunkLayout c, float *__restrict__ A,
				 float *__restrict__ Y, int64_t ldy, float *__restrict__ xn)
{
	__shared__ float sxn[32];
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const int64_t n0 = (int64_t) blockIdx.x * 32;
	for (int i = w; i < 32; i += 8)
	{
		const int64_t row = n0 + i;
		if (row >= nr)
		{
			if (lane == 0)
				sxn[i] = 0.f;
			continue;
		}
		const float *x = X + row * c.D;
		float *a = A + row * c.L;
		float q = 0.f;
		for (int j = lane; j < c.Dp2; j += 32)
		{
			int d = j < c.Dp ? j : j - c.Dp;
			float v = d < c.D ? __ldg(x + d) : 0.f;
			if (j >= c.Dp)
				v = v * v;
			else
				q = fmaf(v, v, q);
			if (c.split)
			{
				float hi = tf32_hi(v);
				a[j] = hi;
				a[c.Dp2 + j] = hi;
				a[2 * c.Dp2 + j] = v - hi;
			}
			else
				a[j] = v;
		}
#pragma unroll
		for (int o = 16; o > 0; o >>= 1)
			q += __shfl_xor_sync(0xffffffffu, q, o);
		if (lane == 0)
		{
			xn[row] = q;
			sxn[i] = q;
		}
	}
	if (Y == nullptr)
		return;
	/* Y^T: a 32-row tile of x through shared memory (coalesced reads, lane = row for the writes) */
	__shared__ float tile[32][PACK_TC + 1];
	const int64_t row = n0 + lane;
	const bool inpad = row < np, live = row < nr;
	auto put = [&](int j, float v) {
		if (!inpad)
			return;
		if (c.split)
		{
			float hi = tf32_hi(v);
			Y[(int64_t) j * ldy + row] = hi;
			Y[(int64_t) (c.Ws + j) * ldy + row] = v - hi;
		}
		else
			Y[(int64_t) j * ldy + row] = tf32_hi(v);
	};
	for (int c0 = 0; c0 < c.D; c0 += PACK_TC)
	{
		const int cw = min(PACK_TC, c.D - c0);
		__syncthreads();
		for (int i = w; i < 32; i += 8)
		{
			const int64_t r = n0 + i;
			for (int j = lane; j < cw; j += 32)
				tile[i][j] = r < nr ? __ldg(X + r * c.D + c0 + j) : 0.f;
		}
		__syncthreads();
		for (int j = w; j < cw; j += 8)
		{
			float v = tile[lane][j];
			put(c0 + j, v);
			if (c.diag)
				put(c.D + c0 + j, v * v);
		}
	}
	__syncthreads();
	for (int j = c.Wd + w; j < c.Ws; j += 8)
		put(j, !live ? 0.f : j == c.Wd ? (c.diag ? 0.f : sxn[lane]) : j == c.Wd + 1 ? 1.f : 0.f);
}

/* B = split of the model's score matrix Wm (Kp x Dp2): [b_hi | b_lo | b_hi] */
__global__ void pack_model_kernel(const float *__restrict__ Wm, int Kp, ChunkLayout c, float *__restrict__ B)
{
	int64_t total = (int64_t) Kp * c.Dp2;
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < total; i += (int64_t) gridDim.x * blockDim.x)
	{
		int64_t k = i / c.Dp2;
		int j = (int) (i % c.Dp2);
		float v = Wm[i];
		float *b = B + k * c.L;
		if (c.split)
		{
			float hi = tf32_hi(v);
			b[j] = hi;
			b[c.Dp2 + j] = v - hi;
			b[2 * c.Dp2 + j] = hi;
		}
		else
			b[j] = v;
	}
}

constexpr int VPT = 32;			/* most scores per thread held in registers (K <= 256 x VPT) */

/*
 * Reduction over the TPR threads of one row (TPR = 32 .. 256, rows never
 * straddle warps) in a fixed order: xor tree in the warp, then warps in order.
 */
struct MaxOp
{
	__device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp
{
	__device__ float operator()(float a, float b) const { return a + b; }
};
template <int TPR, typename Op>
__device__ __forceinline__ float row_reduce(float v, float *sh, Op op)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
	if (TPR > 32)
	{
		const int w = threadIdx.x >> 5, r0 = (threadIdx.x / TPR) * (TPR / 32);
		__syncthreads();
		if ((threadIdx.x & 31) == 0)
			sh[w] = v;
		__syncthreads();
		v = sh[r0];
		for (int i = 1; i < TPR / 32; i++)
			v = op(v, sh[r0 + i]);
	}
	return v;
}

/* (value, index) argmax, ties to the lower index */
template <int TPR>
__device__ __forceinline__ void row_argmax(float &v, int &k, float *shv, int *shk)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
	{
		float ov = __shfl_xor_sync(0xffffffffu, v, o);
		int ok = __shfl_xor_sync(0xffffffffu, k, o);
		if (ov > v || (ov == v && (unsigned) ok < (unsigned) k))
			v = ov, k = ok;
	}
	if (TPR > 32)
	{
		const int w = threadIdx.x >> 5, r0 = (threadIdx.x / TPR) * (TPR / 32);
		__syncthreads();
		if ((threadIdx.x & 31) == 0)
			shv[w] = v, shk[w] = k;
		__syncthreads();
		v = shv[r0];
		k = shk[r0];
		for (int i = 1; i < TPR / 32; i++)
			if (shv[r0 + i] > v || (shv[r0 + i] == v && (unsigned) shk[r0 + i] < (unsigned) k))
				v = shv[r0 + i], k = shk[r0 + i];
	}
}

/*
 * Scores of the flagged (ill-conditioned) components from differences,
 * written finished into S (element (n, k) at n * srow + k * scol: row-major
 * S or feature-major S^T; the softmax kernels leave flagged columns as they are):
 * one warp per (row, flagged component), lanes over d, a fixed shuffle tree.
 * (The thread that owns a column cannot afford a serial loop over D per row.)
 */
__global__ void __launch_bounds__(256)
direct_scores_kernel(const float *__restrict__ X, int64_t nr, int D, const int *__restrict__ fidx, int nflag, Direct dr,
					 float *__restrict__ S, int64_t srow, int64_t scol)
{
	const int lane = threadIdx.x & 31;
	const int64_t total = nr * nflag;
	for (int64_t w = (int64_t) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); w < total;
		 w += (int64_t) gridDim.x * (blockDim.x >> 5))
	{
		int64_t n = w / nflag;
		int k = fidx[w % nflag];
		const float *x = X + n * D;
		const float *m = dr.mu + (int64_t) k * D;
		float q = 0.f;
		if (dr.diag)
		{
			const float *v = dr.var + (int64_t) k * D;
			for (int d = lane; d < D; d += 32)
			{
				float t = __ldg(x + d) - __ldg(m + d);
				q += t * t / __ldg(v + d);
			}
		}
		else
			for (int d = lane; d < D; d += 32)
			{
				float t = __ldg(x + d) - __ldg(m + d);
				q = fmaf(t, t, q);
			}
#pragma unroll
		for (int o = 16; o > 0; o >>= 1)
			q += __shfl_xor_sync(0xffffffffu, q, o);
		if (!dr.diag)
			q /= __ldg(dr.var + k);
		if (lane == 0)
			S[n * srow + k * scol] = __ldg(dr.cdir + k) - 0.5f * q;
	}
}

/* the TPR threads of a row load its finished scores (k = t + j TPR) */
template <int TPR, int V>
__device__ __forceinline__ void load_scores(float (&v)[V], const float *__restrict__ Srow, int64_t grow, int Kp,
											int sph, const float *__restrict__ colc, const float *__restrict__ colp,
											float xr, const Direct &dr, const float *__restrict__ X, int D, int t)
{
#pragma unroll
	for (int j = 0; j < V; j++)
	{
		int k = t + j * TPR;
		float s = NEG_INF;
		if (k < Kp)
		{
			s = Srow[k];
			if (!(dr.any && dr.flag[k]))	/* flagged: already finished by direct_scores_kernel */
				s = finish_score(s, sph, __ldg(colc + k), __ldg(colp + k), xr);
		}
		v[j] = s;
	}
}

/*
 * Step 3 on S^T (Kp x ld, rows contiguous: the layout the statistics GEMM
 * reads K-major).  Block = 32 rows (lanes) x 32 slices of the components
 * (warps): each thread streams its slice of its row (coalesced across the
 * warp), online log-sum-exp; the 32 partial (max, sum) of a row are merged
 * in slice order.  Then r = exp(s - logZ) rounded to TF32, written in place;
 * rows nr .. np (padding for the statistics GEMM) get r = 0.  hard: one-hot
 * of the argmax (lowest index at ties), logZ = max.  bll[block] = sum of
 * logZ over the block's rows in order.
 */
__global__ void __launch_bounds__(1024)
softmax_cols_kernel(float *__restrict__ S, int64_t ld, int64_t nr, int64_t np, int Kp, int sph,
					const float *__restrict__ colc, const float *__restrict__ colp, const float *__restrict__ xn, int hard,
					float *__restrict__ logZ, double *__restrict__ bll, Direct dr)
{
	__shared__ float pm[32][33], ps[32][33];
	__shared__ int pk[32][33];
	__shared__ float rowlz[32];
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const int64_t row = (int64_t) blockIdx.x * 32 + lane;
	const bool live = row < nr;
	const int chunk = (Kp + 31) / 32;
	const int k0 = w * chunk, k1 = min(Kp, k0 + chunk);
	const float xr = (live && sph) ? xn[row] : 0.f;
	float m = NEG_INF, sum = 0.f;
	int km = 0x7fffffff;
	if (live)
#pragma unroll 8
		for (int k = k0; k < k1; k++)
		{
			float v = S[(int64_t) k * ld + row];
			if (!(dr.any && dr.flag[k]))
				v = finish_score(v, sph, __ldg(colc + k), __ldg(colp + k), xr);
			if (hard)
			{
				if (v > m)
					m = v, km = k;
			}
			else if (v > m)
			{
				sum = (m == NEG_INF ? 0.f : sum * __expf(m - v)) + 1.f;
				m = v;
			}
			else if (v != NEG_INF)
				sum += __expf(v - m);
		}
	pm[w][lane] = m;
	ps[w][lane] = sum;
	pk[w][lane] = km;
	__syncthreads();
	/* every warp merges its lane's row (same order, same result) */
	float M = NEG_INF;
	int KM = 0x7fffffff;
	for (int i = 0; i < 32; i++)
		if (pm[i][lane] > M)
			M = pm[i][lane], KM = pk[i][lane];
	float lz = M;
	if (!hard)
	{
		float L = 0.f;
		for (int i = 0; i < 32; i++)
			if (pm[i][lane] != NEG_INF)
				L += ps[i][lane] * __expf(pm[i][lane] - M);
		lz = M + __logf(L);
	}
	if (row < np)
#pragma unroll 8
		for (int k = k0; k < k1; k++)
		{
			float r = 0.f;
			if (live)
			{
				if (hard)
					r = (k == KM) ? 1.f : 0.f;
				else
				{
					float v = S[(int64_t) k * ld + row];
					if (!(dr.any && dr.flag[k]))
						v = finish_score(v, sph, __ldg(colc + k), __ldg(colp + k), xr);
					float e = v - lz;
					r = e < -RESP_CUT ? 0.f : tf32_hi(__expf(e));
				}
			}
			S[(int64_t) k * ld + row] = r;
		}
	if (w == 0)
	{
		if (live && logZ)
			logZ[row] = lz;
		rowlz[lane] = live ? lz : 0.f;
	}
	__syncthreads();
	if (threadIdx.x == 0)
	{
		double t = 0.0;
		for (int i = 0; i < 32; i++)
			t += (double) rowlz[i];
		bll[blockIdx.x] = t;
	}
}

/*
 * Assignment from finished scores: the top m components of each row
 * (ties to the lower index), their tempered posteriors exp(s/T - logZ_T),
 * kept when j == 0 or > tau (the same rule as assign_kernel / gmm_assign).
 */
template <int TPR, int V>
__global__ void __launch_bounds__(256)
topk_rows_kernel(const float *__restrict__ S, int64_t nr, int Kp, int sph, const float *__restrict__ colc,
				 const float *__restrict__ colp, const float *__restrict__ xn, float invT, int m, float tau,
				 int32_t *__restrict__ out_comp, float *__restrict__ out_resp, double *__restrict__ blockll, Direct dr,
				 const float *__restrict__ X, int D)
{
	constexpr int RPB = 256 / TPR;
	__shared__ float shv[8];
	__shared__ int shk[8];
	__shared__ float rowlz[RPB];
	const int t = threadIdx.x % TPR, rb = threadIdx.x / TPR;
	const int64_t row = (int64_t) blockIdx.x * RPB + rb;
	const bool live = row < nr;
	const int64_t grow = live ? row : 0;
	float v[V];
	load_scores<TPR, V>(v, S + grow * Kp, grow, live ? Kp : 0, sph, colc, colp, sph ? xn[grow] : 0.f, dr, X, D, t);
	float mx = NEG_INF;
#pragma unroll
	for (int j = 0; j < V; j++)
		mx = fmaxf(mx, v[j] * invT);
	mx = row_reduce<TPR>(mx, shv, MaxOp());
	float sum = 0.f;
#pragma unroll
	for (int j = 0; j < V; j++)
		if (v[j] != NEG_INF)
			sum += __expf(v[j] * invT - mx);
	sum = row_reduce<TPR>(sum, shv, SumOp());
	const float lz = mx + __logf(sum);
	for (int q = 0; q < m; q++)
	{
		float bv = NEG_INF;
		int bk = 0x7fffffff;
#pragma unroll
		for (int j = 0; j < V; j++)
			if (v[j] > bv)
				bv = v[j], bk = t + j * TPR;
		row_argmax<TPR>(bv, bk, shv, shk);
		/* the owner removes it from further rounds */
#pragma unroll
		for (int j = 0; j < V; j++)
			if (t + j * TPR == bk)
				v[j] = NEG_INF;
		if (live && t == 0)
		{
			int32_t oc;
			float orr;
			keep_assignment<false>(q, bv != NEG_INF, bv, bk, invT, lz, tau, oc, orr);
			out_comp[row * m + q] = oc;
			if (out_resp)
				out_resp[row * m + q] = orr;
		}
	}
	if (t == 0)
		rowlz[rb] = live ? lz : 0.f;
	__syncthreads();
	if (threadIdx.x == 0 && blockll)
	{
		double s = 0.0;
		for (int i = 0; i < RPB; i++)
			s += (double) rowlz[i];
		blockll[blockIdx.x] = s;
	}
}

/* Step 5: FP64 statistics += sum over the P partial products (fixed order) of T (hi + lo column blocks) */
__global__ void flush_stats_kernel(const float *__restrict__ T, int K, int Kp, int P, ChunkLayout c,
								   double *__restrict__ sx, double *__restrict__ nk, double *__restrict__ sxn)
{
	const int w = c.Wd + 2;
	int64_t total = (int64_t) K * w;
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < total; i += (int64_t) gridDim.x * blockDim.x)
	{
		int k = (int) (i / w), j = (int) (i % w);
		double v = 0.0;
		for (int p = 0; p < P; p++)
		{
			const float *tr = T + ((int64_t) p * Kp + k) * c.W2;
			v += (double) tr[j] + (c.split ? (double) tr[c.Ws + j] : 0.0);
		}
		if (j < c.Wd)
			sx[(int64_t) k * c.Wd + j] += v;
		else if (j == c.Wd)
			sxn[k] += v;
		else
			nk[k] += v;
	}
}

}								/* namespace fgc */
