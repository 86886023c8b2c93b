/*
 * kernels.cuh - Flash-GMM kernels (tensor cores through mma.sync, sm_80+).
 *
 * Precision (see cuda/NOTES.md for the measurements behind it):
 *   - Score GEMM  [x | x^2] . [prec*mu | -prec/2]^T  (diag) or  x . mu^T
 *     (spherical): TF32 tensor-core products with FP32 accumulation, or
 *     split-TF32 ("3xTF32": a_hi*b_hi + a_hi*b_lo + a_lo*b_hi, about FP32
 *     accuracy) when SPLIT.  X is centred on the device first (by the model's
 *     weighted mean), which keeps ||x||^2 - 2 x.mu + ||mu||^2 from cancelling.
 *   - Per-component constants, ||x||^2, log-sum-exp, exp: FP32 (exp is
 *     __expf; arguments are <= 0 and r below exp(-80) counts as 0).
 *   - Statistics GEMM R^T [x | x^2]: TF32 (or split) products, FP32
 *     accumulation over one block's rows; sum r and sum r ||x||^2 in FP32 per
 *     tile, then FP64.  Across blocks and chunks: FP64, fixed order.
 *   - M-step and the model's derived constants: FP64.
 * Reductions never use atomics: partial statistics per block are summed in a
 * fixed order, so results are bit-for-bit reproducible run to run (the
 * deterministic mode costs nothing).
 *
 * mma.m16n8k8 TF32 fragment layout (g = lane / 4, t = lane % 4):
 *   A (16x8, row): a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)
 *   B (8x8, col):  b0 (k=t, n=g)  b1 (k=t+4, n=g)
 *   C (16x8):      c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
 */
#pragma once
#include <cstdint>
#include <cfloat>
#include <cuda_runtime.h>

namespace fgc {

constexpr int BM = 128;			/* rows per block tile */
constexpr int DK = 32;			/* feature chunk of the score GEMM main loop */
constexpr int LDC = DK + 4;		/* smem stride of chunk tiles: conflict-free A/B fragment loads */
constexpr int NTHREADS = 256;
constexpr int DT = 128;			/* feature slice of the statistics GEMM */
constexpr float RESP_CUT = 80.0f;
constexpr float NEG_INF = -INFINITY;

__device__ __forceinline__ uint32_t to_tf32(float x)
{
	uint32_t u;
	asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(x));
	return u;
}

__device__ __forceinline__ void mma_tf32(float *c, const uint32_t *a, const uint32_t *b)
{
	asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
				 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
				 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
				 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* 2^x, MUFU.EX2 without exp2f's range fix-ups (relative error ~2^-22; x <= 0 where used) */
__device__ __forceinline__ float ex2(float x)
{
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

/*
 * Online log-sum-exp of a row over one tile: the thread's NT x 2 scores s
 * (their maximum over the quad: tmax), tempered by invT; (m, l) the running
 * maximum and sum of exp(s invT - m).  hard keeps only the maximum.  LOG2:
 * scores and m in log2 units (2^x), else natural (e^x).
 */
template <int NT, bool LOG2>
__device__ __forceinline__ void online_lse(float &m, float &l, const float (&s)[NT][2], float tmax, float invT,
										   bool hard)
{
	const float mnew = fmaxf(m, tmax * invT);
	if (mnew == NEG_INF)
		return;
	if (!hard)
	{
		float sum = 0.f;
#pragma unroll
		for (int j = 0; j < NT; j++)
#pragma unroll
			for (int e = 0; e < 2; e++)
				sum += LOG2 ? ex2(s[j][e] * invT - mnew) : __expf(s[j][e] * invT - mnew);
		l = l * (LOG2 ? ex2(m - mnew) : __expf(m - mnew)) + sum;
	}
	m = mnew;
}

/* split x into tf32 hi + tf32 lo */
__device__ __forceinline__ void split_tf32(float x, uint32_t &hi, uint32_t &lo)
{
	hi = to_tf32(x);
	lo = to_tf32(x - __uint_as_float(hi));
}

/* acc += a.b with one or three tensor-core products */
template <bool SPLIT>
__device__ __forceinline__ void mma_f(float *c, const float *af, const float *bf)
{
	if (SPLIT)
	{
		uint32_t ah[4], al[4], bh[2], bl[2];
#pragma unroll
		for (int i = 0; i < 4; i++)
			split_tf32(af[i], ah[i], al[i]);
#pragma unroll
		for (int i = 0; i < 2; i++)
			split_tf32(bf[i], bh[i], bl[i]);
		mma_tf32(c, al, bh);
		mma_tf32(c, ah, bl);
		mma_tf32(c, ah, bh);
	}
	else
	{
		uint32_t a[4], b[2];
#pragma unroll
		for (int i = 0; i < 4; i++)
			a[i] = to_tf32(af[i]);
		b[0] = to_tf32(bf[0]);
		b[1] = to_tf32(bf[1]);
		mma_tf32(c, a, b);
	}
}

/*
 * Statistics product: A = responsibilities, B = [x | x^2].
 *   SPLIT: 3xTF32 (about FP32).
 *   else:  "2xTF32": A is already TF32-exact (r rounded once when written to
 *          shared memory, and sum r uses the same rounded values, so the
 *          weights of the mean and of the second moment agree exactly and
 *          var = E[x^2] - E[x]^2 cannot go negative through rounding); B is
 *          split hi + lo, so x and x^2 keep FP32 accuracy.
 */
template <bool SPLIT>
__device__ __forceinline__ void mma_stats(float *c, const float *af, const float *bf)
{
	if (SPLIT)
		mma_f<true>(c, af, bf);
	else
	{
		uint32_t a[4], bh[2], bl[2];
#pragma unroll
		for (int i = 0; i < 4; i++)
			a[i] = __float_as_uint(af[i]);
#pragma unroll
		for (int i = 0; i < 2; i++)
			split_tf32(bf[i], bh[i], bl[i]);
		mma_tf32(c, a, bl);
		mma_tf32(c, a, bh);
	}
}

/* X[gr][gc .. gc+3], zero past D and for gr >= nrows; one float4 load when the row allows it */
__device__ __forceinline__ float4 load_x4(const float *X, int64_t gr, int64_t nrows, int D, int gc, bool vec4)
{
	float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
	if (gr < nrows)
	{
		const float *src = X + gr * (int64_t) D + gc;
		if (vec4 && gc + 3 < D)
			v = __ldg(reinterpret_cast<const float4 *>(src));
		else
		{
			if (gc < D) v.x = __ldg(src);
			if (gc + 1 < D) v.y = __ldg(src + 1);
			if (gc + 2 < D) v.z = __ldg(src + 2);
			if (gc + 3 < D) v.w = __ldg(src + 3);
		}
	}
	return v;
}

/*
 * Load a BM x DK chunk of the A operand [x | x^2] (columns c0..c0+DK of the
 * augmented matrix) into Xc.  Columns >= Dp are the squares of column
 * c - Dp; columns >= D (within a half) and rows >= nrows are zero.
 */
__device__ __forceinline__ void load_x_chunk(float *Xc, const float *X, int64_t row0, int64_t nrows,
											 int D, int Dp, int c0, bool vec4, int tid)
{
	const bool sq = c0 >= Dp;
	const int cb = sq ? c0 - Dp : c0;
#pragma unroll
	for (int it = 0; it < (BM * DK / 4) / NTHREADS; it++)
	{
		int i = tid + it * NTHREADS;
		int r = i / (DK / 4);
		int c = (i % (DK / 4)) * 4;
		int64_t gr = row0 + r;
		int gc = cb + c;
		float4 v = load_x4(X, gr, nrows, D, gc, vec4);
		if (sq)
		{
			v.x *= v.x; v.y *= v.y; v.z *= v.z; v.w *= v.w;
		}
		*reinterpret_cast<float4 *>(Xc + r * LDC + c) = v;
	}
}

/* Load a BN x DK chunk of the (padded, aligned) B operand Wm [Kp x Dp2]. */
template <int BN>
__device__ __forceinline__ void load_w_chunk(float *Wc, const float *Wm, int Dp2, int k0, int c0, int tid)
{
#pragma unroll
	for (int it = 0; it < (BN * DK / 4 + NTHREADS - 1) / NTHREADS; it++)
	{
		int i = tid + it * NTHREADS;
		if ((BN * DK / 4) % NTHREADS == 0 || i < BN * DK / 4)
		{
			int r = i / (DK / 4);
			int c = (i % (DK / 4)) * 4;
			float4 v = __ldg(reinterpret_cast<const float4 *>(Wm + (int64_t) (k0 + r) * Dp2 + c0 + c));
			*reinterpret_cast<float4 *>(Wc + r * LDC + c) = v;
		}
	}
}

/*
 * Register-staged chunk loads (v2): the next chunk's global loads are issued
 * before the current chunk's products and stored to shared memory after
 * them, so their latency hides behind the tensor-core work.
 */
constexpr int XV = (BM * DK / 4) / NTHREADS;	/* float4 of X per thread per chunk */
template <int BN>
struct ChunkRegs
{
	static constexpr int WV = (BN * DK / 4 + NTHREADS - 1) / NTHREADS;
	float4 x[XV];
	float4 w[WV];
};

template <int BN>
__device__ __forceinline__ void fetch_chunk(ChunkRegs<BN> &cr, const float *X, int64_t row0, int64_t nrows, int D,
											int Dp, int Dp2, const float *Wm, int k0, int c0, bool vec4, int tid)
{
	const bool sq = c0 >= Dp;
	const int cb = sq ? c0 - Dp : c0;
#pragma unroll
	for (int it = 0; it < XV; it++)
	{
		int i = tid + it * NTHREADS;
		int r = i / (DK / 4);
		int c = (i % (DK / 4)) * 4;
		int64_t gr = row0 + r;
		int gc = cb + c;
		float4 v = load_x4(X, gr, nrows, D, gc, vec4);
		cr.x[it] = v;
	}
#pragma unroll
	for (int it = 0; it < ChunkRegs<BN>::WV; it++)
	{
		int i = tid + it * NTHREADS;
		if ((BN * DK / 4) % NTHREADS == 0 || i < BN * DK / 4)
		{
			int r = i / (DK / 4);
			int c = (i % (DK / 4)) * 4;
			cr.w[it] = __ldg(reinterpret_cast<const float4 *>(Wm + (int64_t) (k0 + r) * Dp2 + c0 + c));
		}
	}
}

template <int BN>
__device__ __forceinline__ void stash_chunk(const ChunkRegs<BN> &cr, float *Xc, float *Wc, bool sq, int tid)
{
#pragma unroll
	for (int it = 0; it < XV; it++)
	{
		int i = tid + it * NTHREADS;
		int r = i / (DK / 4);
		int c = (i % (DK / 4)) * 4;
		float4 v = cr.x[it];
		if (sq)
		{
			v.x *= v.x; v.y *= v.y; v.z *= v.z; v.w *= v.w;
		}
		*reinterpret_cast<float4 *>(Xc + r * LDC + c) = v;
	}
#pragma unroll
	for (int it = 0; it < ChunkRegs<BN>::WV; it++)
	{
		int i = tid + it * NTHREADS;
		if ((BN * DK / 4) % NTHREADS == 0 || i < BN * DK / 4)
		{
			int r = i / (DK / 4);
			int c = (i % (DK / 4)) * 4;
			*reinterpret_cast<float4 *>(Wc + r * LDC + c) = cr.w[it];
		}
	}
}

/*
 * Score GEMM for one block tile: acc[MT][NT][4] = Xaug[row0.., :] . Wm[k0.., :]^T,
 * warps laid out WM x WN over the BM x BN tile.
 * COMP (diag): each DK-wide chunk is accumulated on its own and folded into
 * the result with an error-free two-sum, so the FP32 accumulation error of the
 * long, cancelling sum  x.(prec mu) - x^2.(prec/2)  stays at the chunk level
 * (measured: it dominated the diag score error under 3xTF32).
 */
template <int BN, int WM, int WN, bool SPLIT, bool COMP = false, bool PF = false>
__device__ __forceinline__ void score_gemm(float (&acc)[BM / WM / 16][BN / WN / 8][4],
										   float *Xc, float *Wc, const float *X, int64_t row0, int64_t nrows,
										   int D, int Dp, int Dp2, const float *Wm, int k0, bool vec4, int tid)
{
	constexpr int MT = BM / WM / 16, NT = BN / WN / 8;
	const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int wm = warp / WN, wn = warp % WN;
	float lo[COMP ? MT : 1][COMP ? NT : 1][4];
	float part[COMP ? MT : 1][COMP ? NT : 1][4];
#pragma unroll
	for (int i = 0; i < MT; i++)
#pragma unroll
		for (int j = 0; j < NT; j++)
#pragma unroll
			for (int q = 0; q < 4; q++)
			{
				acc[i][j][q] = 0.f;
				if (COMP)
					lo[COMP ? i : 0][COMP ? j : 0][q] = 0.f;
			}
	ChunkRegs<PF ? BN : 8> cr;
	if (PF)
		fetch_chunk<PF ? BN : 8>(cr, X, row0, nrows, D, Dp, Dp2, Wm, k0, 0, vec4, tid);
	for (int c0 = 0; c0 < Dp2; c0 += DK)
	{
		if (COMP)
		{
#pragma unroll
			for (int i = 0; i < MT; i++)
#pragma unroll
				for (int j = 0; j < NT; j++)
#pragma unroll
					for (int q = 0; q < 4; q++)
						part[COMP ? i : 0][COMP ? j : 0][q] = 0.f;
		}
		if (PF)
		{
			stash_chunk<PF ? BN : 8>(cr, Xc, Wc, c0 >= Dp, tid);
			__syncthreads();
			if (c0 + DK < Dp2)
				fetch_chunk<PF ? BN : 8>(cr, X, row0, nrows, D, Dp, Dp2, Wm, k0, c0 + DK, vec4, tid);
		}
		else
		{
			load_x_chunk(Xc, X, row0, nrows, D, Dp, c0, vec4, tid);
			load_w_chunk<BN>(Wc, Wm, Dp2, k0, c0, tid);
			__syncthreads();
		}
#pragma unroll
		for (int kk = 0; kk < DK; kk += 8)
		{
			float af[MT][4], bf[NT][2];
#pragma unroll
			for (int i = 0; i < MT; i++)
			{
				const float *p = Xc + (wm * (BM / WM) + i * 16 + g) * LDC + kk + t;
				af[i][0] = p[0];
				af[i][1] = p[8 * LDC];
				af[i][2] = p[4];
				af[i][3] = p[8 * LDC + 4];
			}
#pragma unroll
			for (int j = 0; j < NT; j++)
			{
				const float *p = Wc + (wn * (BN / WN) + j * 8 + g) * LDC + kk + t;
				bf[j][0] = p[0];
				bf[j][1] = p[4];
			}
#pragma unroll
			for (int i = 0; i < MT; i++)
#pragma unroll
				for (int j = 0; j < NT; j++)
					mma_f<SPLIT>(COMP ? part[COMP ? i : 0][COMP ? j : 0] : acc[i][j], af[i], bf[j]);
		}
		if (COMP)
		{
#pragma unroll
			for (int i = 0; i < MT; i++)
#pragma unroll
				for (int j = 0; j < NT; j++)
#pragma unroll
					for (int q = 0; q < 4; q++)
					{
						float a = acc[i][j][q], p = part[COMP ? i : 0][COMP ? j : 0][q];
						float s = a + p, bp = s - a;
						lo[COMP ? i : 0][COMP ? j : 0][q] += (a - (s - bp)) + (p - bp);
						acc[i][j][q] = s;
					}
		}
		__syncthreads();
	}
	if (COMP)
	{
#pragma unroll
		for (int i = 0; i < MT; i++)
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int q = 0; q < 4; q++)
					acc[i][j][q] += lo[COMP ? i : 0][COMP ? j : 0][q];
	}
}

/* ||x||^2 of the tile's rows into xn[BM] (each warp 16 rows). Caller syncs. */
__device__ __forceinline__ void row_norms(float *xn, const float *X, int64_t row0, int64_t nrows, int D, int tid)
{
	const int warp = tid >> 5, lane = tid & 31;
	for (int r = warp; r < BM; r += NTHREADS / 32)
	{
		int64_t gr = row0 + r;
		float s = 0.f;
		if (gr < nrows)
		{
			const float *x = X + gr * (int64_t) D;
			for (int d = lane; d < D; d += 32)
			{
				float v = __ldg(x + d);
				s = fmaf(v, v, s);
			}
		}
#pragma unroll
		for (int o = 16; o > 0; o >>= 1)
			s += __shfl_xor_sync(0xffffffffu, s, o);
		if (lane == 0)
			xn[r] = s;
	}
}

/*
 * Fixed-order block sum of one double per thread (blocks of NWARPS warps):
 * shuffles within each warp, then thread 0 over the warps' sums into *out
 * (skipped when out is null).  lsum: NWARPS doubles of shared memory.
 */
template <int NWARPS>
__device__ __forceinline__ void block_sum_fixed(double v, double *lsum, double *out)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	if ((threadIdx.x & 31) == 0)
		lsum[threadIdx.x >> 5] = v;
	__syncthreads();
	if (threadIdx.x == 0 && out)
	{
		double s = 0.0;
		for (int w = 0; w < NWARPS; w++)
			s += lsum[w];
		*out = s;
	}
}

/*
 * Components whose expanded score is ill-conditioned for the chosen precision
 * (a variance tiny against the spread of the data: a singleton component, a
 * dimension constant inside one component) get their score recomputed in the
 * epilogue from the differences, in FP32 on the CUDA cores:
 *   s = cdir_k - 1/2 sum_d (x_d - mu_kd)^2 / var_kd.
 * The host flags them (DevModel::prepare); usually none are.
 */
struct Direct
{
	const int *flag;			/* Kp: 1 = recompute directly */
	const float *cdir;			/* Kp: log w - 1/2 (D log 2 pi + sum_d log var) */
	const float *mu;			/* Kp x D, centred */
	const float *var;			/* Kp x D (diag) or Kp */
	int any;					/* some component is flagged */
	int diag;
};

__device__ __noinline__ float direct_score(const Direct &dr, const float *X, int64_t gr, int D, int k)
{
	const float *x = X + gr * (int64_t) D;
	const float *m = dr.mu + (int64_t) k * D;
	float q = 0.f;
	if (dr.diag)
	{
		const float *v = dr.var + (int64_t) k * D;
		for (int d = 0; d < D; d++)
		{
			float t = __ldg(x + d) - __ldg(m + d);
			q += t * t / __ldg(v + d);
		}
	}
	else
	{
		for (int d = 0; d < D; d++)
		{
			float t = __ldg(x + d) - __ldg(m + d);
			q = fmaf(t, t, q);
		}
		q /= __ldg(dr.var + k);
	}
	return __ldg(dr.cdir + k) - 0.5f * q;
}

/* score of (row i, column k) from the GEMM value */
__device__ __forceinline__ float finish_score(float a, bool sph, float cc, float cp, float xnorm)
{
	return sph ? cc + cp * (a - 0.5f * xnorm) : cc + a;
}

/*
 * Pass 1: logZ_n = log sum_k exp(s_nk) (online over tiles of BN components);
 * with hard, logZ_n = max_k s_nk instead.  blockll[b] = sum of logZ over the
 * block's rows (FP64).
 */
template <int BN, bool SPLIT>
__global__ void __launch_bounds__(NTHREADS)
lse_kernel(const float *__restrict__ X, int64_t nrows, int D, int Dp, int Dp2, int Kp,
		   const float *__restrict__ Wm, const float *__restrict__ colc, const float *__restrict__ colp,
		   int sph, int hard, float *__restrict__ logZ, double *__restrict__ blockll, Direct dr)
{
	constexpr int WM = 2, WN = 4;
	constexpr int MT = BM / WM / 16, NT = BN / WN / 8;
	extern __shared__ float4 smem4[];
	float *smem = reinterpret_cast<float *>(smem4);
	float *Xc = smem;
	float *Wc = Xc + BM * LDC;
	float *xn = Wc + BN * LDC;
	float *redm = xn + BM;
	float *redl = redm + WN * BM;
	__shared__ double lsum[NTHREADS / 32];

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int wm = warp / WN, wn = warp % WN;
	const int64_t row0 = (int64_t) blockIdx.x * BM;
	const bool vec4 = (D & 3) == 0;

	if (sph)
		row_norms(xn, X, row0, nrows, D, tid);
	__syncthreads();

	float m[MT][2], l[MT][2];
#pragma unroll
	for (int i = 0; i < MT; i++)
		m[i][0] = m[i][1] = NEG_INF, l[i][0] = l[i][1] = 0.f;

	float acc[MT][NT][4];
	for (int k0 = 0; k0 < Kp; k0 += BN)
	{
		score_gemm<BN, WM, WN, SPLIT, BN == 64, true>(acc, Xc, Wc, X, row0, nrows, D, Dp, Dp2, Wm, k0, vec4, tid);
		float cc[NT][2], cp[NT][2];
#pragma unroll
		for (int j = 0; j < NT; j++)
#pragma unroll
			for (int e = 0; e < 2; e++)
			{
				int k = k0 + wn * (BN / WN) + j * 8 + 2 * t + e;
				cc[j][e] = __ldg(colc + k);
				cp[j][e] = __ldg(colp + k);
			}
#pragma unroll
		for (int i = 0; i < MT; i++)
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				int r = wm * (BM / WM) + i * 16 + g + 8 * h;
				float xr = sph ? xn[r] : 0.f;
				float s[NT][2];
				float tmax = NEG_INF;
#pragma unroll
				for (int j = 0; j < NT; j++)
#pragma unroll
					for (int e = 0; e < 2; e++)
					{
						s[j][e] = finish_score(acc[i][j][2 * h + e], sph, cc[j][e], cp[j][e], xr);
						if (dr.any)
						{
							int k = k0 + wn * (BN / WN) + j * 8 + 2 * t + e;
							if (dr.flag[k] && row0 + r < nrows)
								s[j][e] = direct_score(dr, X, row0 + r, D, k);
						}
						tmax = fmaxf(tmax, s[j][e]);
					}
				tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
				tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
				online_lse<NT, false>(m[i][h], l[i][h], s, tmax, 1.f, hard);
			}
	}
	/* merge the quad, then the WN warps of a row */
#pragma unroll
	for (int i = 0; i < MT; i++)
#pragma unroll
		for (int h = 0; h < 2; h++)
		{
			float v = l[i][h];
			v += __shfl_xor_sync(0xffffffffu, v, 1);
			v += __shfl_xor_sync(0xffffffffu, v, 2);
			if (t == 0)
			{
				int r = wm * (BM / WM) + i * 16 + g + 8 * h;
				redm[wn * BM + r] = m[i][h];
				redl[wn * BM + r] = v;
			}
		}
	__syncthreads();
	double mine = 0.0;
	if (tid < BM)
	{
		float M = NEG_INF;
#pragma unroll
		for (int w = 0; w < WN; w++)
			M = fmaxf(M, redm[w * BM + tid]);
		float lz;
		if (hard)
			lz = M;
		else
		{
			float L = 0.f;
#pragma unroll
			for (int w = 0; w < WN; w++)
			{
				float mw = redm[w * BM + tid];
				if (mw != NEG_INF)
					L += redl[w * BM + tid] * __expf(mw - M);
			}
			lz = M + __logf(L);
		}
		int64_t gr = row0 + tid;
		if (gr < nrows)
		{
			logZ[gr] = lz;
			mine = (double) lz;
		}
	}
	block_sum_fixed<NTHREADS / 32>(mine, lsum, blockll + blockIdx.x);
}

/*
 * Pass 2: for a tile of BN components (blockIdx.x), a range of rows
 * (blockIdx.y) and a feature slice (blockIdx.z): recompute the scores,
 * r = exp(s - logZ) on chip (or the one-hot of the max when hard), and
 * accumulate
 *   part[y][k][d]        = sum r x_d        (d <  D)
 *   part[y][k][D + d]    = sum r x_d^2      (diag only)
 *   part_nk[y][k]        = sum r,   part_sxn[y][k] = sum r ||x||^2   (slice 0)
 */
template <int BN, bool DIAG, bool SPLIT>
__global__ void __launch_bounds__(NTHREADS, 1)
stats_kernel(const float *__restrict__ X, int64_t nrows, int D, int Dp, int Dp2, int Kp,
			 const float *__restrict__ Wm, const float *__restrict__ colc, const float *__restrict__ colp,
			 const float *__restrict__ logZ, int hard, int64_t rows_per_split,
			 float *__restrict__ part, double *__restrict__ part_nk, double *__restrict__ part_sxn, int Wd,
			 Direct dr)
{
	constexpr int WM = 2, WN = 4;
	constexpr int MT = BM / WM / 16, NT = BN / WN / 8;
	constexpr int NCOL = DIAG ? 2 * DT : DT;	/* statistics columns per slice */
	constexpr int MT2 = BN / 2 / 16, NT2 = NCOL / 4 / 8;
	constexpr int LDR = BN + 8, LDX = DT + 8;
	const bool sph = !DIAG;
	extern __shared__ float4 smem4[];
	float *smem = reinterpret_cast<float *>(smem4);
	float *Xc = smem;
	float *Wc = Xc + BM * LDC;
	float *xn = Wc + BN * LDC;
	float *Rs = xn + BM;
	float *XS = Rs + BM * LDR;

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int wm = warp / WN, wn = warp % WN;
	const int k0 = blockIdx.x * BN;
	const int d0 = blockIdx.z * DT;
	const int64_t rbeg = (int64_t) blockIdx.y * rows_per_split;
	const int64_t rend = min(nrows, rbeg + rows_per_split);
	const bool vec4 = (D & 3) == 0;
	const bool slice0 = blockIdx.z == 0;

	float sacc[MT2][NT2][4];
#pragma unroll
	for (int i = 0; i < MT2; i++)
#pragma unroll
		for (int j = 0; j < NT2; j++)
#pragma unroll
			for (int q = 0; q < 4; q++)
				sacc[i][j][q] = 0.f;
	double nk_acc = 0.0, sxn_acc = 0.0;

	float cc[NT][2], cp[NT][2];
#pragma unroll
	for (int j = 0; j < NT; j++)
#pragma unroll
		for (int e = 0; e < 2; e++)
		{
			int k = k0 + wn * (BN / WN) + j * 8 + 2 * t + e;
			cc[j][e] = __ldg(colc + k);
			cp[j][e] = __ldg(colp + k);
		}

	float acc[MT][NT][4];
	for (int64_t row0 = rbeg; row0 < rend; row0 += BM)
	{
		if (sph)
		{
			row_norms(xn, X, row0, rend, D, tid);
			__syncthreads();
		}
		score_gemm<BN, WM, WN, SPLIT, DIAG>(acc, Xc, Wc, X, row0, rend, D, Dp, Dp2, Wm, k0, vec4, tid);
		/* responsibilities into Rs [BM][LDR] */
#pragma unroll
		for (int i = 0; i < MT; i++)
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				int r = wm * (BM / WM) + i * 16 + g + 8 * h;
				int64_t gr = row0 + r;
				bool valid = gr < rend;
				float lz = valid ? __ldg(logZ + gr) : 0.f;
				float xr = sph ? xn[r] : 0.f;
#pragma unroll
				for (int j = 0; j < NT; j++)
				{
					float rv[2];
#pragma unroll
					for (int e = 0; e < 2; e++)
					{
						float s = finish_score(acc[i][j][2 * h + e], sph, cc[j][e], cp[j][e], xr);
						if (dr.any && valid)
						{
							int k = k0 + wn * (BN / WN) + j * 8 + 2 * t + e;
							if (dr.flag[k])
								s = direct_score(dr, X, gr, D, k);
						}
						float d = s - lz;
						float v;
						if (hard)
							v = (d >= 0.f) ? 1.f : 0.f;
						else
							v = (d > -RESP_CUT) ? __expf(d) : 0.f;
						if (!SPLIT)
							v = __uint_as_float(to_tf32(v));	/* see mma_stats */
						rv[e] = valid ? v : 0.f;
					}
					*reinterpret_cast<float2 *>(Rs + r * LDR + wn * (BN / WN) + j * 8 + 2 * t) =
						make_float2(rv[0], rv[1]);
				}
			}
		/* X slice [BM][DT] for the statistics */
		{
			constexpr int V = BM * DT / 4;
			for (int i = tid; i < V; i += NTHREADS)
			{
				int r = i / (DT / 4);
				int c = (i % (DT / 4)) * 4;
				int64_t gr = row0 + r;
				int gc = d0 + c;
				float4 v = load_x4(X, gr, rend, D, gc, vec4);
				*reinterpret_cast<float4 *>(XS + r * LDX + c) = v;
			}
		}
		__syncthreads();
		/* sum r, sum r ||x||^2 per component (FP32 within the tile) */
		if (slice0 && tid < BN)
		{
			float a = 0.f, b = 0.f;
			for (int r = 0; r < BM; r++)
			{
				float v = Rs[r * LDR + tid];
				a += v;
				if (sph)
					b = fmaf(v, xn[r], b);
			}
			nk_acc += (double) a;
			sxn_acc += (double) b;
		}
		/* statistics GEMM: sacc [BN x NCOL] += Rs^T [BN x BM] . [x | x^2] [BM x NCOL] */
		{
			const int cm0 = wm * (BN / 2);
			const int cn0 = wn * (NCOL / 4);
			const bool sqw = DIAG && cn0 >= DT;
			const int xc0 = sqw ? cn0 - DT : cn0;
#pragma unroll 2
			for (int kk = 0; kk < BM; kk += 8)
			{
				float af[MT2][4], bf[NT2][2];
#pragma unroll
				for (int i = 0; i < MT2; i++)
				{
					const float *p = Rs + (kk + t) * LDR + cm0 + i * 16 + g;
					af[i][0] = p[0];
					af[i][1] = p[8];
					af[i][2] = p[4 * LDR];
					af[i][3] = p[4 * LDR + 8];
				}
#pragma unroll
				for (int j = 0; j < NT2; j++)
				{
					const float *p = XS + (kk + t) * LDX + xc0 + j * 8 + g;
					float b0 = p[0], b1 = p[4 * LDX];
					if (sqw)
					{
						b0 *= b0;
						b1 *= b1;
					}
					bf[j][0] = b0;
					bf[j][1] = b1;
				}
#pragma unroll
				for (int i = 0; i < MT2; i++)
#pragma unroll
					for (int j = 0; j < NT2; j++)
						mma_stats<SPLIT>(sacc[i][j], af[i], bf[j]);
			}
		}
		__syncthreads();
	}
	/* write this block's partial statistics */
	{
		const int cm0 = wm * (BN / 2);
		const int cn0 = wn * (NCOL / 4);
		float *pb = part + (int64_t) blockIdx.y * Kp * Wd;
#pragma unroll
		for (int i = 0; i < MT2; i++)
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				int k = k0 + cm0 + i * 16 + g + 8 * h;
#pragma unroll
				for (int j = 0; j < NT2; j++)
#pragma unroll
					for (int e = 0; e < 2; e++)
					{
						int c = cn0 + j * 8 + 2 * t + e;
						int d = (DIAG && c >= DT) ? c - DT : c;
						int gd = d0 + d;
						if (gd < D)
						{
							int col = (DIAG && c >= DT) ? D + gd : gd;
							pb[(int64_t) k * Wd + col] = sacc[i][j][2 * h + e];
						}
					}
			}
	}
	if (slice0 && tid < BN)
	{
		part_nk[(int64_t) blockIdx.y * Kp + k0 + tid] = nk_acc;
		part_sxn[(int64_t) blockIdx.y * Kp + k0 + tid] = sxn_acc;
	}
}

/*
 * gmm_assign's rule for the j-th best component k (score v, the row's
 * tempered log-sum-exp lz; LOG2: both in log2 units): its posterior
 * exp(v / T - lz), kept when j == 0 or above tau; else (-1, 0).
 */
template <bool LOG2>
__device__ __forceinline__ void keep_assignment(int j, bool found, float v, int k, float invT, float lz, float tau,
												int32_t &oc, float &orr)
{
	oc = -1;
	orr = 0.f;
	if (found)
	{
		float resp = LOG2 ? ex2(v * invT - lz) : __expf(v * invT - lz);
		if (j == 0 || resp > tau)
		{
			oc = k;
			orr = resp;
		}
	}
}

/*
 * insert (v, k) into a thread's descending top-MAXM list (columns visited in
 * ascending order: ties keep the lower index); CHECK = false when the caller
 * knows that v > tv[MAXM - 1]
 */
template <int MAXM, bool CHECK = true>
__device__ __forceinline__ void topm_insert(float (&tv)[MAXM], int (&ti)[MAXM], float v, int k)
{
	if (CHECK && !(v > tv[MAXM - 1]))
		return;
#pragma unroll
	for (int q = MAXM - 1; q > 0; q--)
	{
		if (v > tv[q - 1])
		{
			tv[q] = tv[q - 1];
			ti[q] = ti[q - 1];
		}
		else if (v > tv[q])
		{
			tv[q] = v;
			ti[q] = k;
		}
	}
	if (v > tv[0])
	{
		tv[0] = v;
		ti[0] = k;
	}
}

/* quad member t's list for row r into the rows' [4][MAXM] lists in shared memory (cv, ci), for topm_merge_row */
template <int MAXM>
__device__ __forceinline__ void topm_stash(float *cv, int *ci, int r, int t, const float (&tv)[MAXM],
										   const int (&ti)[MAXM])
{
#pragma unroll
	for (int q = 0; q < MAXM; q++)
	{
		cv[(r * 4 + t) * MAXM + q] = tv[q];
		ci[(r * 4 + t) * MAXM + q] = ti[q];
	}
}

/*
 * One row's m best from the 4 lists of its quad (cv, ci: [4][MAXM]), ties to
 * the lower component, written to oc[0..m) / orr[0..m) (orr may be null).
 */
template <int MAXM, bool LOG2>
__device__ __forceinline__ void topm_merge_row(const float *cv, const int *ci, float lz, float invT, int m, float tau,
											   int32_t *oc, float *orr)
{
	int p[4] = {0, 0, 0, 0};
	for (int j = 0; j < m; j++)
	{
		int best = -1;
		float bv = NEG_INF;
		int bk = 0x7fffffff;
		for (int q = 0; q < 4; q++)
		{
			if (p[q] >= MAXM)
				continue;
			float v = cv[q * MAXM + p[q]];
			int k = ci[q * MAXM + p[q]];
			if (k >= 0 && (v > bv || (v == bv && k < bk)))
			{
				best = q;
				bv = v;
				bk = k;
			}
		}
		if (best >= 0)
			p[best]++;
		int32_t c;
		float r;
		keep_assignment<LOG2>(j, best >= 0, bv, bk, invT, lz, tau, c, r);
		oc[j] = c;
		if (orr)
			orr[j] = r;
	}
}

/*
 * Top-m soft assignment.  Block: BM rows x all components, warp = 16 rows x
 * 128 components per tile (one warp owns a row).  Each thread keeps the
 * best MAXM scores of its columns and an online log-sum-exp of s / T; the
 * four threads of a quad merge at the end.  blockll gets the sum of the rows'
 * log-sum-exp (the log-likelihood when T = 1).
 */
template <int MAXM, bool SPLIT>
__global__ void __launch_bounds__(NTHREADS)
assign_kernel(const float *__restrict__ X, int64_t nrows, int D, int Dp, int Dp2, int Kp,
			  const float *__restrict__ Wm, const float *__restrict__ colc, const float *__restrict__ colp,
			  int sph, float invT, int m, float tau,
			  int32_t *__restrict__ out_comp, float *__restrict__ out_resp, double *__restrict__ blockll,
			  Direct dr)
{
	constexpr int BN = 128, WM = 8, WN = 1;
	constexpr int NT = BN / 8;
	extern __shared__ float4 smem4[];
	float *smem = reinterpret_cast<float *>(smem4);
	float *Xc = smem;
	float *Wc = Xc + BM * LDC;
	float *xn = Wc + BN * LDC;
	float *cv = xn + BM;						/* [BM][4][MAXM] values */
	int *ci = reinterpret_cast<int *>(cv + BM * 4 * MAXM);	/* [BM][4][MAXM] */
	float *qm = reinterpret_cast<float *>(ci + BM * 4 * MAXM);	/* [BM][4] */
	float *ql = qm + BM * 4;
	__shared__ double lsum[NTHREADS / 32];

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int64_t row0 = (int64_t) blockIdx.x * BM;
	const bool vec4 = (D & 3) == 0;

	if (sph)
		row_norms(xn, X, row0, nrows, D, tid);
	__syncthreads();

	float mx[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
	float tv[2][MAXM];
	int ti[2][MAXM];
#pragma unroll
	for (int h = 0; h < 2; h++)
#pragma unroll
		for (int q = 0; q < MAXM; q++)
			tv[h][q] = NEG_INF, ti[h][q] = -1;

	float acc[1][NT][4];
	for (int k0 = 0; k0 < Kp; k0 += BN)
	{
		if (sph)
			score_gemm<BN, WM, WN, SPLIT, false>(acc, Xc, Wc, X, row0, nrows, D, Dp, Dp2, Wm, k0, vec4, tid);
		else
			score_gemm<BN, WM, WN, SPLIT, true>(acc, Xc, Wc, X, row0, nrows, D, Dp, Dp2, Wm, k0, vec4, tid);
#pragma unroll
		for (int h = 0; h < 2; h++)
		{
			int r = warp * 16 + g + 8 * h;
			float xr = sph ? xn[r] : 0.f;
			float s[NT][2];
			float tmax = NEG_INF;
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int e = 0; e < 2; e++)
				{
					int k = k0 + j * 8 + 2 * t + e;
					s[j][e] = finish_score(acc[0][j][2 * h + e], sph, __ldg(colc + k), __ldg(colp + k), xr);
					if (dr.any && dr.flag[k] && row0 + r < nrows)
						s[j][e] = direct_score(dr, X, row0 + r, D, k);
					tmax = fmaxf(tmax, s[j][e]);
				}
			online_lse<NT, false>(mx[h], l[h], s, tmax, invT, false);
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int e = 0; e < 2; e++)
					topm_insert<MAXM>(tv[h], ti[h], s[j][e], k0 + j * 8 + 2 * t + e);
		}
	}
	/* per row: the quad's 4 lists and (m, l) into smem */
#pragma unroll
	for (int h = 0; h < 2; h++)
	{
		int r = warp * 16 + g + 8 * h;
		topm_stash<MAXM>(cv, ci, r, t, tv[h], ti[h]);
		qm[r * 4 + t] = mx[h];
		ql[r * 4 + t] = l[h];
	}
	__syncthreads();
	double mine = 0.0;
	if (tid < BM)
	{
		int r = tid;
		int64_t gr = row0 + r;
		float M = NEG_INF;
		for (int q = 0; q < 4; q++)
			M = fmaxf(M, qm[r * 4 + q]);
		float L = 0.f;
		for (int q = 0; q < 4; q++)
			if (qm[r * 4 + q] != NEG_INF)
				L += ql[r * 4 + q] * __expf(qm[r * 4 + q] - M);
		float lz = M + __logf(L);
		if (gr < nrows)
		{
			mine = (double) lz;	/* log-likelihood of the row when T = 1 */
			topm_merge_row<MAXM, false>(cv + r * 4 * MAXM, ci + r * 4 * MAXM, lz, invT, m, tau, out_comp + gr * m,
										out_resp ? out_resp + gr * m : nullptr);
		}
	}
	block_sum_fixed<NTHREADS / 32>(mine, lsum, blockll ? blockll + blockIdx.x : nullptr);
}

}								/* namespace fgc */
