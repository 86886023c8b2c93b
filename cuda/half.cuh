/*
 * half.cuh - the "h16" E pass: Flash-GMM kernels on FP16 tensor cores
 * (mma.sync m16n8k16, FP32 accumulation, ldmatrix, cp.async; sm_80+).
 *
 * Same two passes and outputs as the fused kernels of kernels.cuh (logZ per
 * row, per-block FP64 sums of logZ, per-block partial statistics summed later
 * by reduce_parts_kernel), never anything N x K; D <= DMAX (128), X resident
 * on the device.  Rows are converted to FP16 once per block of rows
 * (convert16_kernel); pass 1 (lse16_kernel) also serves the top-m
 * assignment (MAXM > 0).
 *
 * Precision (cuda/NOTES.md, v4, has the measurements):
 *   - The data are scaled by a power of two S (exact) so that max |x| * S is
 *     in [64, 128): x and, for diag, x^2 stay inside FP16's normal range.
 *   - Both operands are split into FP16 hi + lo pairs (about 22 significant
 *     bits) and each score takes three products, x_hi.W_hi + x_lo.W_hi +
 *     x_hi.W_lo ("3xFP16", the FP16 analogue of 3xTF32, at twice TF32's
 *     rate).  Model operands: spherical S mu; diag [mu prec / S | -prec /
 *     (2 S^2)].  The per-component constants are computed (FP64,
 *     prepare_h16_kernel) from W_hi + W_lo, so a score is the exact score of
 *     the model those operands describe.  Measured first with W_hi alone
 *     (two products, consistent constants): the model moved by 2^-12
 *     relative per step and SIFT diag means ended 1.5e-3 from the reference.
 *   - Scores accumulate in FP32 in chunks of CK k-steps folded with an
 *     error-free two-sum (diag: long cancelling sums, as kernels.cuh's COMP).
 *   - r = exp(s - logZ) in FP32, scaled by 2^15 and rounded to FP16 (normal
 *     range down to r ~ 2e-9); sum r uses the same rounded r.
 *   - Statistics R^T [x | x^2]: FP16 products (hi + lo of x: two), FP32
 *     over a block's rows, FP64 across blocks.  Flagged (ill-conditioned)
 *     components are scored from differences (Direct) as in kernels.cuh.
 * No atomics: bit-identical runs.
 *
 * m16n8k16 fragments (g = lane / 4, t = lane % 4), halves packed in pairs:
 *   A (16x16): a0 (g, 2t..) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..)
 *   B (16x8):  b0 (k 2t.., n g)  b1 (k 2t+8.., n g)
 *   C (16x8):  c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1)
 */
#pragma once
#include <cuda_fp16.h>
#include "kernels.cuh"

namespace fgc {
namespace h16 {

constexpr int DMAX = 128;			/* features handled (every D is padded to DMAX) */
constexpr int NW1 = 8;				/* pass 1: warps per block, 16 rows each */
constexpr int BM1 = 16 * NW1;
/* pass 1: components per tile (32: the rows and two tiles of [hi | lo] model rows fit twice per SM, spherical) */
__host__ __device__ constexpr int bn1(bool) { return 32; }
/* pass 2: rows per tile (diag: 32, so that 8 warps' [hi | lo] model rows and two row tiles fit) */
__host__ __device__ constexpr int br2(bool diag) { return diag ? 32 : 64; }
constexpr int CK = 4;				/* k-steps accumulated before each two-sum fold */
constexpr float R_SCALE = 32768.f;	/* responsibilities scaled into FP16's normal range */

__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
	return (uint32_t) __cvta_generic_to_shared(p);
}

__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
				 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
				 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

__device__ __forceinline__ void mma16(float *c, const uint32_t *a, const uint32_t *b)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
				 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
				 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
				 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void cp_async16(void *dst, const void *src)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ uint32_t pack_h2(float a, float b)
{
	__half2 h = __floats2half2_rn(a, b);
	return *reinterpret_cast<uint32_t *>(&h);
}

/* acc += part, lo collects the rounding error (Knuth two-sum) */
__device__ __forceinline__ void two_sum_fold(float &acc, float &lo, float part)
{
	float s = acc + part, bp = s - acc;
	lo += (acc - (s - bp)) + (part - bp);
	acc = s;
}

/*
 * Widths, in halves, compile-time so that every shared-memory address is a
 * base plus an immediate: features are padded to Dh = DMAX (zeros; D < 128
 * pays for 128), IN = operand width (Dh, or 2 Dh for diag: [x | x^2]); rows
 * and model rows are stored [hi | lo] (2 IN).  Shared-memory rows are padded
 * by 8 halves (an odd multiple of 16 bytes: the 8 rows of an ldmatrix hit
 * distinct banks).
 */
__host__ __device__ constexpr int in_width(bool diag) { return diag ? 2 * DMAX : DMAX; }
template <bool DIAG>
struct Widths
{
	static constexpr int Dh = DMAX, IN = in_width(DIAG), LD = 2 * IN + 8;
};

/*
 * Rows are converted once per E pass, a block of rows at a time (the block's
 * FP16 rows, <= 16 MiB, are what both passes read):
 *   Xg[r] = [hi | lo] of [x S] (spherical) or [x S | (x S)^2] (diag), zero
 *   past D and for r >= nr (up to the block's multiple of 128 rows);
 *   xh[r] = ||x S||^2 / 2 (FP32, exact x).
 * One warp per row.
 */
template <bool DIAG>
__global__ void convert16_kernel(const float *__restrict__ X, int64_t nr, int64_t nr_pad, int D, float S,
								 __half *__restrict__ Xg, float *__restrict__ xh)
{
	const Widths<DIAG> w;
	const int lane = threadIdx.x & 31;
	const int64_t r = (int64_t) blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
	if (r >= nr_pad)
		return;
	__half *row = Xg + r * 2 * w.IN;
	float n2 = 0.f;
	for (int c = 2 * lane; c < w.Dh; c += 64)
	{
		float v0 = 0.f, v1 = 0.f;
		if (r < nr)
		{
			const float *src = X + r * (int64_t) D + c;
			if (c < D) v0 = __ldg(src) * S;
			if (c + 1 < D) v1 = __ldg(src + 1) * S;
		}
		n2 = fmaf(v0, v0, fmaf(v1, v1, n2));
		__half2 h = __floats2half2_rn(v0, v1);
		float2 hf = __half22float2(h);
		*reinterpret_cast<__half2 *>(row + c) = h;
		*reinterpret_cast<__half2 *>(row + w.IN + c) = __floats2half2_rn(v0 - hf.x, v1 - hf.y);
		if (DIAG)
		{
			float q0 = v0 * v0, q1 = v1 * v1;
			__half2 hq = __floats2half2_rn(q0, q1);
			float2 qf = __half22float2(hq);
			*reinterpret_cast<__half2 *>(row + w.Dh + c) = hq;
			*reinterpret_cast<__half2 *>(row + w.IN + w.Dh + c) = __floats2half2_rn(q0 - qf.x, q1 - qf.y);
		}
	}
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		n2 += __shfl_xor_sync(0xffffffffu, n2, o);
	if (lane == 0)
		xh[r] = 0.5f * n2;
}

/* cp.async nrows rows of 2 IN halves (global stride 2 IN) into shared memory (stride LD) */
template <class W>
__device__ __forceinline__ void load_tile(__half *dst, const __half *src, int nrows, const W &w, int nthreads,
										  int tid)
{
	const int chunks = 2 * w.IN / 8;	/* 16-byte pieces per row */
	for (int i = tid; i < nrows * chunks; i += nthreads)
	{
		int r = i / chunks, c = (i - r * chunks) * 8;
		cp_async16(dst + r * w.LD + c, src + (int64_t) r * 2 * w.IN + c);
	}
}

/*
 * Score tile of one warp: acc[NT][4] = A (16 rows) . B (8 NT rows)^T over the
 * three products x_hi.W_hi, x_lo.W_hi, x_hi.W_lo (3 IN / 16 k-steps); A rows
 * at Ap, B rows at Bp (shared memory, stride LD), both stored [hi | lo]; the
 * model operand is A or B (a_model).  Chunks of CK k-steps are folded with a
 * two-sum when COMP.
 */
template <int NT, bool COMP, class W>
__device__ __forceinline__ void score_tile(float (&acc)[NT][4], const __half *Ap, bool a_model, const __half *Bp,
										   const W &w, int lane)
{
	float lo[COMP ? NT : 1][4], part[COMP ? NT : 1][4];
#pragma unroll
	for (int j = 0; j < NT; j++)
#pragma unroll
		for (int q = 0; q < 4; q++)
		{
			acc[j][q] = 0.f;
			lo[COMP ? j : 0][q] = 0.f;
		}
	const int arow = lane % 16, acol = (lane / 16) * 8;
	const int brow = (lane % 8) + (lane / 16) * 8, bcol = ((lane / 8) % 2) * 8;
	const __half *ap = Ap + arow * w.LD + acol, *bp = Bp + brow * w.LD + bcol;
	constexpr int seg = W::IN / 16;
	/* rolled outer loops: unrolled, the compiler hoists every ldmatrix and runs out of registers */
#pragma unroll 1
	for (int p = 0; p < 3; p++)
	{
		/* product 0: hi.hi, 1: row lo . model hi, 2: row hi . model lo */
		const int ro = p == 1 ? w.IN : 0, mo = p == 2 ? w.IN : 0;
		const __half *a0 = ap + (a_model ? mo : ro), *b0 = bp + (a_model ? ro : mo);
#pragma unroll 1
		for (int ks0 = 0; ks0 < seg; ks0 += CK)
		{
			if (COMP)
#pragma unroll
				for (int j = 0; j < NT; j++)
#pragma unroll
					for (int q = 0; q < 4; q++)
						part[COMP ? j : 0][q] = 0.f;
#pragma unroll
			for (int kk = 0; kk < CK; kk++)
			{
				const int c = (ks0 + kk) * 16;
				uint32_t a[4];
				ldsm_x4(a, a0 + c);
#pragma unroll
				for (int j = 0; j < NT; j += 2)
				{
					uint32_t b[4];
					ldsm_x4(b, b0 + j * 8 * w.LD + c);
					mma16(COMP ? part[COMP ? j : 0] : acc[j], a, b);
					mma16(COMP ? part[COMP ? j + 1 : 0] : acc[j + 1], a, b + 2);
				}
			}
			if (COMP)
#pragma unroll
				for (int j = 0; j < NT; j++)
#pragma unroll
					for (int q = 0; q < 4; q++)
						two_sum_fold(acc[j][q], lo[COMP ? j : 0][q], part[COMP ? j : 0][q]);
		}
	}
	if (COMP)
#pragma unroll
		for (int j = 0; j < NT; j++)
#pragma unroll
			for (int q = 0; q < 4; q++)
				acc[j][q] += lo[COMP ? j : 0][q];
}

constexpr float L2E = 1.4426950408889634f;	/* scores are kept in log2 units inside the kernels */
constexpr float LN2 = 0.6931471805599453f;

/*
 * Per-component constants of a tile, in log2 units, for the epilogues:
 * cst[k] = {colc L2E, colp L2E, flagged}.  Returns whether any is flagged.
 */
__device__ __forceinline__ bool tile_constants(float2 *cst, int *flg, const float *colc, const float *colp,
											   const Direct &dr, int k0, int n, int tid)
{
	bool any = false;
	if (tid < n)
	{
		int k = k0 + tid;
		cst[tid] = make_float2(__ldg(colc + k) * L2E, __ldg(colp + k) * L2E);
		flg[tid] = dr.any ? dr.flag[k] : 0;
		any = flg[tid] != 0;
	}
	return any;
}

/* the assignment's tau bound in log2 units (row_tile, rows_tile_compact): log2(tau) less one, at most -1; -inf without a tau */
__device__ __forceinline__ float tau_bound(float tau)
{
	return tau > 0.f ? fminf(__log2f(tau), 0.f) - 1.f : NEG_INF;
}

/*
 * One row's share of a tile in the pass-1 epilogues (lse16_kernel,
 * hopper.cuh's lse_wg_kernel): this thread's NT x 2 scores s (log2 units,
 * columns k0 + 8 j + 2 t + e), the quad's maximum, the online log-sum-exp
 * (m, l) and, when assigning, the thread's top-MM list, into which only
 * elements at or above tau's bound go (ltau: rows_tile_compact's, below).
 */
template <int NT, bool ASSIGN, int MM>
__device__ __forceinline__ void row_tile(float &m, float &l, float (&tv)[MM], int (&ti)[MM], const float (&s)[NT][2],
										 float invT, bool hard, int k0, int t, float ltau = NEG_INF)
{
	float tmax = NEG_INF;
#pragma unroll
	for (int j = 0; j < NT; j++)
		tmax = fmaxf(tmax, fmaxf(s[j][0], s[j][1]));
	tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
	tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
	online_lse<NT, true>(m, l, s, tmax, invT, hard);
	if (ASSIGN)
	{
		const float tb = (m + ltau) / invT;	/* (m: the row's running maximum of v / T, after this tile) */
#pragma unroll
		for (int j = 0; j < NT; j++)
#pragma unroll
			for (int e = 0; e < 2; e++)
				if (s[j][e] >= tb)
					topm_insert<MM>(tv, ti, s[j][e], k0 + j * 8 + 2 * t + e);
	}
}

/*
 * row_tile for the top-m assignment, for both of the thread's rows at once
 * (independent work side by side: the epilogue is latency bound), with the
 * insertions compacted.  thr is a lower bound on the row's m-th best score
 * so far, from values the quad holds: the largest member's m-th best (that
 * member holds m values at or above it) and, with m = 4q, the smallest
 * member's q-th best (the four members hold 4q); in the first tile, whose
 * lists are empty, each member's q-th best of the tile itself.  An element
 * below thr cannot enter the row's top m, so only elements at or above it
 * (and above the thread's own m-th best, as topm_insert asks) are inserted,
 * read back by index from this thread's slots in scr, half a tile at a time
 * ([NT / 2][32 lanes][2] floats a warp, conflict-free: the persistent
 * kernel's second rows buffer took the room of a whole tile's; picking
 * from registers by a tree of selects instead measured 10% slower,
 * cuda/NOTES.md v13).  The warp then runs as many insertions as its busiest
 * thread has candidates in each half, instead of one per element that any
 * of its threads keeps (row_tile).  The merged top m is row_tile's: only
 * entries that could not be chosen are left out of the lists.  The tile's
 * maximum, candidate and sum of exponentials are built in four interleaved
 * partials (the sum's rounding differs from online_lse's).
 *
 * ltau (log2 units, <= -1, or -inf: no such bound) prunes by gmm_assign's
 * tau: an entry after the first is kept only where exp(v / T - lz) > tau,
 * and lz is at least the row's running maximum of v / T (mnew), so an
 * element with v / T < mnew + ltau, ltau = log2(tau) less one (a factor of
 * two against rounding), has responsibility below tau / 2 and is output as
 * (-1, 0) whether or not it is in a list: the same outputs, far fewer
 * insertions (the bound sits within ~11 units of the maximum at tau = 1/K,
 * where the m-th-best bound sat wherever the quad's lists did).
 */
/* the largest of a thread's scores of one row in a tile (four partial maxima: short chains) */
template <int NT>
__device__ __forceinline__ float tile_max(const float (&s)[NT][2])
{
	static_assert(NT >= 4, "four partial maxima");
	float p[4];	/* (started from the first four columns, not from -inf: four instructions fewer) */
#pragma unroll
	for (int j = 0; j < NT; j++)
		p[j & 3] = j < 4 ? fmaxf(s[j][0], s[j][1]) : fmaxf(p[j & 3], fmaxf(s[j][0], s[j][1]));
	return fmaxf(fmaxf(p[0], p[1]), fmaxf(p[2], p[3]));
}

/* the maximum of v over the quad (the four threads sharing a row) */
__device__ __forceinline__ float quad_max(float v)
{
	v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
	return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

/* quad_max of each of the thread's two rows' values in place, the two rows' shuffles interleaved */
__device__ __forceinline__ void quad_max2(float (&v)[2])
{
#pragma unroll
	for (int o = 1; o <= 2; o <<= 1)
#pragma unroll
		for (int h = 0; h < 2; h++)
			v[h] = fmaxf(v[h], __shfl_xor_sync(0xffffffffu, v[h], o));
}

template <int NT, int MM>
__device__ __forceinline__ void rows_tile_compact(float (&m)[2], float (&l)[2], float (&tv)[2][MM],
												  int (&ti)[2][MM], const float (&s)[2][NT][2], float invT,
												  bool hard, int k0, int t, float *scr, int lane, float ltau)
{
	static_assert(2 * NT <= 32 && NT % 4 == 0, "one bit per element of the thread's tile, four partials");
	constexpr int Q = MM / 4;
	float tmax[2], thr[2];
#pragma unroll
	for (int h = 0; h < 2; h++)
	{
		if (Q == 2 && k0 == 0)
		{
			float a = NEG_INF, b = NEG_INF;	/* the tile's best and second best */
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int e = 0; e < 2; e++)
				{
					b = fmaxf(b, fminf(a, s[h][j][e]));
					a = fmaxf(a, s[h][j][e]);
				}
			tmax[h] = a;
			thr[h] = b;
		}
		else
		{
			tmax[h] = tile_max<NT>(s[h]);
			thr[h] = (Q == 1 && k0 == 0) ? tmax[h] : Q >= 1 ? tv[h][Q > 0 ? Q - 1 : 0] : NEG_INF;
		}
	}
	float lm[2];
#pragma unroll
	for (int h = 0; h < 2; h++)
		lm[h] = tv[h][MM - 1];
#pragma unroll
	for (int o = 1; o <= 2; o <<= 1)
#pragma unroll
		for (int h = 0; h < 2; h++)
		{
			thr[h] = fminf(thr[h], __shfl_xor_sync(0xffffffffu, thr[h], o));	/* the smallest member's q-th best */
			lm[h] = fmaxf(lm[h], __shfl_xor_sync(0xffffffffu, lm[h], o));		/* the largest member's m-th best */
		}
	/* the quad's tile maximum, then the row's new running maximum of v / T */
	float qmax[2] = {tmax[0], tmax[1]}, mnew[2];
	quad_max2(qmax);
#pragma unroll
	for (int h = 0; h < 2; h++)
		mnew[h] = fmaxf(m[h], qmax[h] * invT);
	uint32_t cand[2];
#pragma unroll
	for (int h = 0; h < 2; h++)
	{
		/* v >= bound and v > tv[MM - 1] in one comparison (bound >= tv[MM - 1]); tau's bound (above) in v's units */
		float bound = fmaxf(fmaxf(thr[h], lm[h]), (mnew[h] + ltau) / invT);
		if (!(bound > tv[h][MM - 1]))
			bound = nextafterf(bound, INFINITY);
		cand[h] = 0u;
		if (tmax[h] >= bound)
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int e = 0; e < 2; e++)
					if (s[h][j][e] >= bound)
						cand[h] |= 1u << (2 * j + e);
	}
#pragma unroll
	for (int h = 0; h < 2; h++)
	{
		const float mn = mnew[h];
		if (mn == NEG_INF)
			continue;
		if (!hard)
		{
			float p[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int e = 0; e < 2; e++)
					p[j & 3] += ex2(s[h][j][e] * invT - mn);
			l[h] = l[h] * ex2(m[h] - mn) + ((p[0] + p[1]) + (p[2] + p[3]));
		}
		m[h] = mn;
	}
#pragma unroll
	for (int h = 0; h < 2; h++)
		if (cand[h])
#pragma unroll
			for (int hf = 0; hf < 2; hf++)
			{
				/* elements i = 2 j + e of this half: j in [hf NT / 2, (hf + 1) NT / 2), bits [hf NT, (hf + 1) NT) */
				constexpr int J2 = NT / 2;
				uint32_t c = cand[h] & (hf ? ~((1u << NT) - 1u) : (1u << NT) - 1u);
				if (!c)
					continue;
#pragma unroll
				for (int j = 0; j < J2; j++)
					reinterpret_cast<float2 *>(scr)[j * 32 + lane] =
						make_float2(s[h][hf * J2 + j][0], s[h][hf * J2 + j][1]);
				do
				{
					const int i = __ffs(c) - 1;
					c &= c - 1;
					topm_insert<MM, false>(tv[h], ti[h], scr[((i >> 1) - hf * J2) * 64 + 2 * lane + (i & 1)],
										   k0 + (i >> 1) * 8 + 2 * t + (i & 1));
				} while (c);
			}
}

/* the row's log-sum-exp (log2 units) from the quad's (m, l) shares (the maximum with hard) */
__device__ __forceinline__ float quad_lz2(float m, float l, bool hard)
{
	float M = m;
	M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 1));
	M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 2));
	float L = (m == NEG_INF) ? 0.f : l * ex2(m - M);
	L += __shfl_xor_sync(0xffffffffu, L, 1);
	L += __shfl_xor_sync(0xffffffffu, L, 2);
	return hard ? M : M + __log2f(L);
}

/*
 * After the quads' lists are stashed (cv, ci: [BM][4][MM], lzs: [BM] in log2
 * units): thread tid < BM merges row row0 + tid into the outputs; returns the
 * row's log-likelihood (T = 1), 0 for other threads and rows past nrows.
 */
template <int MM>
__device__ __forceinline__ double merge_rows(const float *cv, const int *ci, const float *lzs, int BM, int tid,
											 int64_t row0, int64_t nrows, float invT, int m_out, float tau,
											 int32_t *out_comp, float *out_resp)
{
	double mine = 0.0;
	if (tid < BM)
	{
		const int r = tid;
		const int64_t gr = row0 + r;
		const float lz = lzs[r];
		if (gr < nrows)
		{
			mine = (double) (lz * LN2);	/* the row's log-likelihood when T = 1 */
			topm_merge_row<MM, true>(cv + r * 4 * MM, ci + r * 4 * MM, lz, invT, m_out, tau, out_comp + gr * m_out,
									 out_resp ? out_resp + gr * m_out : nullptr);
		}
	}
	return mine;
}

/*
 * Pass 1 over a block of rows (Xg, xh from convert16_kernel): logZ_n = log
 * sum_k exp(s_nk) (max with hard) for BM1 rows per thread block; warp w owns
 * rows 16w..16w+15 and walks all components in tiles of bn1, the next tile's
 * model rows arriving by cp.async meanwhile.
 * MAXM > 0: the top-m soft assignment instead (gmm_assign's rules, as
 * kernels.cuh's assign_kernel): each thread keeps the best MAXM scores of its
 * columns and the tempered log-sum-exp of s / T; the quad's lists are merged
 * at the end through the rows' shared memory.  blockll (may be null) gets the
 * sum of the rows' log-sum-exp.
 */
template <bool DIAG, int MAXM>
__global__ void __launch_bounds__(NW1 * 32, 2)
lse16_kernel(const __half *__restrict__ Xg, const float *__restrict__ xh, const float *__restrict__ X,
			 int64_t nrows, int D, int Kp, const __half *__restrict__ Wh, const float *__restrict__ colc,
			 const float *__restrict__ colp, int hard, float *__restrict__ logZ, double *__restrict__ blockll,
			 Direct dr, float invT, int m_out, float tau, int32_t *__restrict__ out_comp,
			 float *__restrict__ out_resp, float)
{
	constexpr int BN1 = bn1(DIAG), NT = BN1 / 8;
	constexpr bool ASSIGN = MAXM > 0;
	constexpr int MM = ASSIGN ? MAXM : 1;
	const Widths<DIAG> w;
	extern __shared__ float4 smem4[];
	__half *Xh = reinterpret_cast<__half *>(smem4);
	__half *Wt = Xh + BM1 * w.LD;					/* 2 buffers of BN1 x LD */
	float2 *cst = reinterpret_cast<float2 *>(Wt + 2 * BN1 * w.LD);	/* 2 x BN1 */
	int *flg = reinterpret_cast<int *>(cst + 2 * BN1);			/* 2 x BN1 */
	__shared__ double lsum[NW1];

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int64_t row0 = (int64_t) blockIdx.x * BM1;
	const bool sph = !DIAG;
	const int ntiles = Kp / BN1;
	if (!ASSIGN)
		invT = 1.f;
	const float ltau = ASSIGN ? tau_bound(tau) : NEG_INF;

	load_tile(Xh, Xg + row0 * 2 * w.IN, BM1, w, NW1 * 32, tid);
	load_tile(Wt, Wh, BN1, w, NW1 * 32, tid);
	cp_commit();
	bool fany = tile_constants(cst, flg, colc, colp, dr, 0, BN1, tid);
	float hx[2];					/* ||x S||^2 / 2 of this thread's two rows (spherical) */
#pragma unroll
	for (int h = 0; h < 2; h++)
		hx[h] = sph ? __ldg(xh + row0 + warp * 16 + g + 8 * h) : 0.f;

	float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
	float tv[2][MM];				/* assignment: best scores (log2 units) and their components */
	int ti[2][MM];
#pragma unroll
	for (int h = 0; h < 2; h++)
#pragma unroll
		for (int q = 0; q < MM; q++)
			tv[h][q] = NEG_INF, ti[h][q] = -1;
	float acc[NT][4];
	for (int kt = 0; kt < ntiles; kt++)
	{
		const int b = kt & 1;
		const __half *Wc = Wt + b * BN1 * w.LD;
		bool fnext = false;
		if (kt + 1 < ntiles)
		{
			load_tile(Wt + (b ^ 1) * BN1 * w.LD, Wh + (int64_t) (kt + 1) * BN1 * 2 * w.IN, BN1, w, NW1 * 32, tid);
			cp_commit();
			fnext = tile_constants(cst + (b ^ 1) * BN1, flg + (b ^ 1) * BN1, colc, colp, dr, (kt + 1) * BN1, BN1,
								   tid);
			cp_wait<1>();
		}
		else
			cp_wait<0>();
		const bool tflag = __syncthreads_or(fany) != 0;
		fany = fnext;
		score_tile<NT, DIAG>(acc, Xh + warp * 16 * w.LD, false, Wc, w, lane);
		const int k0 = kt * BN1;
		const float2 *cs = cst + b * BN1;
#pragma unroll
		for (int h = 0; h < 2; h++)
		{
			int r = warp * 16 + g + 8 * h;
			int64_t gr = row0 + r;
			float s[NT][2];
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int e = 0; e < 2; e++)
				{
					float2 q = cs[j * 8 + 2 * t + e];
					s[j][e] = sph ? fmaf(q.y, acc[j][2 * h + e] - hx[h], q.x) : fmaf(acc[j][2 * h + e], L2E, q.x);
				}
			if (tflag)		/* a flagged component in this tile (block-uniform) */
#pragma unroll
				for (int j = 0; j < NT; j++)
#pragma unroll
					for (int e = 0; e < 2; e++)
					{
						int c = j * 8 + 2 * t + e;
						if (flg[b * BN1 + c] && gr < nrows)
							s[j][e] = direct_score(dr, X, gr, D, k0 + c) * L2E;
					}
			row_tile<NT, ASSIGN, MM>(m[h], l[h], tv[h], ti[h], s, invT, hard, k0, t, ltau);
		}
		__syncthreads();	/* the buffer read here is the next prefetch's target */
	}
	/* merge the quad: each thread holds a share of the same two rows; lz in log2 units */
	float lz2[2];
#pragma unroll
	for (int h = 0; h < 2; h++)
		lz2[h] = quad_lz2(m[h], l[h], hard);
	double mine = 0.0;
	if (!ASSIGN)
	{
#pragma unroll
		for (int h = 0; h < 2; h++)
		{
			int64_t gr = row0 + warp * 16 + g + 8 * h;
			if (t == 0 && gr < nrows)
			{
				logZ[gr] = lz2[h] * LN2;
				mine += (double) (lz2[h] * LN2);
			}
		}
	}
	else
	{
		/* the quad's lists through shared memory (the rows' tile is free now), merged by a thread per row */
		float *cv = reinterpret_cast<float *>(Xh);				/* [BM1][4][MAXM] */
		int *ci = reinterpret_cast<int *>(cv + BM1 * 4 * MM);		/* [BM1][4][MAXM] */
		float *lzs = reinterpret_cast<float *>(ci + BM1 * 4 * MM);	/* [BM1] */
#pragma unroll
		for (int h = 0; h < 2; h++)
		{
			int r = warp * 16 + g + 8 * h;
			topm_stash<MM>(cv, ci, r, t, tv[h], ti[h]);
			if (t == 0)
				lzs[r] = lz2[h];
		}
		__syncthreads();
		mine = merge_rows<MM>(cv, ci, lzs, BM1, tid, row0, nrows, invT, m_out, tau, out_comp, out_resp);
	}
	block_sum_fixed<NW1>(mine, lsum, blockll ? blockll + blockIdx.x : nullptr);
}

/*
 * Pass 2's flagged components in a score tile (s[4 j + q]: component kw + g
 * + 8 (q / 2), row row0 + 8 j + 2 t + q % 2, log2 units): the scores of
 * components with fl[q / 2] set, for rows before rend, from differences.
 */
template <int NT>
__device__ __forceinline__ void direct_tile(float *s, const int (&fl)[2], const Direct &dr, const float *X,
											int64_t row0, int64_t rend, int D, int kw, int g, int t)
{
#pragma unroll
	for (int j = 0; j < NT; j++)
#pragma unroll
		for (int q = 0; q < 4; q++)
		{
			const int h = q >> 1, r = j * 8 + 2 * t + (q & 1);
			if (fl[h] && row0 + r < rend)
				s[4 * j + q] = direct_score(dr, X, row0 + r, D, kw + g + 8 * h) * L2E;
		}
}

/*
 * A responsibility x R_SCALE from d = log2(r) - 15 (score - logZ', log2
 * units); hard: R_SCALE for the row's maximum, allowing the two roundings of
 * logZ's round trip to natural units and back.
 */
__device__ __forceinline__ float resp_value(float d, float score, bool hard)
{
	if (hard)
		return (d >= -15.f - 1e-6f * fabsf(score)) ? R_SCALE : 0.f;
	return (d > -RESP_CUT * L2E + 15.f) ? ex2(d) : 0.f;
}

/*
 * Pass-2 helpers shared with hopper.cuh's stats_wg_kernel.  resp_pack: four
 * responsibilities (x R_SCALE; rows r0, r0 + 1 of components g and g + 8)
 * rounded to FP16 in two A-fragment registers; sum r and, spherical, sum r
 * hx (hx0, hx1: the rows' ||x S||^2 / 2) accumulate the same rounded values.
 */
__device__ __forceinline__ void resp_pack(const float (&rv)[4], float hx0, float hx1, bool sph, float (&nk_t)[2],
										  float (&sx_t)[2], uint32_t &p01, uint32_t &p23)
{
	p01 = pack_h2(rv[0], rv[1]);
	p23 = pack_h2(rv[2], rv[3]);
	const float2 f01 = __half22float2(*reinterpret_cast<__half2 *>(&p01));
	const float2 f23 = __half22float2(*reinterpret_cast<__half2 *>(&p23));
	nk_t[0] += f01.x + f01.y;
	nk_t[1] += f23.x + f23.y;
	if (sph)
	{
		sx_t[0] += f01.x * hx0 + f01.y * hx1;
		sx_t[1] += f23.x * hx0 + f23.y * hx1;
	}
}

/*
 * A score tile's responsibilities (s[4 j + q]: component g + 8 (q / 2), row
 * 8 j + 2 t + q % 2 with rows[r] = {logZ', hx}) as the statistics product's
 * FP16 A fragments ra, their sums (and, spherical, sums times hx) added to
 * nk_acc, sxn_acc in FP64.
 */
template <int NT>
__device__ __forceinline__ void resp_tile(const float *s, const float2 *rows, int t, bool hard, bool sph,
										  uint32_t (*ra)[4], double (&nk_acc)[2], double (&sxn_acc)[2])
{
	float nk_t[2] = {0.f, 0.f}, sx_t[2] = {0.f, 0.f};
#pragma unroll
	for (int j = 0; j < NT; j++)
	{
		const int r0 = j * 8 + 2 * t;
		const float2 v0 = rows[r0], v1 = rows[r0 + 1];
		float rv[4];
#pragma unroll
		for (int q = 0; q < 4; q++)
			rv[q] = resp_value(s[4 * j + q] - ((q & 1) ? v1.x : v0.x), s[4 * j + q], hard);
		uint32_t p01, p23;
		resp_pack(rv, v0.y, v1.y, sph, nk_t, sx_t, p01, p23);
		ra[j / 2][(j & 1) * 2 + 0] = p01;
		ra[j / 2][(j & 1) * 2 + 1] = p23;
	}
#pragma unroll
	for (int h = 0; h < 2; h++)
	{
		nk_acc[h] += (double) nk_t[h];
		sxn_acc[h] += (double) sx_t[h];
	}
}

/* the quad's sums of r and r ||x S||^2 / 2 (components kw + g, kw + g + 8), unscaled, into split y's row */
__device__ __forceinline__ void write_nk_sxn(const double (&nk_acc)[2], const double (&sxn_acc)[2], int kw, int g,
											 int t, int64_t y, int Kp, float S, double *part_nk, double *part_sxn)
{
#pragma unroll
	for (int h = 0; h < 2; h++)
	{
		double a = nk_acc[h], c = sxn_acc[h];
		a += __shfl_xor_sync(0xffffffffu, a, 1);
		a += __shfl_xor_sync(0xffffffffu, a, 2);
		c += __shfl_xor_sync(0xffffffffu, c, 1);
		c += __shfl_xor_sync(0xffffffffu, c, 2);
		if (t == 0)
		{
			int k = kw + g + 8 * h;
			part_nk[y * Kp + k] = a / R_SCALE;
			part_sxn[y * Kp + k] = 2.0 * c / ((double) R_SCALE * S * S);
		}
	}
}

/*
 * Pass 2 over a block of rows: thread block = 16 NW components (warp w: 16
 * of them) x a range of rows (blockIdx.y), walked in tiles of BR2 rows, the
 * next tile's FP16 rows arriving by cp.async while the current one is scored.
 * The scores' registers become the responsibilities' A fragments directly
 * (FlashAttention-2's trick), then  acc[16 x IN] += R (16 x BR2) . [x | x^2]
 * (BR2 x IN, hi and lo).  Writes part[y][k][Wd] (x: d < D, x^2: D + d),
 * pnk, psxn like stats_kernel.
 */
template <bool DIAG, int NW>
__global__ void __launch_bounds__(NW * 32, 1)
stats16_kernel(const __half *__restrict__ Xg, const float *__restrict__ xh, const float *__restrict__ X,
			   int64_t nrows, int D, int Kp, const __half *__restrict__ Wh, const float *__restrict__ colc,
			   const float *__restrict__ colp, float S, const float *__restrict__ logZ, int hard,
			   int64_t rows_per_split, float *__restrict__ part, double *__restrict__ part_nk,
			   double *__restrict__ part_sxn, int Wd, Direct dr)
{
	constexpr int BK = 16 * NW;
	constexpr int BR2 = br2(DIAG), NT = BR2 / 8;	/* rows per tile, score n-tiles (rows) */
	constexpr int NF = (DIAG ? 2 : 1) * DMAX / 8;	/* statistics n-tiles (features), at most */
	const Widths<DIAG> w;
	extern __shared__ float4 smem4[];
	__half *Wt = reinterpret_cast<__half *>(smem4);	/* BK x LD */
	__half *Xh = Wt + BK * w.LD;						/* 2 x BR2 x LD */
	float *rowv = reinterpret_cast<float *>(Xh + 2 * BR2 * w.LD);	/* 2 x BR2 x {logZ L2E - 15, ||x S||^2 / 2} */

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int k0 = blockIdx.x * BK;
	const int64_t rbeg = (int64_t) blockIdx.y * rows_per_split;
	const int64_t rend = min(nrows, rbeg + rows_per_split);
	const bool sph = !DIAG;

	/* rows [r0, r0 + BR2) into buffer b: FP16 rows by cp.async, logZ and norms by plain loads */
	auto stage = [&](int64_t r0, int b) {
		load_tile(Xh + b * BR2 * w.LD, Xg + r0 * 2 * w.IN, BR2, w, NW * 32, tid);
		cp_commit();
		for (int i = tid; i < BR2; i += NW * 32)
		{
			bool ok = r0 + i < rend;
			rowv[(b * BR2 + i) * 2] = ok ? __ldg(logZ + r0 + i) * L2E - 15.f : INFINITY;
			rowv[(b * BR2 + i) * 2 + 1] = ok && sph ? __ldg(xh + r0 + i) : 0.f;
		}
	};

	load_tile(Wt, Wh + (int64_t) k0 * 2 * w.IN, BK, w, NW * 32, tid);
	if (rbeg < rend)
		stage(rbeg, 0);
	else
		cp_commit();

	float sacc[NF][4];
#pragma unroll
	for (int j = 0; j < NF; j++)
#pragma unroll
		for (int q = 0; q < 4; q++)
			sacc[j][q] = 0.f;
	double nk_acc[2] = {0.0, 0.0}, sxn_acc[2] = {0.0, 0.0};
	const int kw = k0 + warp * 16;				/* this warp's first component */
	float cc[2], cp[2];
	int fl[2];
#pragma unroll
	for (int h = 0; h < 2; h++)
	{
		cc[h] = __ldg(colc + kw + g + 8 * h) * L2E;
		cp[h] = __ldg(colp + kw + g + 8 * h) * L2E;
		fl[h] = dr.any ? dr.flag[kw + g + 8 * h] : 0;
	}
	const bool wflag = fl[0] || fl[1];
	const float ux = 1.f / (R_SCALE * S), ux2 = 1.f / (R_SCALE * S * S);

	float acc[NT][4];
	int b = 0;
	for (int64_t row0 = rbeg; row0 < rend; row0 += BR2, b ^= 1)
	{
		cp_wait<0>();
		__syncthreads();		/* tile b is in, and every warp is done with buffer b ^ 1 */
		if (row0 + BR2 < rend)
			stage(row0 + BR2, b ^ 1);	/* arrives while this tile is worked on */
		const __half *Xc = Xh + b * BR2 * w.LD;
		const float *rv2 = rowv + b * BR2 * 2;

		/* scores S^T: this warp's 16 components x BR2 rows */
		score_tile<NT, DIAG>(acc, Wt + warp * 16 * w.LD, true, Xc, w, lane);

		/* scores in log2 units; flagged components of this warp from differences (warp-uniform) */
#pragma unroll
		for (int j = 0; j < NT; j++)
		{
			const int r0 = j * 8 + 2 * t;
			const float hx0 = rv2[r0 * 2 + 1], hx1 = rv2[r0 * 2 + 3];
#pragma unroll
			for (int q = 0; q < 4; q++)
			{
				const int h = q >> 1;
				acc[j][q] = sph ? fmaf(cp[h], acc[j][q] - ((q & 1) ? hx1 : hx0), cc[h]) : fmaf(acc[j][q], L2E, cc[h]);
			}
		}
		if (wflag)
			direct_tile<NT>(&acc[0][0], fl, dr, X, row0, rend, D, kw, g, t);

		/* responsibilities (x R_SCALE = 2^15, FP16), straight into A fragments */
		uint32_t ra[BR2 / 16][4];
		resp_tile<NT>(&acc[0][0], reinterpret_cast<const float2 *>(rv2), t, hard, sph, ra, nk_acc, sxn_acc);

		/* statistics: sacc += R (16 x BR2) . Y (BR2 x IN), Y = hi + lo columns of the tile */
		{
			const int yrow = (lane % 8) + ((lane / 8) % 2) * 8, ycol = (lane / 16) * 8;
#pragma unroll
			for (int kc = 0; kc < BR2 / 16; kc++)
			{
				const __half *yb = Xc + (kc * 16 + yrow) * w.LD + ycol;
#pragma unroll
				for (int j = 0; j < NF; j += 2)
				{
					uint32_t bb[4];
					ldsm_x4_t(bb, yb + j * 8);
					mma16(sacc[j], ra[kc], bb);
					mma16(sacc[j + 1], ra[kc], bb + 2);
					ldsm_x4_t(bb, yb + w.IN + j * 8);	/* lo: x = hi + lo */
					mma16(sacc[j], ra[kc], bb);
					mma16(sacc[j + 1], ra[kc], bb + 2);
				}
			}
		}
	}
	cp_wait<0>();

	/* this block's partial statistics, unscaled (powers of two: exact); sum r x^2 (spherical) is 2 hx */
	float *pb = part + (int64_t) blockIdx.y * Kp * Wd;
#pragma unroll
	for (int j = 0; j < NF; j++)
	{
#pragma unroll
		for (int q = 0; q < 4; q++)
		{
			int h = q >> 1, e = q & 1;
			int k = kw + g + 8 * h;
			int f = j * 8 + 2 * t + e;
			bool sq = DIAG && f >= w.Dh;
			int d = sq ? f - w.Dh : f;
			if (d < D)
				pb[(int64_t) k * Wd + (sq ? D + d : d)] = sacc[j][q] * (sq ? ux2 : ux);
		}
	}
	write_nk_sxn(nk_acc, sxn_acc, kw, g, t, blockIdx.y, Kp, S, part_nk, part_sxn);
}

/* c2l = [colc | colp] x log2(e): the constants in log2 units (lse_wg_kernel's one-product assignment) */
__global__ void log2_constants_kernel(const float *__restrict__ colc, const float *__restrict__ colp, int Kp,
									  float *__restrict__ c2l)
{
	for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < Kp; k += gridDim.x * blockDim.x)
	{
		c2l[k] = colc[k] * L2E;
		c2l[Kp + k] = colp[k] * L2E;
	}
}

/*
 * FP16 model operands and constants consistent with them (block k, FP64).
 * In:  mu (centred), var, and the FP32 constants of prepare_kernel (colc);
 * Out: Wh[k] = [hi | lo] of S mu (spherical) or of [mu prec / S | -prec /
 *      (2 S^2)] (diag); colc16 = colc corrected so that the score is exact for
 *      the model hi + lo describes; colp16 = prec / S^2 (spherical).
 * bad[k] = 1 when an operand leaves FP16's range (the host flags the
 * component: scored from differences).
 */
__global__ void prepare_h16_kernel(const float *mu, const float *var, const float *colc, int K, int Kp, int D,
								   int diag, float S, int IN, __half *Wh, float *colc16, float *colp16, int *bad)
{
	int k = blockIdx.x;
	__half *W = Wh + (int64_t) k * 2 * IN;
	if (k >= K)
	{
		for (int c = threadIdx.x; c < 2 * IN; c += blockDim.x)
			W[c] = __float2half(0.f);
		if (threadIdx.x == 0)
		{
			colc16[k] = -INFINITY;
			colp16[k] = 0.f;
			bad[k] = 0;
		}
		return;
	}
	const int Dh = diag ? IN / 2 : IN;
	const double s = S;
	__shared__ double r1[128], r2[128];
	__shared__ int rb[128];
	double a = 0.0, b = 0.0;	/* diag: a = sum log(p~ var), b = sum (mu^2 p - a~^2 / p~); sph: ||mu||^2 - ||mu~||^2 */
	int nb = 0;
	auto split = [](double v, __half &h, __half &l) {
		h = __double2half(v);
		l = __double2half(v - (double) __half2float(h));
	};
	for (int d = threadIdx.x; d < Dh; d += blockDim.x)
	{
		__half h1 = __float2half(0.f), l1 = h1, h2 = h1, l2 = h1;
		if (d < D)
		{
			double m = mu[(int64_t) k * D + d];
			if (diag)
			{
				double vr = fmax((double) var[(int64_t) k * D + d], (double) FLT_MIN);
				double p = 1.0 / vr;
				split(m * p / s, h1, l1);
				split(-0.5 * p / (s * s), h2, l2);
				double at = ((double) __half2float(h1) + __half2float(l1)) * s;
				double pt = -2.0 * ((double) __half2float(h2) + __half2float(l2)) * s * s;
				float fa = fabsf(__half2float(h1)), fb = fabsf(__half2float(h2));
				/* a precision operand outside the normal range, or an overflow: scored from differences */
				if (!(fb >= 6.104e-5f && fb <= 65504.f) || !(fa <= 65504.f))
				{
					nb++;
					h1 = l1 = h2 = l2 = __float2half(0.f);
				}
				else
				{
					a += log(pt * vr);
					b += m * m * p - at * at / pt;
				}
			}
			else
			{
				split(m * s, h1, l1);
				if (!(fabsf(__half2float(h1)) <= 65504.f))
				{
					nb++;
					h1 = l1 = __float2half(0.f);
				}
				double mt = ((double) __half2float(h1) + __half2float(l1)) / s;
				b += m * m - mt * mt;
			}
		}
		W[d] = h1;
		W[IN + d] = l1;
		if (diag)
		{
			W[Dh + d] = h2;
			W[IN + Dh + d] = l2;
		}
	}
	r1[threadIdx.x] = a;
	r2[threadIdx.x] = b;
	rb[threadIdx.x] = nb;
	__syncthreads();
	for (int o = blockDim.x / 2; o > 0; o >>= 1)
	{
		if (threadIdx.x < o)
		{
			r1[threadIdx.x] += r1[threadIdx.x + o];
			r2[threadIdx.x] += r2[threadIdx.x + o];
			rb[threadIdx.x] += rb[threadIdx.x + o];
		}
		__syncthreads();
	}
	if (threadIdx.x == 0)
	{
		double c = colc[k];
		if (diag)
		{
			colc16[k] = (float) (c + 0.5 * r1[0] + 0.5 * r2[0]);
			colp16[k] = 0.f;
		}
		else
		{
			double p = 1.0 / fmax((double) var[k], (double) FLT_MIN);
			colc16[k] = (float) (c + 0.5 * p * r2[0]);
			colp16[k] = (float) (p / (s * s));
		}
		bad[k] = rb[0] > 0;
	}
}

/* max |x| over X (centred): one value per block, the host takes the max */
__global__ void absmax_kernel(const float *X, int64_t n, float *out)
{
	float m = 0.f;
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < n; i += (int64_t) gridDim.x * blockDim.x)
		m = fmaxf(m, fabsf(X[i]));
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	__shared__ float red[32];
	if ((threadIdx.x & 31) == 0)
		red[threadIdx.x >> 5] = m;
	__syncthreads();
	if (threadIdx.x == 0)
	{
		for (int i = 1; i < (int) (blockDim.x >> 5); i++)
			m = fmaxf(m, red[i]);
		out[blockIdx.x] = m;
	}
}

/* shared memory of the two kernels; rows per block of the converted rows (<= 16 MiB) */
inline size_t lse16_smem(bool diag)
{
	const int LD = diag ? Widths<true>::LD : Widths<false>::LD;
	return (size_t) BM1 * LD * 2 + (size_t) 2 * bn1(diag) * LD * 2 + 2 * bn1(diag) * (8 + 4);
}
inline size_t stats16_smem(bool diag, int nw)
{
	const int LD = diag ? Widths<true>::LD : Widths<false>::LD;
	return (size_t) 16 * nw * LD * 2 + (size_t) 2 * br2(diag) * LD * 2 + 2 * br2(diag) * 8;
}
inline int64_t block_rows16(bool diag)
{
	return ((16ll << 20) / (4 * in_width(diag))) / BM1 * BM1;
}

}	/* namespace h16 */
}	/* namespace fgc */
