/*
 * hopper.cuh - the h16 E pass (logZ, then the statistics) and the top-m
 * assignment on Hopper's warpgroup tensor cores (wgmma.mma_async, sm_90a).
 *
 * Pass 1 (lse_wg_kernel; pass 2, stats_wg_kernel, is described where it is
 * defined, below):
 * Same inputs, outputs and precision as half.cuh's lse16_kernel, which it
 * replaces on cc 9.0 devices: the block's FP16 [hi | lo] rows (Xg, from
 * convert16_kernel), the FP16 [hi | lo] model (Wh, as stage images), three products per score
 * (x_hi.W_hi + x_lo.W_hi + x_hi.W_lo), the same epilogue (online
 * log-sum-exp in log2 units, flagged components scored from differences,
 * assign_kernel's top-m rules).  What differs is how the products run:
 *
 *   - A thread block is one producer warpgroup and two consumer warpgroups
 *     of 64 rows each (BM = 128 rows, as lse16_kernel's blocks); setmaxnreg
 *     moves registers from the producer (40) to the consumers (232).
 *   - The rows stay in shared memory for the whole walk over the components;
 *     the model streams through a ring of NS stages, one stage = one 64-half
 *     (128-byte) slice of the hi or the lo part of BN model rows.  One
 *     producer thread fills each stage with one bulk copy (cp.async.bulk)
 *     of its image, the model laid out as the stages (Wst,
 *     stage_images_kernel), completing on the stage's "full" mbarrier; the
 *     consumers signal "empty" when the wgmma reading a stage has completed.
 *   - Both operands are K-major in the 128-byte swizzled layout wgmma reads
 *     (16-byte chunk j of row r stored at chunk j ^ (r % 8)), so every k-step
 *     is one wgmma.mma_async m64nBNk16 with both operands in shared memory,
 *     FP32 accumulators in registers (the m16n8 fragment layout, so the
 *     epilogue is lse16_kernel's).
 *   - Spherical: one accumulator, the tile's three products issued back to
 *     back as one commit group, its stages released when it completes, then
 *     the epilogue (the other warpgroup's products keep the tensor cores
 *     busy meanwhile).  Diag (long cancelling sums, as lse16_kernel's CK
 *     folds): x_hi.W_hi of each 64-half slice goes to a fresh accumulator
 *     that is folded into (acc, err) with a two-sum; the two lo products
 *     (2^-11 smaller) share a plain FP32 accumulator.
 *   - Measured and dropped (cuda/NOTES.md, v5): two accumulators per
 *     warpgroup, tile kt + 1's products issued before tile kt's epilogue
 *     (ptxas serialises the wgmma: C7514/C7515; 9.0-9.4 ms against 8.8).
 *
 * The stages' bulk copies are async-proxy writes that complete on the
 * mbarrier, which is all wgmma needs; each consumer thread still runs
 * fence.proxy.async after its "full" wait, from when the producer wrote
 * them with cp.async (generic proxy); ncu put 0.4% of the screen's samples
 * on it.  The rows (prologue: generic stores) are fenced where written.
 * Pass 2's producer still uses cp.async.
 */
#pragma once
#include "half.cuh"

namespace fgc {
namespace wg {

using h16::smem_u32;

/* shapes: features padded to 128 (as half.cuh); diag operands [x | x^2] are 256 halves */
template <bool DIAG>
struct Cfg
{
	static constexpr int IN = h16::in_width(DIAG);	/* halves per operand row (hi or lo) */
	static constexpr int C = IN / 64;				/* 128-byte slices per operand row */
	static constexpr int BM = 128;					/* rows per block: 2 warpgroups x 64 */
	static constexpr int BN = DIAG ? 64 : 128;		/* components per tile (DevModel's Kp multiple) */
	static constexpr int NS = DIAG ? 8 : 10;		/* ring stages: 2 (diag) or 2.5 (spherical) tiles */
	static constexpr int STAGE = BN * 128;			/* bytes per stage */
	static constexpr int ROWS = 2 * C * BM * 128;	/* rows: [hi | lo][slice][BM][64 halves] */
	static constexpr int THREADS = 3 * 128;			/* producer + 2 consumer warpgroups */
};

/*
 * The one-product assignment (lse_wg_kernel's ONE) streams half the stages
 * per tile, so a spherical ring of 8 covers 4 tiles; the freed room holds
 * its ring of per-tile constants (NCT tiles of colc, and colp when
 * spherical, and room for SCREEN_ONEPASS's lower-bound constants), which
 * the producer copies beside the model so that no consumer register holds
 * them across the products.
 */
template <bool DIAG, bool ONE>
struct Ring
{
	static constexpr int NS = ONE && !DIAG ? Cfg<DIAG>::NS - 2 : Cfg<DIAG>::NS;
	static constexpr int NCT = ONE ? 8 : 0;						/* tiles of constants */
	static constexpr int CB0 = (DIAG ? 4 : 8) * Cfg<DIAG>::BN;	/* colc [, colp] of one tile */
	static constexpr int CB = CB0 + (ONE ? 4 * Cfg<DIAG>::BN : 0);	/* bytes of one tile's constants */
	static constexpr int XH = ONE ? 8 * Cfg<DIAG>::BM : 0;		/* the rows' ||x S||^2 / 2, two buffers (persistent screens) */
	static constexpr size_t BYTES = (size_t) NS * Cfg<DIAG>::STAGE + (size_t) NCT * CB + XH + 2 * NS * 8 + (ONE ? 32 : 0);
	/* past BYTES, the one-product assignment's insertion scratch: half a tile (BN / 8 floats) a lane of each consumer warp */
	static constexpr int SCRB = ONE ? 8 * 32 * (Cfg<DIAG>::BN / 8) * 4 : 0;
};

template <bool DIAG, bool ONE = false>
constexpr size_t smem_bytes()
{
	return 1024 + Cfg<DIAG>::ROWS + Ring<DIAG, ONE>::BYTES;
}
/* lse_wg_kernel's dynamic shared memory; the one-product assignment (MAXM > 0) also takes its scratch */
inline size_t lse_smem(bool diag, bool one = false, bool assign = false)
{
	const size_t scr = one && assign ? (diag ? Ring<true, true>::SCRB : Ring<false, true>::SCRB) : 0;
	return scr + (diag ? (one ? smem_bytes<true, true>() : smem_bytes<true>())
					   : (one ? smem_bytes<false, true>() : smem_bytes<false>()));
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FGC_WGMMA 1
#endif

/* ---- mbarriers ---- */
__device__ __forceinline__ void mbar_init(uint32_t bar, int count)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar)
{
	asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity)
{
	uint32_t done;
	do
	{
		asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
					 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
	} while (!done);
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }
/* arrive on the mbarrier when this thread's earlier cp.async copies have completed (count set at init) */
__device__ __forceinline__ void cp_async_arrive(uint32_t bar)
{
	asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void fence_proxy_async()
{
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* one arrival that also expects bytes more of asynchronous copies to complete on the mbarrier */
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes)
{
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
/* a bulk copy (the TMA unit, no tensor map) of bytes (a multiple of 16, both ends 16-byte aligned), completing on bar */
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void *src, uint32_t bytes, uint32_t bar)
{
	asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
				 "l"(src), "r"(bytes), "r"(bar)
				 : "memory");
}

/* ---- wgmma ---- */
/*
 * Descriptors of operands in the 128-byte swizzle, [slice][row][64 halves]
 * tiles: 8-row groups 1024 bytes apart (SBO, 64 in the high word) and the
 * swizzle mode (bit 62, 1 << 30 there).  K-major operands leave LBO unused
 * (16 bytes); N-major (MN-major) ones, the same tiles read with rows as K,
 * have 64-element slices of N `slice` bytes apart (LBO).
 *
 * desc_lo is the low word (address / 16, LBO), desc_of the descriptor from
 * it.  desc_lo(a) + o / 16 is desc_lo(a + o) for o a multiple of 16 while
 * a + o < 256 KB (every shared address), so the loops' constant offsets
 * fold into one add instead of the address arithmetic of each wgmma (ncu:
 * about seven uniform instructions per wgmma before, the screen's issue
 * slots).
 */
__device__ __forceinline__ uint32_t desc_lo(uint32_t saddr, uint32_t slice = 16)
{
	return ((saddr & 0x3FFFF) >> 4) | ((slice >> 4) << 16);
}
__device__ __forceinline__ uint64_t desc_of(uint32_t lo) { return ((uint64_t) (64u | (1u << 30)) << 32) | lo; }
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
/* keep the compiler from touching accumulators across the asynchronous window */
template <int R>
__device__ __forceinline__ void reg_fence(float (&d)[R])
{
#pragma unroll
	for (int i = 0; i < R; i++)
		asm volatile("" : "+f"(d[i])::"memory");
}

/* D (64 x 64, FP32) (+)= A (64 x 16) . B (64 x 16)^T, both FP16 K-major in shared memory (descriptors) */
__device__ __forceinline__ void wgmma_n64(float (&d)[32], uint64_t da, uint64_t db, int accumulate)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
				 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {"
				 "%0, %1, %2, %3, %4, %5, %6, %7, "
				 "%8, %9, %10, %11, %12, %13, %14, %15, "
				 "%16, %17, %18, %19, %20, %21, %22, %23, "
				 "%24, %25, %26, %27, %28, %29, %30, %31"
				 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
				 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
				   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
				   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
				   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
				 : "l"(da), "l"(db), "r"(accumulate));
}

/* D (64 x 128, FP32) (+)= A (64 x 16) . B (128 x 16)^T, both FP16 K-major in shared memory (descriptors) */
__device__ __forceinline__ void wgmma_n128(float (&d)[64], uint64_t da, uint64_t db, int accumulate)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
				 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
				 "%0, %1, %2, %3, %4, %5, %6, %7, "
				 "%8, %9, %10, %11, %12, %13, %14, %15, "
				 "%16, %17, %18, %19, %20, %21, %22, %23, "
				 "%24, %25, %26, %27, %28, %29, %30, %31, "
				 "%32, %33, %34, %35, %36, %37, %38, %39, "
				 "%40, %41, %42, %43, %44, %45, %46, %47, "
				 "%48, %49, %50, %51, %52, %53, %54, %55, "
				 "%56, %57, %58, %59, %60, %61, %62, %63"
				 "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
				 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
				   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
				   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
				   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
				   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
				   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
				   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
				   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
				 : "l"(da), "l"(db), "r"(accumulate));
}

/* D (64 x 128, FP32) += A (64 x 16, FP16 fragments in registers) . B (16 x 128), B N-major (features contiguous) in shared memory */
__device__ __forceinline__ void wgmma_rs_n128_tb(float (&d)[64], const uint32_t (&a)[4], uint64_t db)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
				 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
				 "%0, %1, %2, %3, %4, %5, %6, %7, "
				 "%8, %9, %10, %11, %12, %13, %14, %15, "
				 "%16, %17, %18, %19, %20, %21, %22, %23, "
				 "%24, %25, %26, %27, %28, %29, %30, %31, "
				 "%32, %33, %34, %35, %36, %37, %38, %39, "
				 "%40, %41, %42, %43, %44, %45, %46, %47, "
				 "%48, %49, %50, %51, %52, %53, %54, %55, "
				 "%56, %57, %58, %59, %60, %61, %62, %63"
				 "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
				 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
				   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
				   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
				   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
				   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
				   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
				   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
				   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
				 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

/* D (64 x 32, FP32) (+)= A (64 x 16) . B (32 x 16)^T, both FP16 K-major in shared memory (descriptors) */
__device__ __forceinline__ void wgmma_n32(float (&d)[16], uint64_t da, uint64_t db, int accumulate)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
				 "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {"
				 "%0, %1, %2, %3, %4, %5, %6, %7, "
				 "%8, %9, %10, %11, %12, %13, %14, %15"
				 "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
				 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
				   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
				 : "l"(da), "l"(db), "r"(accumulate));
}
/* D (64 x 256, FP32) += A (64 x 16, FP16 fragments in registers) . B (16 x 256), B N-major (features contiguous) in shared memory */
__device__ __forceinline__ void wgmma_rs_n256_tb(float (&d)[128], const uint32_t (&a)[4], uint64_t db)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
				 "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {"
				 "%0, %1, %2, %3, %4, %5, %6, %7, "
				 "%8, %9, %10, %11, %12, %13, %14, %15, "
				 "%16, %17, %18, %19, %20, %21, %22, %23, "
				 "%24, %25, %26, %27, %28, %29, %30, %31, "
				 "%32, %33, %34, %35, %36, %37, %38, %39, "
				 "%40, %41, %42, %43, %44, %45, %46, %47, "
				 "%48, %49, %50, %51, %52, %53, %54, %55, "
				 "%56, %57, %58, %59, %60, %61, %62, %63, "
				 "%64, %65, %66, %67, %68, %69, %70, %71, "
				 "%72, %73, %74, %75, %76, %77, %78, %79, "
				 "%80, %81, %82, %83, %84, %85, %86, %87, "
				 "%88, %89, %90, %91, %92, %93, %94, %95, "
				 "%96, %97, %98, %99, %100, %101, %102, %103, "
				 "%104, %105, %106, %107, %108, %109, %110, %111, "
				 "%112, %113, %114, %115, %116, %117, %118, %119, "
				 "%120, %121, %122, %123, %124, %125, %126, %127"
				 "}, {%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
				 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
				   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
				   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
				   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
				   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
				   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
				   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
				   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
				   "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
				   "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
				   "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
				   "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
				   "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
				   "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
				   "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
				   "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
				 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

template <int BN>
__device__ __forceinline__ void wgmma_bn(float (&d)[BN / 2], uint64_t da, uint64_t db, int accumulate)
{
	if constexpr (BN == 128)
		wgmma_n128(d, da, db, accumulate);
	else if constexpr (BN == 64)
		wgmma_n64(d, da, db, accumulate);
	else
		wgmma_n32(d, da, db, accumulate);
}

/* cp.async one 64-half slice of nrows rows (global row stride ld halves) into the swizzled layout at dst */
__device__ __forceinline__ void load_slice(uint8_t *dst, const __half *src, int64_t ld, int nrows, int tid,
										   int nthreads)
{
	for (int i = tid; i < nrows * 8; i += nthreads)
	{
		const int r = i >> 3, q = i & 7;
		h16::cp_async16(dst + r * 128 + ((q ^ (r & 7)) << 4), src + (int64_t) r * ld + q * 8);
	}
}

/*
 * The model as the images of lse_wg_kernel's ring stages (DevModel::Wst):
 * image (kt, c, p) is part p (W_hi, W_lo) of rows kt BN .. kt BN + BN - 1,
 * slice c (64 halves), in the 128-byte swizzle load_slice writes, so that
 * one bulk copy of STAGE bytes by one producer thread fills a stage (the
 * one-product kernels read the p = 0 images only).  The 128 producer
 * threads' cp.async and their address arithmetic were a quarter of the
 * 1M x 1024 diag screen's warp samples (ncu, v10).
 */
template <bool DIAG>
__device__ __forceinline__ int64_t stage_image(int kt, int c, int p)
{
	return (((int64_t) kt * Cfg<DIAG>::C + c) * 2 + p) * Cfg<DIAG>::BN * 64;	/* (halves) */
}
template <bool DIAG>
__global__ void stage_images_kernel(const __half *__restrict__ Wh, int Kp, __half *__restrict__ Wst)
{
	using G = Cfg<DIAG>;
	constexpr int C = G::C, BN = G::BN;
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < (int64_t) Kp * 2 * C * 8;
		 i += (int64_t) gridDim.x * blockDim.x)
	{
		const int k = (int) (i / (2 * C * 8)), p = (int) (i / (C * 8) % 2), c = (int) (i / 8 % C), q = (int) (i % 8);
		const int kt = k / BN, r = k % BN;
		const uint4 v = *reinterpret_cast<const uint4 *>(Wh + (int64_t) k * 2 * G::IN + p * G::IN + c * 64 + q * 8);
		*reinterpret_cast<uint4 *>(Wst + stage_image<DIAG>(kt, c, p) + r * 64 + (((q ^ (r & 7)) << 4) >> 1)) = v;
	}
}

/*
 * nrows operand rows (global: [hi | lo], 2 IN halves each) into dst's
 * [hi | lo][slice][nrows][64 halves] swizzled layout, by every thread of the
 * block; returns once they have landed and are visible to wgmma.
 */
template <int IN>
__device__ __forceinline__ void load_resident(uint8_t *dst, const __half *src, int nrows, int tid, int nthreads)
{
	constexpr int C = IN / 64;
	for (int p = 0; p < 2; p++)
		for (int c = 0; c < C; c++)
			load_slice(dst + (p * C + c) * nrows * 128, src + p * IN + c * 64, 2 * IN, nrows, tid, nthreads);
	h16::cp_commit();
	h16::cp_wait<0>();
	fence_proxy_async();
	__syncthreads();
}

/*
 * The half pair at columns c, c + 1 of row r of a block of BM rows, in the
 * slices convert_rows and convert_rows_next write: slice c / 64, 16-byte
 * chunk (c % 64) / 8 swizzled by r % 8 (the 128-byte swizzle wgmma reads)
 */
template <int BM>
__device__ __forceinline__ void put_row_half2(uint8_t *dst, int r, int c, __half2 h)
{
	const int sl = c >> 6, q = (c & 63) >> 3;
	*reinterpret_cast<__half2 *>(dst + (sl * BM + r) * 128 + ((q ^ (r & 7)) << 4) + (c & 7) * 2) = h;
}

/*
 * The one-product assignment's rows, converted here instead of by
 * convert16_kernel (whose launch was a tenth of the assignment's time): the
 * BM rows from row0 of X (N x D, FP32) as FP16 hi of [x S] (diag [x S |
 * (x S)^2]) in the swizzled slices load_resident writes, zero past D and
 * nrows, and ||x S||^2 / 2 per row into xhs, each exactly as
 * convert16_kernel computes it (a warp per row, the same order of sums).
 * Every warp of the block takes rows warp, warp + 12, ..., all of its loads
 * issued before the first is used.  Visible to wgmma on return.
 */
template <bool DIAG>
__device__ __forceinline__ void convert_rows(uint8_t *dst, float *xhs, const float *__restrict__ X, int64_t row0,
											 int64_t nrows, int D, float S, int warp, int lane)
{
	using G = Cfg<DIAG>;
	constexpr int NW = G::THREADS / 32, RPW = (G::BM + NW - 1) / NW;
	float v[RPW][4];
#pragma unroll
	for (int i = 0; i < RPW; i++)
	{
		const int r = warp + i * NW;
		const int64_t gr = row0 + r;
#pragma unroll
		for (int u = 0; u < 4; u++)
		{
			const int c = 2 * lane + (u >> 1) * 64 + (u & 1);
			v[i][u] = (r < G::BM && gr < nrows && c < D) ? __ldg(X + gr * D + c) * S : 0.f;
		}
	}
	auto put = [&](int r, int c, __half2 h) { put_row_half2<G::BM>(dst, r, c, h); };
#pragma unroll
	for (int i = 0; i < RPW; i++)
	{
		const int r = warp + i * NW;
		float n2 = 0.f;
#pragma unroll
		for (int p = 0; p < 2; p++)
		{
			const float v0 = v[i][2 * p], v1 = v[i][2 * p + 1];
			const int c = 2 * lane + p * 64;
			n2 = fmaf(v0, v0, fmaf(v1, v1, n2));
			if (r < G::BM)
			{
				put(r, c, __floats2half2_rn(v0, v1));
				if (DIAG)
					put(r, h16::DMAX + c, __floats2half2_rn(v0 * v0, v1 * v1));
			}
		}
#pragma unroll
		for (int o = 16; o > 0; o >>= 1)
			n2 += __shfl_xor_sync(0xffffffffu, n2, o);
		if (lane == 0 && r < G::BM)
			xhs[r] = 0.5f * n2;
	}
	fence_proxy_async();
	__syncthreads();
}

/* the SMs of the device (%nsmid) */
__device__ __forceinline__ uint32_t sm_count()
{
	uint32_t n;
	asm("mov.u32 %0, %%nsmid;" : "=r"(n));
	return n;
}
/* bytes from p into L2, a 128-byte line per thread at a time */
__device__ __forceinline__ void prefetch_l2(const void *p, int64_t bytes, int tid, int nthreads)
{
	const char *c = static_cast<const char *>(p);
	for (int64_t o = (int64_t) tid * 128; o < bytes; o += (int64_t) nthreads * 128)
		asm volatile("prefetch.global.L2 [%0];" ::"l"(c + o));
}

/*
 * A persistent screen's next row block (row0: its first row) converted by
 * the producer warpgroup's warps 1..3 (cw: 0..2) into a second rows buffer
 * while the consumers work on the current block: the same halves in the
 * same places as convert_rows (dst, xhs: that buffer's), with all of a
 * batch's loads issued first (the producer's 40 registers); ||x S||^2 / 2
 * is summed in another order (an FP32 rounding apart, far inside the
 * screen's margins).  Three warps have few loads in flight, and at K = 1024
 * a block's products take about as long as 128 rows' loads one batch after
 * another (v11: two scalar rows a warp lost 7% there), so one float4 a lane
 * covers a row and a batch is RB4 rows: rows must be 16-byte aligned
 * (D % 4 == 0; the host launches a CTA a block otherwise, and a persistent
 * launch without it traps rather than leave the consumers waiting).  The
 * caller fences and arrives once its rows are written.
 */
template <bool DIAG>
__device__ __forceinline__ void convert_rows_next(uint8_t *dst, float *xhs, const float *__restrict__ X, int64_t row0,
												  int64_t nrows, int D, float S, int cw, int lane)
{
	using G = Cfg<DIAG>;
	if ((D & 3) != 0 || (reinterpret_cast<uintptr_t>(X) & 15) != 0)
		__trap();
	auto put = [&](int r, int c, __half2 h) { put_row_half2<G::BM>(dst, r, c, h); };
	constexpr int RB4 = 4;
	const int c = 4 * lane;	/* (c, c + 2: one 16-byte chunk of the swizzled row) */
	for (int rb = cw * RB4; rb < G::BM; rb += 3 * RB4)
	{
		float4 v[RB4];
#pragma unroll
		for (int i = 0; i < RB4; i++)
		{
			const int64_t gr = row0 + rb + i;
			v[i] = (rb + i < G::BM && gr < nrows && c < D) ? __ldg(reinterpret_cast<const float4 *>(X + gr * D + c))
														 : make_float4(0.f, 0.f, 0.f, 0.f);
		}
#pragma unroll
		for (int i = 0; i < RB4; i++)
		{
			const int r = rb + i;
			const float x0 = v[i].x * S, x1 = v[i].y * S, x2 = v[i].z * S, x3 = v[i].w * S;
			if (r < G::BM)
			{
				put(r, c, __floats2half2_rn(x0, x1));
				put(r, c + 2, __floats2half2_rn(x2, x3));
				if (DIAG)
				{
					put(r, h16::DMAX + c, __floats2half2_rn(x0 * x0, x1 * x1));
					put(r, h16::DMAX + c + 2, __floats2half2_rn(x2 * x2, x3 * x3));
				}
			}
			/* the row's ||x S||^2 / 2 from its lanes' parts */
			float n2 = fmaf(x0, x0, fmaf(x1, x1, fmaf(x2, x2, x3 * x3)));
#pragma unroll
			for (int o = 16; o > 0; o >>= 1)
				n2 += __shfl_xor_sync(0xffffffffu, n2, o);
			if (lane == 0 && r < G::BM)
				xhs[r] = 0.5f * n2;
		}
	}
}

/* the two consumer warpgroups (threads 128..383) meet: named barrier 1 */
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }
/*
 * The consumer warpgroups take turns issuing their products (named barriers
 * 2 and 3, one per warpgroup, 256 threads each: the waiting warpgroup's sync
 * and the other's arrive), so that one's epilogue runs while the other's
 * products keep the tensor cores busy, rather than both issuing, waiting
 * and running their epilogues at the same time (FlashAttention-3's
 * "ping-pong" scheduling).  Spherical only: H100, against both issuing
 * together, the dense spherical pass 6.73 -> 6.45 ms an iteration at 1M x
 * 1024 (k-means++ start 6.01 -> 5.76), its screen 1.94 -> 1.86 ms a pass,
 * while the diag screens lost (1M x 4096: 6.00 -> 6.23 ms a pass; their
 * epilogues are shorter than the two products' wait).  FGC_PINGPONG=0 at
 * build time turns it off.
 */
#ifndef FGC_PINGPONG
#define FGC_PINGPONG 1
#endif
__device__ __forceinline__ void turn_wait(int wgi) { asm volatile("bar.sync %0, 256;\n" ::"r"(2 + wgi) : "memory"); }
__device__ __forceinline__ void turn_pass(int wgi) { asm volatile("bar.arrive %0, 256;\n" ::"r"(3 - wgi) : "memory"); }

/* one arrival per warp on an mbarrier (a consumer warp is done with a stage) */
__device__ __forceinline__ void warp_arrive(uint32_t bar, int lane)
{
	__syncwarp();
	if (lane == 0)
		mbar_arrive(bar);
}

/*
 * The sparse E pass's screen (sparse.cuh): lse_wg_kernel with one product per
 * score, run twice over the same rows.  SCREEN_MAX writes each row's best
 * lower-bound score (best, log2 units); SCREEN_COLLECT appends every component
 * whose upper-bound score is at least best - w2 to the row's candidate list
 * (cand[row][cap], count[row]; a count above cap means the list overflowed:
 * such rows go to orows[0..overflow)).  Both passes compute the same scores
 * (same code, same operands), so the row's best is always a candidate.
 *
 * SCREEN_ONEPASS does both in one walk (the lower-bound constants, as
 * cdl = lo - hi, stream with the upper ones), given a lower bound on each row's best from
 * the previous pass (best, as either mode left it): a component is
 * appended when its upper-bound score is within w2 of max(best - slack2,
 * running maximum of the lower-bound scores).  A row whose final maximum
 * ends below best - slack2 had too high a threshold: it is marked
 * overflowed, and best gets this pass's maximum (its full SCREEN_MAX), from
 * which SCREEN_COLLECT collects such rows again (gathered: Screen::rmap).
 */
enum
{
	SCREEN_NONE = 0,
	SCREEN_MAX = 1,
	SCREEN_COLLECT = 2,
	SCREEN_ONEPASS = 3
};
struct Screen
{
	float *best = nullptr;		/* [rows]: the row's best lower-bound score (SCREEN_ONEPASS: the last pass's, in and out) */
	int32_t *cand = nullptr;	/* [rows][cap] */
	int32_t *count = nullptr;	/* [rows] */
	int *overflow = nullptr;	/* rows whose count exceeds cap */
	int32_t *orows = nullptr;	/* [rows]: those rows, in any order (rows of a sparse block: int32) */
	int cap = 0;
	float w2 = 0.f;				/* the window, log2 units */
	float slack2 = 0.f;			/* how far the best may fall between passes, log2 units */
	const float *cdl = nullptr;	/* [Kp]: the lower-bound constants less the upper ones (colc: c2s hi), c2s dl */
	/*
	 * SCREEN_COLLECT over gathered rows: launch row i is row rmap[i] of
	 * best, cand, count and orows (nullptr: the identity).  A one-pass
	 * screen's failed rows are collected again this way, from the full
	 * maximum that pass left in best.
	 */
	const int32_t *rmap = nullptr;
};

/*
 * lse16_kernel's contract (half.cuh) on wgmma: logZ of BM rows per thread
 * block, or with MAXM > 0 the top-m assignment.  Warpgroup 0: the
 * producer; warpgroups 1 and 2: the consumers (rows 64 (wg - 1) ..).
 *
 * ONE (assignment only): one product per score, x_hi.W_hi (FP16 operands,
 * FP32 accumulation), for a ranking that need not be EM-accurate (measured
 * against the CPU engine: cuda/NOTES.md, v6).  Only the W_hi slices stream,
 * with the tiles' constants (colc, colp: here already in log2 units, the
 * model's c2l); the rows' unused lo part is the persistent kernel's second
 * rows buffer (below).
 *
 * The screens (SCR != SCREEN_NONE) and the one-product assignment are
 * persistent when launched with fewer blocks than row blocks
 * (persistent_grid): a CTA takes row blocks blockIdx.x, + gridDim.x, ...,
 * and while the consumers work on one, the producer warpgroup's warps 1..3
 * (idle since one thread streams the ring) convert the next one's rows into
 * the other rows buffer (the lo half, which one product leaves free), so no
 * prologue stands between blocks (ncu: 17-22% of the screen's warp samples,
 * cuda/NOTES.md v9, v10; 18% of the assignment's, v13).  rows_full[b]:
 * buffer b converted (the three warps); rows_free[b]: the consumers are done
 * with buffer b (their eight warps).  Stage and constants-slot numbering run
 * on across blocks.
 */
template <bool DIAG, int MAXM, bool ONE = false, int SCR = SCREEN_NONE>
__global__ void __launch_bounds__(Cfg<DIAG>::THREADS, 1)
lse_wg_kernel(const __half *__restrict__ Xg, const float *__restrict__ xh, const float *__restrict__ X,
			  int64_t nrows, int D, int Kp, const __half *__restrict__ Wst, const float *__restrict__ colc,
			  const float *__restrict__ colp, int hard, float *__restrict__ logZ, double *__restrict__ blockll,
			  Direct dr, float invT, int m_out, float tau, int32_t *__restrict__ out_comp,
			  float *__restrict__ out_resp, float S, Screen sc = Screen())
{
#if defined(FGC_WGMMA)
	using G = Cfg<DIAG>;
	using RG = Ring<DIAG, ONE>;
	constexpr int BN = G::BN, NT = BN / 8, C = G::C, NS = RG::NS, NR = BN / 2, NCT = RG::NCT, CB = RG::CB;
	constexpr bool SCREEN = SCR != SCREEN_NONE;
	constexpr bool ASSIGN = MAXM > 0 && !SCREEN;
	/* persistent when launched with fewer blocks than row blocks (above): the screens and the one-product assignment */
	constexpr bool PERSIST = SCREEN || (ASSIGN && ONE);
	constexpr int MM = ASSIGN ? MAXM : 1;
	constexpr int PP = ONE ? 1 : 2;		/* model parts streamed: W_hi (and W_lo) */
	static_assert(!ONE || ASSIGN || SCREEN, "one product per score ranks or screens; logZ for EM takes three");
	static_assert(!SCREEN || ONE, "the screen is one product per score");
	__shared__ int scnt[SCREEN ? G::BM : 1];	/* SCREEN_COLLECT, SCREEN_ONEPASS: each row's count, from its quad to its writer */
	static_assert(!(ASSIGN && PERSIST) || 2 * G::BM * 4 * MM * 4 <= C * G::BM * 128,
				  "the quads' lists fit the block's rows buffer");
	constexpr float L2E = h16::L2E, LN2 = h16::LN2;
	extern __shared__ float4 smem4[];
	__shared__ double lsum[G::THREADS / 32];
	const uint32_t raw = smem_u32(smem4), base = (raw + 1023) & ~1023u;
	uint8_t *gb = reinterpret_cast<uint8_t *>(smem4) + (base - raw);	/* 1024-aligned (the swizzle's period) */
	const uint32_t srows = base, sring = base + G::ROWS, sconst = sring + NS * G::STAGE, sxh = sconst + NCT * CB,
				   sbar = sxh + RG::XH, sscr = sbar + 2 * NS * 8 + (ONE ? 32 : 0);	/* (Ring::BYTES's order) */
	float *xhs = reinterpret_cast<float *>(gb + (sxh - base));	/* ONE: the rows' ||x S||^2 / 2 */
	auto full = [&](int s) { return sbar + 8 * s; };
	auto empty = [&](int s) { return sbar + 8 * (NS + s); };
	auto rows_full = [&](int b) { return sbar + 8 * (2 * NS + b); };	/* persistent screens (above) */
	auto rows_free = [&](int b) { return sbar + 8 * (2 * NS + 2 + b); };

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int64_t row0 = (int64_t) blockIdx.x * G::BM;	/* (the CTA's first row block) */
	const int64_t nblk = (nrows + G::BM - 1) / G::BM;
	const int ntiles = Kp / BN;
	if (!ASSIGN)
		invT = 1.f;
	const float ltau = ASSIGN ? h16::tau_bound(tau) : NEG_INF;	/* (row_tile, rows_tile_compact) */

	if (tid == 0)
		for (int s = 0; s < NS; s++)
		{
			mbar_init(full(s), 1);			/* the producer's bulk copies' thread */
			mbar_init(empty(s), 8);			/* the consumers' warps (lane 0 of each) */
		}
	if (PERSIST && tid == 0)
		for (int b = 0; b < 2; b++)
		{
			mbar_init(rows_full(b), 3);		/* the converting warps (lane 0 of each) */
			mbar_init(rows_free(b), 8);		/* the consumers' warps */
		}
	if (SCREEN && tid < G::BM)
		scnt[tid] = 0;	/* (every row's count is written before it is read; kept as measured) */
	if constexpr (ONE)
	{
		/*
		 * The rows of the block that will start about when this one ends
		 * (one block an SM, dispatched in order: this one plus the SM
		 * count) into L2 first, so that its prologue, which nothing
		 * overlaps, reads them from L2 rather than HBM (ncu: the
		 * conversion was a fifth of the 1M x 1024 diag screen's samples)
		 */
		const int64_t pr0 = row0 + (int64_t) sm_count() * G::BM, pr1 = min(pr0 + G::BM, nrows);
		if (pr0 < pr1)
			prefetch_l2(X + pr0 * D, (pr1 - pr0) * D * (int64_t) sizeof(float), tid, G::THREADS);
		convert_rows<DIAG>(gb, xhs, X, row0, nrows, D, S, warp, lane);	/* the block's rows, x_hi only */
	}
	else
	{
		/* (the same for the FP16 rows; Xg holds whole blocks of BM rows) */
		const int64_t pr0 = row0 + (int64_t) sm_count() * G::BM;
		if (pr0 < nrows)
			prefetch_l2(Xg + pr0 * 2 * G::IN, (int64_t) G::BM * 2 * G::IN * (int64_t) sizeof(__half), tid, G::THREADS);
		load_resident<G::IN>(gb, Xg + row0 * 2 * G::IN, G::BM, tid, G::THREADS);	/* the block's rows */
	}

	double mine = 0.0;
	const int role = __shfl_sync(0xffffffffu, tid >> 7, 0);	/* warpgroup, provably warp-uniform */
	if (role == 0)
	{
		/*
		 * Producer: stages in the consumers' order, per tile, per slice c:
		 * W_hi[c] (and W_lo[c]), from the stage images Wst (stage_images_kernel)
		 * by one thread, each a bulk copy onto the stage's full barrier (the
		 * byte count expected with its one arrival).  ONE: with a tile's
		 * first stage, its constants.  A constants slot was last read NCT
		 * tiles ago: every consumer has released this stage's previous use,
		 * NS / C <= 4 tiles back, so it is past that tile's epilogue.
		 */
		static_assert(!ONE || NS / C < NCT, "a constants slot outlives its tile's epilogue");
		setmaxnreg_dec<40>();
		if (tid == 0)
		{
			constexpr uint32_t CW = BN * 4;	/* bytes of one row of constants (colc, colp, cdl) */
			constexpr uint32_t CBYTES = ONE ? RG::CB0 + (SCR == SCREEN_ONEPASS ? CW : 0) : 0;
			int n = 0, nt = 0;	/* stages, tiles so far (persistent screens: over the CTA's row blocks) */
			for (int64_t blk = blockIdx.x; blk < nblk; blk += gridDim.x)
			{
				for (int kt = 0; kt < ntiles; kt++, nt++)
					for (int c = 0; c < C; c++)
						for (int p = 0; p < PP; p++, n++)
						{
							const int slot = n % NS, use = n / NS;
							if (use > 0)
								mbar_wait(empty(slot), (use - 1) & 1);
							const uint32_t bar = full(slot);
							mbar_expect_tx(bar, G::STAGE + (c == 0 ? CBYTES : 0));
							if (ONE && c == 0)
							{
								const uint32_t dst = sconst + (nt % (NCT ? NCT : 1)) * CB;
								bulk_g2s(dst, colc + kt * BN, CW, bar);
								if (!DIAG)
									bulk_g2s(dst + CW, colp + kt * BN, CW, bar);
								if (SCR == SCREEN_ONEPASS)
									bulk_g2s(dst + RG::CB0, sc.cdl + kt * BN, CW, bar);
							}
							bulk_g2s(sring + slot * G::STAGE, Wst + stage_image<DIAG>(kt, c, p), G::STAGE, bar);
						}
				if (!PERSIST)
					break;
			}
		}
		else if (PERSIST && warp > 0)
		{
			/* warps 1..3: the CTA's next row block into the other rows buffer, once the consumers are done with it */
			for (int it = 0;; it++)
			{
				const int64_t nxt = blockIdx.x + (int64_t) (it + 1) * gridDim.x, nn = nxt + gridDim.x;
				if (nxt >= nblk)
					break;
				const int nb = (it + 1) & 1;
				if (it >= 1)
					mbar_wait(rows_free(nb), ((it - 1) >> 1) & 1);	/* block it - 1 (buffer nb's use (it - 1) / 2) done */
				if (nn < nblk)	/* (the one after into L2; the prologue prefetched this one) */
					prefetch_l2(X + nn * G::BM * D, (min((nn + 1) * G::BM, nrows) - nn * G::BM) * D * (int64_t) sizeof(float),
								tid - 32, 96);
				convert_rows_next<DIAG>(gb + nb * C * G::BM * 128, xhs + nb * G::BM, X, nxt * G::BM, nrows, D, S, warp - 1,
										lane);
				fence_proxy_async();	/* generic-proxy writes before the consumers' wgmma reads */
				__syncwarp();
				if (lane == 0)
					mbar_arrive(rows_full(nb));
			}
		}
	}
	else
	{
		setmaxnreg_inc<232>();
		const int wgi = role - 1, w4 = warp & 3;
		auto lrow = [&](int h) { return wgi * 64 + w4 * 16 + g + 8 * h; };	/* the block row of this thread's row h */
		const uint32_t arow = srows + wgi * 64 * 128;	/* this warpgroup's 64 rows in every slice */
		const uint32_t alo = desc_lo(arow), blo = desc_lo(sring);
		auto adesc = [&](int p, int c, int kk) { return desc_of(alo + (((p * C + c) * G::BM * 128 + kk * 32) >> 4)); };
		auto bdesc = [&](int n, int kk) { return desc_of(blo + (((n % NS) * G::STAGE + kk * 32) >> 4)); };
		/* stage n: wait until full, then order the producer's (generic-proxy) writes before our wgmma reads */
		auto wait_full = [&](int n) {
			mbar_wait(full(n % NS), (n / NS) & 1);
			fence_proxy_async();
		};
		auto release = [&](int n) { warp_arrive(empty(n % NS), lane); };
		for (int it = 0;; it++)
		{
		const int64_t blk = blockIdx.x + (int64_t) it * gridDim.x;
		if (blk >= nblk)
			break;
		const int64_t row0 = blk * G::BM;		/* this block's first row */
		const int buf = PERSIST ? it & 1 : 0;	/* its rows buffer (persistent: the other one is being filled) */
		const int nt0 = it * ntiles;			/* tiles before this block's (stage and constants numbering) */
		if (PERSIST && it > 0)
		{
			/* buffer buf's fills: blocks 1, 3, .. (buffer 1) and 2, 4, .. (buffer 0; the prologue filled it first) */
			mbar_wait(rows_full(buf), ((it - (buf ? 1 : 2)) >> 1) & 1);
			fence_proxy_async();
		}
		float hx[2];
#pragma unroll
		for (int h = 0; h < 2; h++)
			hx[h] = DIAG ? 0.f : ONE ? xhs[buf * G::BM + lrow(h)] : __ldg(xh + row0 + lrow(h));
		float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f}, lz2[2];
		/* SCREEN_COLLECT: the rows' thresholds, the screened maximum less the window (log2 units) */
		float thr[2] = {INFINITY, INFINITY}, sd[2] = {INFINITY, INFINITY};
		/* the rows of best, cand and count this thread's rows write (SCREEN_COLLECT may gather them: rmap) */
		int64_t orow[2];
#pragma unroll
		for (int h = 0; h < 2; h++)
		{
			const int64_t gr = row0 + lrow(h);
			orow[h] = SCR == SCREEN_COLLECT && sc.rmap && gr < nrows ? __ldg(sc.rmap + gr) : gr;
		}
		if constexpr (SCR == SCREEN_COLLECT)
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				const int64_t gr = row0 + lrow(h);
				if (gr < nrows)	/* never below -FLT_MAX: a -inf score (screen-flagged) is no candidate */
					thr[h] = fmaxf(__ldg(sc.best + orow[h]) - sc.w2, -FLT_MAX);
			}
		if constexpr (SCR == SCREEN_ONEPASS)
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				const int64_t gr = row0 + lrow(h);
				if (gr < nrows)
				{
					sd[h] = sc.best[gr] - sc.slack2;	/* (NaN: no seed, as -inf) */
					thr[h] = fmaxf(fmaxf(sd[h], NEG_INF) - sc.w2, -FLT_MAX);
				}
			}
		float tv[2][MM];
		int ti[2][MM];
		int cnt[2] = {0, 0};	/* SCREEN_COLLECT, SCREEN_ONEPASS: the row's candidates so far (the quad's) */
#pragma unroll
		for (int h = 0; h < 2; h++)
#pragma unroll
			for (int q = 0; q < MM; q++)
				tv[h][q] = NEG_INF, ti[h][q] = -1;

		/*
		 * The tile's constants in log2 units, loaded while its products run
		 * (used at once in the epilogue, these loads were pass 1's largest
		 * stall), scaled once for both of the thread's rows.
		 */
		float2 ccv[NT], cpv[DIAG ? 1 : NT];
		auto load_constants = [&](int kt) {
#pragma unroll
			for (int j = 0; j < NT; j++)
			{
				const int k = kt * BN + j * 8 + 2 * t;
				const float2 cc = __ldg(reinterpret_cast<const float2 *>(colc + k));
				ccv[j] = make_float2(cc.x * L2E, cc.y * L2E);
				if (!DIAG)
				{
					const float2 cp = __ldg(reinterpret_cast<const float2 *>(colp + k));
					cpv[DIAG ? 0 : j] = make_float2(cp.x * L2E, cp.y * L2E);
				}
			}
		};
		/*
		 * Epilogue (lse16_kernel's) of tile kt, reading d only (writing it
		 * would serialise the other accumulator's wgmma): scores in log2
		 * units; d[4 j + 2 h + e] = (row g + 8h, col 8j + 2t + e).
		 */
		/* ONE assignment: this warp's insertion scratch (Ring::SCRB), past the barriers */
		float *scr = reinterpret_cast<float *>(gb + (sscr - base)) + (warp - 4) * 32 * NT;
		auto epilogue = [&](const float (&d)[NR], int kt) {
			const int k0 = kt * BN;
			float s2[2][NT][2];
			/* flagged components: scores from differences (unrolled: a runtime index would put s in local memory) */
			auto direct = [&](float (&s)[NT][2], int h) {
				const int64_t gr = row0 + lrow(h);
#pragma unroll
				for (int j = 0; j < NT; j++)
#pragma unroll
					for (int e = 0; e < 2; e++)
					{
						const int k = k0 + j * 8 + 2 * t + e;
						if (dr.flag[k] && gr < nrows)
							s[j][e] = direct_score(dr, X, gr, D, k) * L2E;
					}
			};
			if constexpr (ONE)
			{
				/* the tile's constants (already in log2 units) from the ring, once for both rows */
				const float *cs =
					reinterpret_cast<const float *>(gb + (sconst - base)) + ((nt0 + kt) % (NCT ? NCT : 1)) * (CB / 4);
#pragma unroll
				for (int j = 0; j < NT; j++)
				{
					const float2 cc = *reinterpret_cast<const float2 *>(cs + j * 8 + 2 * t);
					const float2 cp = DIAG ? cc : *reinterpret_cast<const float2 *>(cs + BN + j * 8 + 2 * t);
#pragma unroll
					for (int h = 0; h < 2; h++)
#pragma unroll
						for (int e = 0; e < 2; e++)
						{
							const float v = d[4 * j + 2 * h + e], c0 = e ? cc.y : cc.x;
							s2[h][j][e] = DIAG ? fmaf(v, L2E, c0) : fmaf(e ? cp.y : cp.x, v - hx[h], c0);
						}
				}
				if (dr.any)
#pragma unroll
					for (int h = 0; h < 2; h++)
						direct(s2[h], h);
				if constexpr (SCR == SCREEN_MAX)
				{
#pragma unroll
					for (int h = 0; h < 2; h++)
						m[h] = fmaxf(m[h], h16::tile_max<NT>(s2[h]));
				}
				else if constexpr (SCR == SCREEN_COLLECT || SCR == SCREEN_ONEPASS)
				{
					/*
					 * Both of the thread's rows at once: one vote, one
					 * round count and one loop of appends for the two, and
					 * their reductions' shuffles interleaved.  Row by row
					 * (before), each row's chain (maximum, quad shuffles,
					 * threshold, vote, masks, prefix sums, appends) ran after
					 * the other's branch, with nothing to overlap its
					 * latencies: the screen is latency-bound (ncu, NOTES v18).
					 */
					float umax[2];	/* the thread's largest upper-bound score in the tile: most tiles hold no candidate of the row */
#pragma unroll
					for (int h = 0; h < 2; h++)
						umax[h] = h16::tile_max<NT>(s2[h]);
					if constexpr (SCR == SCREEN_ONEPASS)
					{
						/*
						 * Each row's running maximum of the lower bounds (the
						 * quad's), then its threshold; cdl holds lo - hi per
						 * component (0 where screen-flagged: their scores are
						 * -inf), read once for both rows.  (A looser bound, the
						 * group's largest upper bound plus its smallest dl, cost
						 * more than it saved: NOTES v19.)
						 */
						const float *cl = cs + RG::CB0 / 4;
						float p[2][4];
#pragma unroll
						for (int j = 0; j < NT; j++)
						{
							const float2 dl = *reinterpret_cast<const float2 *>(cl + j * 8 + 2 * t);
#pragma unroll
							for (int h = 0; h < 2; h++)
							{
								const float v = fmaxf(s2[h][j][0] + dl.x, s2[h][j][1] + dl.y);
								p[h][j & 3] = j < 4 ? v : fmaxf(p[h][j & 3], v);
							}
						}
						float lq[2];
#pragma unroll
						for (int h = 0; h < 2; h++)
							lq[h] = fmaxf(fmaxf(p[h][0], p[h][1]), fmaxf(p[h][2], p[h][3]));
						h16::quad_max2(lq);
#pragma unroll
						for (int h = 0; h < 2; h++)
						{
							m[h] = fmaxf(m[h], lq[h]);
							if (row0 + lrow(h) < nrows)
								thr[h] = fmaxf(fmaxf(sd[h], m[h]) - sc.w2, -FLT_MAX);
						}
					}
					/* (warp-uniform) */
					if (__any_sync(0xffffffffu, umax[0] >= thr[0] || umax[1] >= thr[1]))
					{
						/* a bit per element at or above the threshold, then the (few) appends */
						uint32_t cand[2] = {0u, 0u};
#pragma unroll
						for (int h = 0; h < 2; h++)
#pragma unroll
							for (int j = 0; j < NT; j++)
#pragma unroll
								for (int e = 0; e < 2; e++)
									cand[h] |= (s2[h][j][e] >= thr[h] ? 1u : 0u) << (2 * j + e);
						/*
						 * The appends without a divergent loop: slots from the
						 * quad's prefix sum (a row belongs to one quad of one
						 * warp, so its count lives in the quad's registers, no
						 * shared atomics), then as many rounds as the warp's
						 * busiest lane, each store predicated.  A data-dependent
						 * loop here (the atomics' do-while) made ptxas serialise
						 * every wgmma of the kernel (C7520, "compiler-inserted
						 * WG.AR in divergent path"): cuda/NOTES.md, v9.
						 */
						int pc[2], inc[2], slot[2];
#pragma unroll
						for (int h = 0; h < 2; h++)
							pc[h] = inc[h] = __popc(cand[h]);
#pragma unroll
						for (int o = 1; o <= 2; o <<= 1)
#pragma unroll
							for (int h = 0; h < 2; h++)
							{
								const int v = __shfl_up_sync(0xffffffffu, inc[h], o, 4);
								inc[h] += t >= o ? v : 0;
							}
#pragma unroll
						for (int h = 0; h < 2; h++)
						{
							slot[h] = cnt[h] + inc[h] - pc[h];
							cnt[h] += __shfl_sync(0xffffffffu, inc[h], 3, 4);
						}
						const int rounds = (int) __reduce_max_sync(0xffffffffu, (unsigned) max(pc[0], pc[1]));
						for (int it = 0; it < rounds; it++)
#pragma unroll
							for (int h = 0; h < 2; h++)
							{
								const int i = __ffs(cand[h]) - 1;
								if (cand[h] && slot[h] < sc.cap)
									sc.cand[orow[h] * sc.cap + slot[h]] = k0 + (i >> 1) * 8 + 2 * t + (i & 1);
								cand[h] &= cand[h] - 1;
								slot[h]++;
							}
					}
				}
				else
					h16::rows_tile_compact<NT, MM>(m, l, tv, ti, s2, invT, hard, k0, t, scr, lane, ltau);
			}
			else
			{
#pragma unroll
				for (int h = 0; h < 2; h++)
				{
					float (&s)[NT][2] = s2[h];
#pragma unroll
					for (int j = 0; j < NT; j++)
					{
						const float2 cc = ccv[j], cp = cpv[DIAG ? 0 : j];
#pragma unroll
						for (int e = 0; e < 2; e++)
						{
							const float v = d[4 * j + 2 * h + e], c0 = e ? cc.y : cc.x;
							s[j][e] = DIAG ? fmaf(v, L2E, c0) : fmaf(e ? cp.y : cp.x, v - hx[h], c0);
						}
					}
					if (dr.any)
						direct(s, h);
					h16::row_tile<NT, ASSIGN, MM>(m[h], l[h], tv[h], ti[h], s, invT, hard, k0, t, ltau);
				}
			}
		};

		/*
		 * Spherical, and every one-product kernel (ONE: the assignment, the
		 * screens), diag included: the one product's error is FP16's, far
		 * above FP32 accumulation's, so diag's compensated slices (below)
		 * buy nothing there and cost a wait per slice.
		 */
		if constexpr (!DIAG || ONE)
		{
			/* d = x_hi.W_hi + x_lo.W_hi + x_hi.W_lo: one commit group per tile, stages released when it completes */
			float d[NR];
			constexpr bool PINGPONG = FGC_PINGPONG && !DIAG;
			if (PINGPONG && wgi == 1)
				turn_pass(wgi);	/* warpgroup 0 issues first */
			for (int kt = 0; kt < ntiles; kt++)
			{
				const int n0 = (nt0 + kt) * PP * C;
				if (PINGPONG)
					turn_wait(wgi);
				wg_fence();
#pragma unroll
				for (int c = 0; c < C; c++)
				{
					wait_full(n0 + PP * c);
#pragma unroll
					for (int kk = 0; kk < 4; kk++)
						wgmma_bn<BN>(d, adesc(buf, c, kk), bdesc(n0 + PP * c, kk), c | kk);
					if constexpr (!ONE)
					{
#pragma unroll
						for (int kk = 0; kk < 4; kk++)
							wgmma_bn<BN>(d, adesc(1, c, kk), bdesc(n0 + 2 * c, kk), 1);
						wait_full(n0 + 2 * c + 1);
#pragma unroll
						for (int kk = 0; kk < 4; kk++)
							wgmma_bn<BN>(d, adesc(0, c, kk), bdesc(n0 + 2 * c + 1, kk), 1);
					}
				}
				wg_commit();
				if (PINGPONG && !(wgi == 1 && kt == ntiles - 1))	/* (every turn_wait met by one turn_pass) */
					turn_pass(wgi);
				if constexpr (!ONE)
					load_constants(kt);
				wg_wait<0>();
				reg_fence(d);
#pragma unroll
				for (int q = 0; q < PP * C; q++)
					release(n0 + q);
				epilogue(d, kt);
			}
		}
		else
		{
			/* x_hi.W_hi per slice into part, two-sum folded into (d, err); both lo products (not with ONE) into acc2 */
			float d[NR], part[NR], acc2[NR], err[NR];
			for (int kt = 0; kt < ntiles; kt++)
			{
				const int n0 = (nt0 + kt) * PP * C;
				if constexpr (!ONE)
					load_constants(kt);
#pragma unroll 1
				for (int c = 0; c < C; c++)
				{
					const int nh = n0 + PP * c, nl = nh + 1;
					wg_fence();
					wait_full(nh);
#pragma unroll
					for (int kk = 0; kk < 4; kk++)
						wgmma_bn<BN>(part, adesc(0, c, kk), bdesc(nh, kk), kk);
					if constexpr (!ONE)
					{
#pragma unroll
						for (int kk = 0; kk < 4; kk++)
							wgmma_bn<BN>(acc2, adesc(1, c, kk), bdesc(nh, kk), c | kk);
						wg_commit();
						wait_full(nl);
#pragma unroll
						for (int kk = 0; kk < 4; kk++)
							wgmma_bn<BN>(acc2, adesc(0, c, kk), bdesc(nl, kk), 1);
					}
					wg_commit();
					wg_wait<0>();
					reg_fence(part);
					release(nh);
					if constexpr (!ONE)
					{
						reg_fence(acc2);
						release(nl);
					}
					if (c == 0)
#pragma unroll
						for (int i = 0; i < NR; i++)
							d[i] = part[i], err[i] = 0.f;
					else
#pragma unroll
						for (int i = 0; i < NR; i++)
							h16::two_sum_fold(d[i], err[i], part[i]);
				}
#pragma unroll
				for (int i = 0; i < NR; i++)
					d[i] += ONE ? err[i] : err[i] + acc2[i];
				epilogue(d, kt);
			}
		}
		/* merge the quad: each thread holds a share of the same two rows; lz in log2 units */
#pragma unroll
		for (int h = 0; h < 2; h++)
			lz2[h] = h16::quad_lz2(m[h], l[h], hard);
		if (!ASSIGN && !SCREEN)
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				const int64_t gr = row0 + lrow(h);
				if (t == 0 && gr < nrows)
				{
					logZ[gr] = lz2[h] * LN2;
					mine += (double) (lz2[h] * LN2);
				}
			}
		if constexpr (SCR == SCREEN_MAX)
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				const int64_t gr = row0 + lrow(h);
				const float v = h16::quad_max(m[h]);
				if (t == 0 && gr < nrows)
					sc.best[gr] = v;
			}
		if constexpr (SCR == SCREEN_ONEPASS)
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				const int r = lrow(h);
				const int64_t gr = row0 + r;
				const float lb = m[h];	/* (the quad's) */
				if (t == 0 && gr < nrows)
				{
					if (lb < sd[h])		/* the seed's threshold was above this row's: not every candidate is in */
						cnt[h] += sc.cap + 1;
					sc.best[gr] = lb;
				}
			}
		if constexpr (SCR == SCREEN_COLLECT || SCR == SCREEN_ONEPASS)
		{
#pragma unroll
			for (int h = 0; h < 2; h++)
				if (t == 0)
					scnt[lrow(h)] = cnt[h];
			consumers_sync();	/* every count of the block is in scnt */
			const int r = tid - 128;
			if (r < G::BM && row0 + r < nrows)
			{
				const int n = scnt[r];
				const int64_t gr = SCR == SCREEN_COLLECT && sc.rmap ? __ldg(sc.rmap + row0 + r) : row0 + r;
				sc.count[gr] = n;
				if (n > sc.cap)
					sc.orows[atomicAdd(sc.overflow, 1)] = (int32_t) gr;
			}
		}
		if (ASSIGN)
		{
			/*
			 * The quad's lists through shared memory (the rows are free once
			 * both consumer warpgroups are here), a consumer thread per row.
			 * Inside the consumers' branch, on a named barrier: after the
			 * join the producer's 40 registers would bound these values.
			 * Persistent (ONE): in this block's rows buffer, and the rows'
			 * log-sum-exp where their ||x S||^2 / 2 were, both refilled only
			 * after rows_free (below).
			 */
			float *cv = reinterpret_cast<float *>(gb + buf * C * G::BM * 128);	/* [BM][4][MAXM] */
			int *ci = reinterpret_cast<int *>(cv + G::BM * 4 * MM);				/* [BM][4][MAXM] */
			float *lzs = PERSIST ? xhs + buf * G::BM : reinterpret_cast<float *>(ci + G::BM * 4 * MM);	/* [BM] */
			consumers_sync();
#pragma unroll
			for (int h = 0; h < 2; h++)
			{
				const int r = lrow(h);
				topm_stash<MM>(cv, ci, r, t, tv[h], ti[h]);
				if (t == 0)
					lzs[r] = lz2[h];
			}
			consumers_sync();
			mine += h16::merge_rows<MM>(cv, ci, lzs, G::BM, tid - 128, row0, nrows, invT, m_out, tau, out_comp,
										out_resp);
		}
		if (!PERSIST)
			break;
		if constexpr (SCR == SCREEN_COLLECT || SCR == SCREEN_ONEPASS)
			consumers_sync();	/* scnt read before the next block writes it */
		warp_arrive(rows_free(buf), lane);	/* done with rows buffer buf */
		}
	}
	block_sum_fixed<G::THREADS / 32>(mine, lsum, blockll ? blockll + blockIdx.x : nullptr);
#endif
}


/* ---- pass 2 ---- */

/*
 * pass 2 shapes: 128 components per block (2 warpgroups of 64, the model
 * resident), row tiles of BR through NS stages.  Diag: [x | x^2] is 256
 * halves wide, so the tiles are 32 rows (the model takes 128 KB).
 */
template <bool DIAG>
struct Cfg2
{
	static constexpr int IN = h16::in_width(DIAG);
	static constexpr int C = IN / 64;
	static constexpr int BKC = 128;					/* components per block */
	static constexpr int BR = DIAG ? 32 : 64;		/* rows per tile */
	static constexpr int NS = DIAG ? 3 : 4;			/* ring stages (row tiles) */
	static constexpr int MODEL = 2 * C * BKC * 128;	/* [hi | lo][slice][BKC][64] */
	static constexpr int ROWS = 2 * C * BR * 128;	/* one stage's rows: [hi | lo][slice][BR][64] */
	static constexpr int THREADS = 3 * 128;
};
template <bool DIAG>
constexpr size_t stats_smem_t()
{
	using G = Cfg2<DIAG>;
	return 1024 + G::MODEL + (size_t) G::NS * (G::ROWS + G::BR * 8) + 2 * G::NS * 8;
}
inline size_t stats_smem(bool diag) { return diag ? stats_smem_t<true>() : stats_smem_t<false>(); }

/*
 * stats16_kernel's contract (half.cuh; Kp % 128 == 0) on wgmma: block = 128
 * components x a range of rows (blockIdx.y), walked in tiles of BR rows that
 * a producer warpgroup streams through a ring (rows by cp.async, {logZ',
 * ||x S||^2 / 2} by plain stores).  Consumer warpgroup wg owns components
 * 64 wg .. 64 wg + 63 of the block (model resident):
 *   S^T (64 x BR) = three products W . X^T (both operands K-major, SS; diag:
 *   folded per 64-half slice, as pass 1);
 *   r = exp2(S^T - logZ') in FP16, straight into A fragments;
 *   sacc (64 x IN) += R . [x_hi ; x_lo] (A in registers, B = the same row
 *   tiles read N-major: rows are K).
 * Tile i's statistics product stays in flight while tile i + 1's scores are
 * computed; its stage is released when both have completed.
 */
template <bool DIAG>
__global__ void __launch_bounds__(Cfg2<DIAG>::THREADS, 1)
stats_wg_kernel(const __half *__restrict__ Xg, const float *__restrict__ xh, const float *__restrict__ X,
				int64_t nrows, int D, int Kp, const __half *__restrict__ Wh, const float *__restrict__ colc,
				const float *__restrict__ colp, float S, const float *__restrict__ logZ, int hard,
				int64_t rows_per_split, float *__restrict__ part, double *__restrict__ part_nk,
				double *__restrict__ part_sxn, int Wd, Direct dr)
{
#if defined(FGC_WGMMA)
	using G = Cfg2<DIAG>;
	constexpr int C = G::C, NS = G::NS, BR = G::BR, NT = BR / 8, NF = G::IN / 8;
	constexpr float L2E = h16::L2E, R_SCALE = h16::R_SCALE;
	extern __shared__ float4 smem4[];
	const uint32_t raw = smem_u32(smem4), base = (raw + 1023) & ~1023u;
	uint8_t *gb = reinterpret_cast<uint8_t *>(smem4) + (base - raw);
	const uint32_t smodel = base, sring = base + G::MODEL, sbar = sring + NS * G::ROWS + NS * BR * 8;
	float2 *rowv = reinterpret_cast<float2 *>(gb + G::MODEL + NS * G::ROWS);	/* [NS][BR] {logZ L2E - 15, hx} */
	auto full = [&](int s) { return sbar + 8 * s; };
	auto empty = [&](int s) { return sbar + 8 * (NS + s); };

	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int k0 = blockIdx.x * G::BKC;
	const int64_t rbeg = (int64_t) blockIdx.y * rows_per_split;
	const int64_t rend = min(nrows, rbeg + rows_per_split);
	const int ntiles = rbeg < rend ? (int) ((rend - rbeg + BR - 1) / BR) : 0;

	if (tid == 0)
		for (int s = 0; s < NS; s++)
		{
			mbar_init(full(s), 256);		/* the producer's threads: cp.async (noinc) + the row values */
			mbar_init(empty(s), 8);			/* the consumers' warps */
		}
	load_resident<G::IN>(gb, Wh + (int64_t) k0 * 2 * G::IN, G::BKC, tid, G::THREADS);	/* the block's model rows */

	const int role = __shfl_sync(0xffffffffu, tid >> 7, 0);
	if (role == 0)
	{
		setmaxnreg_dec<40>();
		for (int i = 0; i < ntiles; i++)
		{
			const int slot = i % NS, use = i / NS;
			const int64_t row0 = rbeg + (int64_t) i * BR;
			if (use > 0)
				mbar_wait(empty(slot), (use - 1) & 1);
			for (int p = 0; p < 2; p++)
				for (int c = 0; c < C; c++)
					load_slice(gb + G::MODEL + slot * G::ROWS + (p * C + c) * BR * 128,
							   Xg + row0 * 2 * G::IN + p * G::IN + c * 64, 2 * G::IN, BR, tid, 128);
			cp_async_arrive(full(slot));
			if (tid < BR)
			{
				const int64_t r = row0 + tid;
				const bool ok = r < rend;
				rowv[slot * BR + tid] =
					make_float2(ok ? __ldg(logZ + r) * L2E - 15.f : INFINITY, ok && !DIAG ? __ldg(xh + r) : 0.f);
			}
			mbar_arrive(full(slot));
		}
	}
	else
	{
		setmaxnreg_inc<232>();
		const int wgi = role - 1, w4 = warp & 3;
		const uint32_t amodel = smodel + wgi * 64 * 128;	/* this warpgroup's 64 components in every slice */
		const uint32_t alo = desc_lo(amodel), blo = desc_lo(sring), ylo = desc_lo(sring, BR * 128);
		auto adesc = [&](int p, int c, int kk) { return desc_of(alo + (((p * C + c) * G::BKC * 128 + kk * 32) >> 4)); };
		auto bdesc = [&](int slot, int p, int c, int kk) {
			return desc_of(blo + ((slot * G::ROWS + (p * C + c) * BR * 128 + kk * 32) >> 4));
		};
		/* the rows as K (16 per k-step), features as N (C slices of 64) */
		auto ydesc = [&](int slot, int p, int kc) {
			return desc_of(ylo + ((slot * G::ROWS + p * C * BR * 128 + kc * 16 * 128) >> 4));
		};
		auto release = [&](int slot) { warp_arrive(empty(slot), lane); };
		const int kw = k0 + wgi * 64 + w4 * 16;	/* this warp's first component */
		float cc[2], cp[2];
		int fl[2];
#pragma unroll
		for (int h = 0; h < 2; h++)
		{
			cc[h] = __ldg(colc + kw + g + 8 * h) * L2E;
			cp[h] = DIAG ? 0.f : __ldg(colp + kw + g + 8 * h) * L2E;
			fl[h] = dr.any ? dr.flag[kw + g + 8 * h] : 0;
		}
		const bool wflag = fl[0] || fl[1];
		float sacc[NF * 4], sc[BR / 2];	/* 64 x IN statistics, 64 x BR scores */
#pragma unroll
		for (int i = 0; i < NF * 4; i++)
			sacc[i] = 0.f;
		double nk_acc[2] = {0.0, 0.0}, sxn_acc[2] = {0.0, 0.0};
		uint32_t ra[BR / 16][4];
		for (int i = 0; i < ntiles; i++)
		{
			const int slot = i % NS;
			const int64_t row0 = rbeg + (int64_t) i * BR;
			mbar_wait(full(slot), (i / NS) & 1);
			fence_proxy_async();
			/* S^T = W_hi.x_hi + W_hi.x_lo + W_lo.x_hi */
			if constexpr (DIAG)
			{
				/*
				 * Long cancelling sums (as pass 1): each 64-half slice's three
				 * products into part, two-sum folded into (sc, err).  Without
				 * the folds SIFT diag means ended 1.75e-3 from the reference.
				 */
				float part[BR / 2], err[BR / 2];
#pragma unroll
				for (int c = 0; c < C; c++)
				{
					wg_fence();
#pragma unroll
					for (int kk = 0; kk < 4; kk++)
						wgmma_bn<BR>(part, adesc(0, c, kk), bdesc(slot, 0, c, kk), kk);
#pragma unroll
					for (int kk = 0; kk < 4; kk++)
					{
						wgmma_bn<BR>(part, adesc(0, c, kk), bdesc(slot, 1, c, kk), 1);
						wgmma_bn<BR>(part, adesc(1, c, kk), bdesc(slot, 0, c, kk), 1);
					}
					wg_commit();
					wg_wait<0>();	/* (c = 0: also the previous tile's statistics product) */
					reg_fence(part);
					if (c == 0)
					{
						reg_fence(sacc);
						if (i > 0)
							release((i - 1) % NS);
#pragma unroll
						for (int q = 0; q < BR / 2; q++)
							sc[q] = part[q], err[q] = 0.f;
					}
					else
#pragma unroll
						for (int q = 0; q < BR / 2; q++)
							h16::two_sum_fold(sc[q], err[q], part[q]);
				}
#pragma unroll
				for (int q = 0; q < BR / 2; q++)
					sc[q] += err[q];
			}
			else
			{
				wg_fence();
#pragma unroll
				for (int c = 0; c < C; c++)
#pragma unroll
					for (int kk = 0; kk < 4; kk++)
						wgmma_bn<BR>(sc, adesc(0, c, kk), bdesc(slot, 0, c, kk), c | kk);
#pragma unroll
				for (int c = 0; c < C; c++)
#pragma unroll
					for (int kk = 0; kk < 4; kk++)
					{
						wgmma_bn<BR>(sc, adesc(0, c, kk), bdesc(slot, 1, c, kk), 1);
						wgmma_bn<BR>(sc, adesc(1, c, kk), bdesc(slot, 0, c, kk), 1);
					}
				wg_commit();
				wg_wait<0>();			/* also the previous tile's statistics product */
				reg_fence(sc);
				reg_fence(sacc);
				if (i > 0)
					release((i - 1) % NS);
			}

			/*
			 * scores in log2 units, in place (sc[4 j + 2 h + e] = component
			 * g + 8h, row 8j + 2t + e), flagged components' from differences
			 * (as stats16_kernel), then r into A fragments
			 */
			const float2 *rv = rowv + slot * BR;	/* {logZ', hx} per row */
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int q = 0; q < 4; q++)
				{
					const int h = q >> 1;
					sc[4 * j + q] = DIAG ? fmaf(sc[4 * j + q], L2E, cc[h])
										 : fmaf(cp[h], sc[4 * j + q] - rv[j * 8 + 2 * t + (q & 1)].y, cc[h]);
				}
			if (wflag)
				h16::direct_tile<NT>(sc, fl, dr, X, row0, rend, D, kw, g, t);
			h16::resp_tile<NT>(sc, rv, t, hard, !DIAG, ra, nk_acc, sxn_acc);
			/* sacc += R . (x_hi + x_lo), left in flight */
			wg_fence();
#pragma unroll
			for (int kc = 0; kc < BR / 16; kc++)
			{
				if constexpr (DIAG)
				{
					wgmma_rs_n256_tb(sacc, ra[kc], ydesc(slot, 0, kc));
					wgmma_rs_n256_tb(sacc, ra[kc], ydesc(slot, 1, kc));
				}
				else
				{
					wgmma_rs_n128_tb(sacc, ra[kc], ydesc(slot, 0, kc));
					wgmma_rs_n128_tb(sacc, ra[kc], ydesc(slot, 1, kc));
				}
			}
			wg_commit();
		}
		wg_wait<0>();
		reg_fence(sacc);
		if (ntiles > 0)
			release((ntiles - 1) % NS);

		/* this block's partial statistics, unscaled (powers of two: exact); sum r x^2 (spherical) is 2 hx */
		const float ux = 1.f / (R_SCALE * S), ux2 = 1.f / (R_SCALE * S * S);
		float *pb = part + (int64_t) blockIdx.y * Kp * Wd;
#pragma unroll
		for (int j = 0; j < NF; j++)
#pragma unroll
			for (int q = 0; q < 4; q++)
			{
				const int k = kw + g + 8 * (q >> 1), f = j * 8 + 2 * t + (q & 1);
				const bool sq = DIAG && f >= h16::DMAX;	/* the x^2 half */
				const int d = sq ? f - h16::DMAX : f;
				if (d < D)
					pb[(int64_t) k * Wd + (sq ? D + d : d)] = sacc[4 * j + q] * (sq ? ux2 : ux);
			}
		h16::write_nk_sxn(nk_acc, sxn_acc, kw, g, t, blockIdx.y, Kp, S, part_nk, part_sxn);
	}
#endif
}

}	/* namespace wg */
}	/* namespace fgc */
