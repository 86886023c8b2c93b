/*
 * flashgmm_cuda.cu - host side of the CUDA engine: device set-up, memory,
 * streaming of X, the EM loop, k-means++ seeding, assignment.  Kernels are in
 * half.cuh (the default E pass and assignment: FP16 tensor cores), chunked.cuh
 * + blas.cuh (cuBLAS over blocks of rows) and kernels.cuh (fused TF32, the
 * fallback); the precision of each part is written there.
 *
 * Memory on the device for one call (nothing N x K):
 *   X (resident) or 2 chunk buffers (streaming), logZ for the rows on the
 *   device (N, one chunk, or one block of rows when N x 4 bytes is above
 *   16 MiB), per-block partial statistics (<= 32 MiB), one block of FP16 rows
 *   (h16, <= 16 MiB) or the cuBLAS pass's workspace, and O(K*D) model and
 *   FP64 accumulators.
 *
 * Errors: every CUDA call is checked; a failure becomes a gmm_status and a
 * message at the extern "C" boundary (C++ exceptions never cross it).  A
 * sticky error (kernel fault) leaves the CUDA context unusable: the library
 * then refuses further calls in this process with the original reason.
 * Every device allocation is registered and freed when the call returns, and
 * again at the start of the next call (in case a caller's progress callback
 * jumped out of a call), so nothing accumulates across calls.
 */
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>
#include <chrono>

#include <cuda_runtime.h>

#include "flashgmm_cuda.h"
#include "kernels.cuh"
#include "chunked.cuh"
#include "half.cuh"
#include "hopper.cuh"
#include "sparse.cuh"
#include "blas.cuh"

using namespace fgc;

namespace {

constexpr double EMPTY_NK = 0.5;	/* same rule as the CPU engine (gmm_cpu.c) */
constexpr double LOG_2PI = 1.8378770664093454835606594728112;
constexpr int64_t PART_BYTES_MAX = 16ll << 20;

struct Fail
{
	gmm_status st;
	char msg[256];
};

[[noreturn]] void fail(gmm_status st, const char *fmt, ...)
{
	Fail f;
	f.st = st;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f.msg, sizeof(f.msg), fmt, ap);
	va_end(ap);
	throw f;
}

bool g_inited = false;
bool g_broken = false;
char g_broken_msg[256];
char g_devname[160] = "";
cudaDeviceProp g_prop;
int g_prec = GMM_GPU_PREC_DEFAULT;
int64_t g_budget = 0;
gmm_gpu_stats g_stats;
cudaStream_t g_s = nullptr, g_cs = nullptr;
Blas g_blas;
char g_variant[256] = "none yet";
double g_prof[4];				/* FLASHGMM_GPU_PROFILE: ms in scores, softmax, flagged, statistics */

/* FLASHGMM_GPU_PROFILE=1: time each step of the chunked pass, print the sums to stderr per call */
bool profiling()
{
	static const bool on = getenv("FLASHGMM_GPU_PROFILE") != nullptr;
	return on;
}

/* an integer tuning switch from the environment: its value where it lies in [lo, hi], else dflt */
int64_t env_int(const char *name, int64_t lo, int64_t hi, int64_t dflt)
{
	const char *e = getenv(name);
	const int64_t v = e ? atoll(e) : dflt;
	return v >= lo && v <= hi ? v : dflt;
}
/* the same for a real-valued one (a NaN or garbage value reads as outside the range) */
double env_float(const char *name, double lo, double hi, double dflt)
{
	const char *e = getenv(name);
	const double v = e ? atof(e) : dflt;
	return v >= lo && v <= hi ? v : dflt;
}

bool is_sticky(cudaError_t e)
{
	switch (e)
	{
		case cudaErrorIllegalAddress:
		case cudaErrorLaunchFailure:
		case cudaErrorIllegalInstruction:
		case cudaErrorMisalignedAddress:
		case cudaErrorInvalidAddressSpace:
		case cudaErrorInvalidPc:
		case cudaErrorHardwareStackError:
		case cudaErrorAssert:
		case cudaErrorECCUncorrectable:
		case cudaErrorLaunchTimeout:
		case cudaErrorUnknown:
			return true;
		default:
			return false;
	}
}

void ck(cudaError_t e, const char *what, int line)
{
	if (e == cudaSuccess)
		return;
	cudaGetLastError();			/* clear a non-sticky error */
	if (e == cudaErrorMemoryAllocation)
		fail(GMM_ENOMEM, "out of GPU memory (%s)", what);
	if (is_sticky(e))
	{
		g_broken = true;
		snprintf(g_broken_msg, sizeof(g_broken_msg),
				 "GPU kernel fault: %s (%s, line %d); the CUDA context of this process is unusable, reconnect to use the GPU again",
				 cudaGetErrorString(e), what, line);
		fail(GMM_EDEVICE, "%s", g_broken_msg);
	}
	fail(GMM_EDEVICE, "CUDA error: %s (%s, line %d)", cudaGetErrorString(e), what, line);
}
#define CK(x) ck((x), #x, __LINE__)
#define CKL(name) ck(cudaGetLastError(), name, __LINE__)

/* ---- registered allocations ------------------------------------------------ */
struct Alloc
{
	void *p;
	size_t bytes;
	int kind;					/* 0 device, 1 pinned host, 2 registered host, 3 event (p: the cudaEvent_t) */
};
std::vector<Alloc> g_allocs;
int64_t g_live = 0, g_peak = 0;

void free_all()
{
	for (auto &a : g_allocs)
	{
		if (a.kind == 0)
			cudaFree(a.p);
		else if (a.kind == 1)
			cudaFreeHost(a.p);
		else if (a.kind == 2)
			cudaHostUnregister(a.p);
		else
			cudaEventDestroy(static_cast<cudaEvent_t>(a.p));
	}
	g_allocs.clear();
	g_live = 0;
	cudaGetLastError();
}

template <typename T>
T *dalloc(size_t n, const char *what)
{
	void *p = nullptr;
	size_t bytes = std::max<size_t>(n, 1) * sizeof(T);
	cudaError_t e = cudaMalloc(&p, bytes);
	if (e != cudaSuccess)
	{
		cudaGetLastError();
		if (e == cudaErrorMemoryAllocation)
			fail(GMM_ENOMEM, "out of GPU memory allocating %s (%.1f MiB; engine holds %.1f MiB)", what,
				 bytes / 1048576.0, g_live / 1048576.0);
		ck(e, what, __LINE__);
	}
	g_allocs.push_back({p, bytes, 0});
	g_live += bytes;
	g_peak = std::max(g_peak, g_live);
	return static_cast<T *>(p);
}

void dfree(void *p)
{
	for (size_t i = 0; i < g_allocs.size(); i++)
		if (g_allocs[i].p == p && g_allocs[i].kind == 0)
		{
			cudaFree(p);
			g_live -= g_allocs[i].bytes;
			g_allocs.erase(g_allocs.begin() + i);
			return;
		}
}

/* pinned host memory of bytes, or nullptr (the caller has another way) */
void *try_pinned(size_t bytes)
{
	void *p = nullptr;
	if (cudaMallocHost(&p, bytes) != cudaSuccess)
	{
		cudaGetLastError();
		return nullptr;
	}
	g_allocs.push_back({p, bytes, 1});
	return p;
}

float *pinned(size_t n)
{
	void *p = try_pinned(n * sizeof(float));
	if (!p)
		fail(GMM_ENOMEM, "out of pinned host memory (%.1f MiB)", n * 4 / 1048576.0);
	return static_cast<float *>(p);
}

/* an event without timing, destroyed with the call's allocations */
cudaEvent_t registered_event()
{
	cudaEvent_t e = nullptr;
	CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
	g_allocs.push_back({static_cast<void *>(e), 0, 3});
	return e;
}

bool try_register(const void *p, size_t bytes)
{
	if (cudaHostRegister(const_cast<void *>(p), bytes, cudaHostRegisterReadOnly) != cudaSuccess &&
		cudaHostRegister(const_cast<void *>(p), bytes, cudaHostRegisterDefault) != cudaSuccess)
	{
		cudaGetLastError();
		return false;
	}
	g_allocs.push_back({const_cast<void *>(p), bytes, 2});
	return true;
}

/* ---- small kernels ----------------------------------------------------------- */

__global__ void center_kernel(float *X, int64_t n, int D, const float *shift)
{
	for (int64_t r = blockIdx.x; r < n; r += gridDim.x)
		for (int d = threadIdx.x; d < D; d += blockDim.x)
			X[r * D + d] -= shift[d];
}

/*
 * Fixed-order tree sum of red[0 .. blockDim.x) (shared memory; blockDim.x a
 * power of two) into red[0]; every thread of the block calls it after
 * writing its own red[threadIdx.x].
 */
__device__ void block_tree_sum(double *red)
{
	__syncthreads();
	for (int o = blockDim.x / 2; o > 0; o >>= 1)
	{
		if (threadIdx.x < o)
			red[threadIdx.x] += red[threadIdx.x + o];
		__syncthreads();
	}
}

/* out[0] (+)= sum of v[0..n) in a fixed order (one block) */
__global__ void sum_kernel(const double *v, int64_t n, double *out, int add)
{
	__shared__ double sh[1024];
	double s = 0.0;
	for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
		s += v[i];
	sh[threadIdx.x] = s;
	block_tree_sum(sh);
	if (threadIdx.x == 0)
		out[0] = (add ? out[0] : 0.0) + sh[0];
}

/* acc += sum over splits (fixed order) of the partial statistics */
__global__ void reduce_parts_kernel(const float *part, const double *pnk, const double *psxn, int nsplit, int Kp,
									int K, int Wd, double *sx, double *nk, double *sxn)
{
	int64_t total = (int64_t) K * Wd;
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < total; i += (int64_t) gridDim.x * blockDim.x)
	{
		int k = (int) (i / Wd);
		int c = (int) (i % Wd);
		double s = 0.0;
		for (int y = 0; y < nsplit; y++)
			s += (double) part[((int64_t) y * Kp + k) * Wd + c];
		sx[i] += s;
		if (c == 0)
		{
			double a = 0.0, b = 0.0;
			for (int y = 0; y < nsplit; y++)
			{
				a += pnk[(int64_t) y * Kp + k];
				b += psxn[(int64_t) y * Kp + k];
			}
			nk[k] += a;
			sxn[k] += b;
		}
	}
}

/*
 * M-step for component k (block k), FP64, the CPU engine's formulas
 * (centred coordinates):  mu = sx / nk,  var = sxx / nk - mu^2 (>= 0) + reg,
 * weight_raw = nk + 10 eps.  Empty components (nk < 0.5) are left to the host.
 */
__global__ void mstep_kernel(const double *nk, const double *sx, const double *sxn, int D, int Wd, int diag,
							 double reg, float *mu, float *var, double *wraw)
{
	int k = blockIdx.x;
	double n = nk[k];
	if (n < EMPTY_NK)
		return;
	double nkd = n + 10.0 * DBL_EPSILON;
	const double *s = sx + (int64_t) k * Wd;
	__shared__ double red[256];
	double q = 0.0;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
	{
		double md = s[d] / nkd;
		mu[(int64_t) k * D + d] = (float) md;
		if (diag)
		{
			double vd = s[D + d] / nkd - md * md;
			if (vd < 0.0)
				vd = 0.0;
			var[(int64_t) k * D + d] = (float) (vd + reg);
		}
		else
			q += md * md;
	}
	if (!diag)
	{
		red[threadIdx.x] = q;
		block_tree_sum(red);
		if (threadIdx.x == 0)
		{
			double vd = (sxn[k] / nkd - red[0]) / D;
			if (vd < 0.0)
				vd = 0.0;
			var[k] = (float) (vd + reg);
		}
	}
	if (threadIdx.x == 0)
		wraw[k] = nkd;
}

/*
 * Derived constants of component k (block k; k >= K are padding), FP64:
 *   spherical: Wm[k] = mu_k, colp = 1/var, colc = log w - D/2 log(2 pi var) - ||mu||^2 / (2 var)
 *   diag:      Wm[k] = [mu/var | -1/(2 var)], colp = 0,
 *              colc = log w - 1/2 sum_d log(2 pi var_d) - 1/2 sum_d mu_d^2 / var_d
 */
/*
 * m2[d] = sum_k w_k (mu_kd^2 + var_kd): the model's second moment of
 * (centred) x per dimension.  A block takes 32 features and MOMENT_SLICES
 * slices of the components: thread (tx, ty) sums k = ty, ty + MOMENT_SLICES,
 * .. of feature 32 blockIdx.x + tx (loads coalesced across tx), and the
 * slices' partials are added in slice order (a fixed order: deterministic).
 * Before, one thread a feature looped over all K in one block of 128
 * threads, a chain of K dependent L2 round trips.  The M-step's "constants"
 * (profile, H100, one call): 0.14-0.16 -> 0.06-0.07 ms at 1M x 1024
 * spherical, 0.49-0.50 -> 0.12 at 1M x 4096 diag.
 */
constexpr int MOMENT_SLICES = 32;
__global__ void __launch_bounds__(32 * MOMENT_SLICES)
moment_kernel(const float *mu, const float *var, const double *wraw, double inv_wsum, int K, int D, int diag,
			  double *m2)
{
	__shared__ double part[MOMENT_SLICES][33];
	const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
	const int d = blockIdx.x * 32 + tx;
	double s = 0.0;
	if (d < D)
		for (int k = ty; k < K; k += MOMENT_SLICES)
		{
			const double m = mu[(int64_t) k * D + d];
			const double v = diag ? var[(int64_t) k * D + d] : var[k];
			s += wraw[k] * inv_wsum * (m * m + v);
		}
	part[ty][tx] = s;
	__syncthreads();
	if (ty == 0 && d < D)
	{
		double t = 0.0;
		for (int j = 0; j < MOMENT_SLICES; j++)
			t += part[j][tx];
		m2[d] = t;
	}
}

__global__ void prepare_kernel(const float *mu, const float *var, const double *wraw, double inv_wsum, int K, int D,
							   int Dp, int Dp2, int diag, float *Wm, float *colc, float *colp, float *w_out,
							   const double *m2, float *cdir, float *ek)
{
	int k = blockIdx.x;
	float *W = Wm + (int64_t) k * Dp2;
	if (k >= K)
	{
		for (int c = threadIdx.x; c < Dp2; c += blockDim.x)
			W[c] = 0.f;
		if (threadIdx.x == 0)
		{
			colc[k] = -INFINITY;
			colp[k] = 0.f;
			cdir[k] = -INFINITY;
			ek[k] = 0.f;
		}
		return;
	}
	__shared__ double r1[256], r2[256], r3[256];
	double a = 0.0, b = 0.0, e = 0.0;	/* e: sum_d prec (m2_d + mu_d^2), the scale of the expanded terms */
	for (int c = threadIdx.x; c < Dp2; c += blockDim.x)
	{
		int d = c < Dp ? c : c - Dp;
		bool second = c >= Dp;
		float v = 0.f;
		if (d < D)
		{
			double m = mu[(int64_t) k * D + d];
			if (diag)
			{
				double vr = fmax((double) var[(int64_t) k * D + d], (double) FLT_MIN);
				double p = 1.0 / vr;
				if (!second)
				{
					v = (float) (m * p);
					a += log(vr);
					b += m * m * p;
					e += p * (m2[d] + m * m);
				}
				else
					v = (float) (-0.5 * p);
			}
			else if (!second)
			{
				v = (float) m;
				b += m * m;
				e += m2[d] + m * m;
			}
		}
		W[c] = v;
	}
	r1[threadIdx.x] = a;
	r2[threadIdx.x] = b;
	r3[threadIdx.x] = e;
	__syncthreads();
	for (int o = blockDim.x / 2; o > 0; o >>= 1)
	{
		if (threadIdx.x < o)
		{
			r1[threadIdx.x] += r1[threadIdx.x + o];
			r2[threadIdx.x] += r2[threadIdx.x + o];
			r3[threadIdx.x] += r3[threadIdx.x + o];
		}
		__syncthreads();
	}
	if (threadIdx.x == 0)
	{
		double w = wraw[k] * inv_wsum;
		float wf = (float) w;
		if (!(wf > 0.f))
			wf = FLT_MIN;
		w_out[k] = wf;
		double lw = log((double) wf);
		if (diag)
		{
			colc[k] = (float) (lw - 0.5 * (D * LOG_2PI + r1[0]) - 0.5 * r2[0]);
			colp[k] = 0.f;
			cdir[k] = (float) (lw - 0.5 * (D * LOG_2PI + r1[0]));
			ek[k] = (float) r3[0];
		}
		else
		{
			double vr = fmax((double) var[k], (double) FLT_MIN);
			double p = 1.0 / vr;
			colc[k] = (float) (lw - 0.5 * D * (LOG_2PI + log(vr)) - 0.5 * p * r2[0]);
			colp[k] = (float) p;
			cdir[k] = (float) (lw - 0.5 * D * (LOG_2PI + log(vr)));
			ek[k] = (float) (p * r3[0]);
		}
	}
}

/* k-means++ on the sample S (centred, S x D): mind[i] = min(mind, ||x_i - c||^2) */
__global__ void kpp_update_kernel(const float *Xs, int64_t S, int D, const int64_t *seeds, int k, float *mind,
								  double *blocksum, int first)
{
	const float *c = Xs + seeds[k] * (int64_t) D;
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	__shared__ double ws[8];
	double bs = 0.0;
	int64_t rows_per_block = 8 * 16;
	int64_t rbeg = blockIdx.x * rows_per_block;
	for (int64_t r = rbeg + warp; r < min(S, rbeg + rows_per_block); r += 8)
	{
		const float *x = Xs + r * D;
		float s = 0.f;
		for (int d = lane; d < D; d += 32)
		{
			float v = x[d] - c[d];
			s = fmaf(v, v, s);
		}
		for (int o = 16; o > 0; o >>= 1)
			s += __shfl_xor_sync(0xffffffffu, s, o);
		float m = first ? s : fminf(mind[r], s);
		if (r == seeds[k])
			m = 0.f;
		if (lane == 0)
			mind[r] = m;
		bs += (double) m;	/* every lane holds m: count once below */
	}
	if (lane == 0)
		ws[warp] = bs;
	__syncthreads();
	if (threadIdx.x == 0)
	{
		double t = 0.0;
		for (int w = 0; w < 8; w++)
			t += ws[w];
		blocksum[blockIdx.x] = t;
	}
}

/* pick seed k+1: u * total in the prefix sums of blocksum, then of mind (one block of 1024) */
__global__ void kpp_pick_kernel(const double *blocksum, int nb, const float *mind, int64_t S, double u,
								int64_t *seeds, int k)
{
	__shared__ double sh[1024];
	__shared__ int s_b;
	__shared__ double s_base;
	int tid = threadIdx.x;
	/* each thread owns a contiguous range of blocks */
	int per = (nb + 1023) / 1024;
	int b0 = tid * per, b1 = min(nb, b0 + per);
	double s = 0.0;
	for (int b = b0; b < b1; b++)
		s += blocksum[b];
	sh[tid] = s;
	__syncthreads();
	if (tid == 0)
	{
		double total = 0.0;
		for (int i = 0; i < 1024; i++)
			total += sh[i];
		if (!(total > 0.0))
		{
			s_b = -1;
		}
		else
		{
			double target = u * total, run = 0.0;
			int owner = 1023;
			for (int i = 0; i < 1024; i++)
			{
				if (run + sh[i] > target)
				{
					owner = i;
					break;
				}
				run += sh[i];
			}
			int ob0 = owner * per, ob1 = min(nb, ob0 + per);
			int bsel = max(0, ob1 - 1);
			for (int b = ob0; b < ob1; b++)
			{
				if (run + blocksum[b] > target)
				{
					bsel = b;
					break;
				}
				run += blocksum[b];
			}
			s_b = bsel;
			s_base = target - run;
		}
	}
	__syncthreads();
	if (tid == 0)
	{
		int64_t pick;
		if (s_b < 0)
			pick = (int64_t) (u * S) % S;		/* all distances 0: duplicates */
		else
		{
			int64_t r0 = (int64_t) s_b * 128, r1 = min(S, r0 + 128);
			double run = 0.0;
			pick = r1 - 1;
			for (int64_t r = r0; r < r1; r++)
			{
				run += mind[r];
				if (run > s_base && mind[r] > 0.f)
				{
					pick = r;
					break;
				}
			}
		}
		seeds[k + 1] = pick;
	}
}

/* out[i] = X[idx[i]] (rows of D); Idx: int64_t (chunk rows) or int32_t (a sparse block's rows) */
template <class Idx>
__global__ void gather_rows_kernel(const float *X, int D, const Idx *idx, int64_t n, float *out)
{
	int64_t total = n * D;
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < total; i += (int64_t) gridDim.x * blockDim.x)
		out[i] = X[(int64_t) idx[i / D] * D + i % D];
}

/*
 * Statistics of the flagged (ill-conditioned) components, from differences
 * and in FP64: for component fidx[f] and the rows of this block,
 *   s1[d] = sum r (x_d - mu_d),  s2[d] = sum r (x_d - mu_d)^2,  nk = sum r
 * around the component's current mean mu, so that a dimension constant
 * inside the component gets variance exactly 0 (then reg_covar), as in FP64.
 * Partials per (split, f); D <= FLAG_DMAX.
 */
constexpr int FLAG_DMAX = 4096;
__global__ void __launch_bounds__(256)
flag_stats_kernel(const float *X, int64_t nrows, int D, const int *fidx, int nflag, Direct dr, const float *logZ,
				  int64_t rows_per_split, double *ps1, double *ps2, double *pnk)
{
	const int f = blockIdx.x, tid = threadIdx.x;
	const int k = fidx[f];
	const int64_t rbeg = (int64_t) blockIdx.y * rows_per_split, rend = min(nrows, rbeg + rows_per_split);
	const float *mu = dr.mu + (int64_t) k * D;
	__shared__ float red[8];
	double a1[FLAG_DMAX / 256], a2[FLAG_DMAX / 256], nk = 0.0;
#pragma unroll
	for (int j = 0; j < FLAG_DMAX / 256; j++)
		a1[j] = a2[j] = 0.0;
	const float cd = dr.cdir[k];
	const float vs = dr.diag ? 0.f : dr.var[k];
	for (int64_t n = rbeg; n < rend; n++)
	{
		const float *x = X + n * D;
		float q = 0.f;
#pragma unroll
		for (int j = 0; j < FLAG_DMAX / 256; j++)
		{
			int d = tid + j * 256;
			if (d < D)
			{
				float t = x[d] - mu[d];
				q += dr.diag ? t * t / dr.var[(int64_t) k * D + d] : t * t;
			}
		}
		for (int o = 16; o; o >>= 1)
			q += __shfl_xor_sync(0xffffffffu, q, o);
		if ((tid & 31) == 0)
			red[tid >> 5] = q;
		__syncthreads();
		q = 0.f;
		for (int w = 0; w < 8; w++)
			q += red[w];
		__syncthreads();
		if (!dr.diag)
			q /= vs;
		float dlt = cd - 0.5f * q - logZ[n];
		if (!(dlt > -RESP_CUT))
			continue;
		double r = (double) __expf(dlt);
		nk += r;
#pragma unroll
		for (int j = 0; j < FLAG_DMAX / 256; j++)
		{
			int d = tid + j * 256;
			if (d < D)
			{
				double t = (double) x[d] - (double) mu[d];
				a1[j] += r * t;
				a2[j] += r * t * t;
			}
		}
	}
	double *o1 = ps1 + ((int64_t) blockIdx.y * nflag + f) * D, *o2 = ps2 + ((int64_t) blockIdx.y * nflag + f) * D;
#pragma unroll
	for (int j = 0; j < FLAG_DMAX / 256; j++)
	{
		int d = tid + j * 256;
		if (d < D)
		{
			o1[d] = a1[j];
			o2[d] = a2[j];
		}
	}
	if (tid == 0)
		pnk[(int64_t) blockIdx.y * nflag + f] = nk;
}

/*
 * flag_stats_kernel for D <= 128 (the h16 passes'): a warp per row (8 rows
 * of the split at a time, no block barrier per row), lane l holding
 * features l, l + 32, l + 64, l + 96; the 8 warps' sums are added in a
 * fixed order at the end, so runs stay bit-identical.  (The block-per-row
 * loop above made 1M x 1024 with 4 flagged components take about 3 ms.)
 */
__global__ void __launch_bounds__(256)
flag_stats_warp_kernel(const float *__restrict__ X, int64_t nrows, int D, const int *__restrict__ fidx, Direct dr,
					   const float *__restrict__ logZ, int64_t rows_per_split, int nflag, double *ps1, double *ps2,
					   double *pnk)
{
	const int f = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int k = fidx[f];
	const int64_t rbeg = (int64_t) blockIdx.y * rows_per_split, rend = min(nrows, rbeg + rows_per_split);
	__shared__ double r1[8][128], r2[8][128], rn[8];
	float mu[4], iv[4];
#pragma unroll
	for (int i = 0; i < 4; i++)
	{
		const int d = lane + 32 * i;
		mu[i] = d < D ? __ldg(dr.mu + (int64_t) k * D + d) : 0.f;
		iv[i] = dr.diag && d < D ? 1.f / __ldg(dr.var + (int64_t) k * D + d) : 0.f;
	}
	const float cd = __ldg(dr.cdir + k), ivs = dr.diag ? 0.f : 1.f / __ldg(dr.var + k);
	double a1[4] = {0, 0, 0, 0}, a2[4] = {0, 0, 0, 0}, nk = 0.0;
	for (int64_t n = rbeg + warp; n < rend; n += 8)
	{
		float t[4], q = 0.f;
#pragma unroll
		for (int i = 0; i < 4; i++)
		{
			const int d = lane + 32 * i;
			t[i] = d < D ? __ldg(X + n * D + d) - mu[i] : 0.f;
			q = dr.diag ? fmaf(t[i] * t[i], iv[i], q) : fmaf(t[i], t[i], q);
		}
#pragma unroll
		for (int o = 16; o > 0; o >>= 1)
			q += __shfl_xor_sync(0xffffffffu, q, o);
		if (!dr.diag)
			q *= ivs;
		const float dlt = cd - 0.5f * q - __ldg(logZ + n);
		if (!(dlt > -RESP_CUT))
			continue;
		const double r = (double) __expf(dlt);
		nk += r;
#pragma unroll
		for (int i = 0; i < 4; i++)
		{
			a1[i] += r * (double) t[i];
			a2[i] += r * (double) t[i] * (double) t[i];
		}
	}
#pragma unroll
	for (int i = 0; i < 4; i++)
	{
		r1[warp][lane + 32 * i] = a1[i];
		r2[warp][lane + 32 * i] = a2[i];
	}
	if (lane == 0)
		rn[warp] = nk;
	__syncthreads();
	double *o1 = ps1 + ((int64_t) blockIdx.y * nflag + f) * D, *o2 = ps2 + ((int64_t) blockIdx.y * nflag + f) * D;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
	{
		double s1 = 0.0, s2 = 0.0;
		for (int w = 0; w < 8; w++)
		{
			s1 += r1[w][d];
			s2 += r2[w][d];
		}
		o1[d] = s1;
		o2[d] = s2;
	}
	if (threadIdx.x == 0)
	{
		double s = 0.0;
		for (int w = 0; w < 8; w++)
			s += rn[w];
		pnk[(int64_t) blockIdx.y * nflag + f] = s;
	}
}

/* acc (+)= sum over splits, fixed order */
__global__ void flag_reduce_kernel(const double *ps1, const double *ps2, const double *pnk, int nsplit, int nflag, int D,
								   double *s1, double *s2, double *fnk)
{
	int64_t total = (int64_t) nflag * D;
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < total; i += (int64_t) gridDim.x * blockDim.x)
	{
		double a = 0.0, b = 0.0;
		for (int y = 0; y < nsplit; y++)
		{
			a += ps1[(int64_t) y * total + i];
			b += ps2[(int64_t) y * total + i];
		}
		s1[i] += a;
		s2[i] += b;
		if (i % D == 0)
		{
			int f = (int) (i / D);
			double c = 0.0;
			for (int y = 0; y < nsplit; y++)
				c += pnk[(int64_t) y * nflag + f];
			fnk[f] += c;
		}
	}
}

/* M-step of the flagged components (after mstep_kernel): mean and variance from s1, s2 around the old mean */
__global__ void flag_mstep_kernel(const int *fidx, const float *mu_old, const double *s1, const double *s2,
								  const double *fnk, int D, int diag, double reg, float *mu, float *var, double *wraw,
								  double *nk_out)
{
	int f = blockIdx.x, k = fidx[f];
	double n = fnk[f];
	__shared__ double red[256];
	if (threadIdx.x == 0)
		nk_out[k] = n;
	if (n < EMPTY_NK)
		return;
	double nkd = n + 10.0 * DBL_EPSILON;
	double q = 0.0;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
	{
		double m1 = s1[(int64_t) f * D + d] / nkd;
		double v = s2[(int64_t) f * D + d] / nkd - m1 * m1;
		if (v < 0.0)
			v = 0.0;
		mu[(int64_t) k * D + d] = (float) ((double) mu_old[(int64_t) f * D + d] + m1);
		if (diag)
			var[(int64_t) k * D + d] = (float) (v + reg);
		else
			q += v;
	}
	if (!diag)
	{
		red[threadIdx.x] = q;
		block_tree_sum(red);
		if (threadIdx.x == 0)
			var[k] = (float) (red[0] / D + reg);
	}
	if (threadIdx.x == 0)
		wraw[k] = nkd;
}

__global__ void gather_means_kernel(const float *mu, const int *fidx, int nflag, int D, float *out)
{
	int64_t total = (int64_t) nflag * D;
	for (int64_t i = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; i < total; i += (int64_t) gridDim.x * blockDim.x)
		out[i] = mu[(int64_t) fidx[i / D] * D + i % D];
}

/* ---- helpers ----------------------------------------------------------------- */

int round_up(int x, int m) { return (x + m - 1) / m * m; }

int effective_prec()
{
	/* Default: TF32, measured to meet the accuracy bounds (cuda/NOTES.md). */
	return g_prec == GMM_GPU_PREC_DEFAULT ? GMM_GPU_PREC_TF32 : g_prec;
}

size_t lse_smem(int BN) { return (size_t) (BM * LDC + BN * LDC + BM + 2 * 4 * BM) * sizeof(float); }
size_t stats_smem(int BN) { return (size_t) (BM * LDC + BN * LDC + BM + BM * (BN + 8) + BM * (DT + 8)) * sizeof(float); }
size_t assign_smem(int MAXM) { return (size_t) (BM * LDC + 128 * LDC + BM + 2 * BM * 4 * MAXM + 2 * BM * 4) * sizeof(float); }

template <typename F>
void set_smem(F f, size_t bytes)
{
	CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int) bytes));
}

/* ---- model on the device ------------------------------------------------------- */
struct DevModel
{
	int K, D, Kp, Dp, Dp2, VL, BN;
	bool diag;
	float *mu, *var, *w, *Wm, *colc, *colp;
	double *wraw;
	/* conditioning (see Direct in kernels.cuh) */
	float *cdir, *ek;
	int *cflag, *fidx;
	double *m2;
	int prec_used = GMM_GPU_PREC_TF32;
	int nflag = 0;
	double worst_err = 0.0;		/* estimated worst score error of the chosen products */
	/* h16 E pass (half.cuh): FP16 operands of the scaled data, constants consistent with them */
	float h16_S = 0.f;			/* data scale; 0 = no h16 pass */
	int h16_IN = 0;
	__half *Wh = nullptr;
	__half *Wst = nullptr;		/* Wh as lse_wg_kernel's stage images (hopper.cuh, stage_images_kernel) */
	float *colc16 = nullptr, *colp16 = nullptr;
	float *c2l = nullptr;		/* [colc16 | colp16] x log2(e), for the one-product assignment */
	int *h16bad = nullptr;
	/* the sparse E pass's screen (sparse.cuh): components one FP16 product cannot score */
	int *sflag = nullptr, *sfidx = nullptr;
	float *serr = nullptr;		/* the screen's error bound per component, nats */
	int nsflag = 0;
	float *colc16m = nullptr;	/* colc16, -inf at the flagged components (dense passes; flag_lse_kernel) */
	int *hp = nullptr;			/* prepare's pinned host buffers (7 Kp words) */

	void enable_h16(float S)
	{
		h16_S = S;
		h16_IN = h16::in_width(diag);
		Wh = dalloc<__half>((size_t) Kp * 2 * h16_IN, "FP16 model");
		Wst = dalloc<__half>((size_t) Kp * 2 * h16_IN, "FP16 model");	/* (O(K D): made whether or not wgmma runs) */
		colc16 = dalloc<float>(Kp, "constants");
		colp16 = dalloc<float>(Kp, "precisions");
		h16bad = dalloc<int>(Kp, "flags");
		sflag = dalloc<int>(Kp, "flags");
		sfidx = dalloc<int>(Kp, "flags");
		serr = dalloc<float>(Kp, "flags");
		colc16m = dalloc<float>(Kp, "constants");
	}
	/* after upload: c2l for the one-product assignment (the E pass does not use it) */
	void make_c2l()
	{
		c2l = dalloc<float>(2 * (size_t) Kp, "constants");
		h16::log2_constants_kernel<<<(Kp + 255) / 256, 256, 0, g_s>>>(colc16, colp16, Kp, c2l);
		CKL("log2_constants_kernel");
	}

	Direct direct() const { return Direct{cflag, cdir, mu, var, nflag > 0, diag}; }

	/* bn: component tile of the kernels that will use the model (0 = the EM kernels') */
	void init(int K_, int D_, int cov, int bn = 0)
	{
		K = K_;
		D = D_;
		diag = cov == GMM_COV_DIAG;
		BN = bn ? bn : (diag ? 64 : 128);
		Kp = round_up(K, BN);
		Dp = round_up(D, DK);
		Dp2 = diag ? 2 * Dp : Dp;
		VL = diag ? D : 1;
		mu = dalloc<float>((size_t) Kp * D, "means");
		var = dalloc<float>((size_t) Kp * VL, "variances");
		w = dalloc<float>(Kp, "weights");
		wraw = dalloc<double>(Kp, "weights");
		Wm = dalloc<float>((size_t) Kp * Dp2, "score matrix");
		colc = dalloc<float>(Kp, "constants");
		colp = dalloc<float>(Kp, "precisions");
		cdir = dalloc<float>(Kp, "constants");
		ek = dalloc<float>(Kp, "conditioning");
		cflag = dalloc<int>(Kp, "flags");
		fidx = dalloc<int>(Kp, "flags");
		m2 = dalloc<double>(D, "moments");
		CK(cudaMemset(cflag, 0, sizeof(int) * Kp));
		CK(cudaMemset(mu, 0, sizeof(float) * Kp * D));
		CK(cudaMemset(var, 0, sizeof(float) * Kp * VL));
	}
	/* host parameters -> device (means centred by shift), and derived constants */
	void upload(const float *weights, const float *means, const float *vars, const std::vector<float> &shift)
	{
		std::vector<float> mc((size_t) K * D);
		std::vector<double> wr(K);
		double ws = 0.0;
		for (int k = 0; k < K; k++)
		{
			for (int d = 0; d < D; d++)
				mc[(size_t) k * D + d] = means[(size_t) k * D + d] - shift[d];
			wr[k] = weights[k];
			ws += wr[k];
		}
		CK(cudaMemcpy(mu, mc.data(), sizeof(float) * K * D, cudaMemcpyHostToDevice));
		CK(cudaMemcpy(var, vars, sizeof(float) * (size_t) K * VL, cudaMemcpyHostToDevice));
		CK(cudaMemcpy(wraw, wr.data(), sizeof(double) * K, cudaMemcpyHostToDevice));
		prepare(ws > 0 ? 1.0 / ws : 1.0);
	}
	/*
	 * Derived constants, then the precision of this model's passes.  The
	 * expanded score of component k sums terms of size e_k = sum_d prec_kd
	 * (E[x_d^2] + mu_kd^2); a product with unit roundoff u leaves an error of
	 * about u e_k / sqrt(D) in the score (random rounding).  Default (auto):
	 * TF32 when that stays below ERR_OK for every component, else 3xTF32;
	 * components still above it get their scores recomputed from the
	 * differences (Direct).  A forced precision keeps the recomputation.
	 */
	void prepare(double inv_wsum)
	{
		const double ERR_OK = 0.01, U_TF32 = 1.0 / 2048.0, U_3X = 1.0 / 4194304.0;
		/*
		 * One host sync: the device work that needs no host decision first
		 * (the constants, the FP16 model and its stage images), then e_k and
		 * the FP16 range flags read back together; the flags go back from
		 * pinned buffers (hp), so those copies do not sync the stream as
		 * pageable ones do.  hp is rewritten only after the next prepare's
		 * sync, by when these copies are done.  (Before: eight syncs, about
		 * 0.19 ms of a 3 ms iteration at 1M x 1024 diag: cuda/NOTES.md v11.)
		 */
		if (!hp)
			hp = reinterpret_cast<int *>(pinned(7 * (size_t) Kp));
		float *e = reinterpret_cast<float *>(hp);				/* [K] e_k */
		int *bad = hp + Kp;										/* [K] FP16 range flags */
		int *f = hp + 2 * Kp, *fi = hp + 3 * Kp;				/* [Kp] flags, [K] flagged */
		int *sf = hp + 4 * Kp, *sfi = hp + 5 * Kp;				/* [Kp] screen flags, [Kp] screen-flagged */
		float *se = reinterpret_cast<float *>(hp + 6 * Kp);		/* [Kp] screen error bounds */
		moment_kernel<<<(D + 31) / 32, 32 * MOMENT_SLICES, 0, g_s>>>(mu, var, wraw, inv_wsum, K, D, diag, m2);
		CKL("moment_kernel");
		prepare_kernel<<<Kp, 256, 0, g_s>>>(mu, var, wraw, inv_wsum, K, D, Dp, Dp2, diag, Wm, colc, colp, w, m2,
											cdir, ek);
		CKL("prepare_kernel");
		if (h16_S > 0.f)
		{
			/* FP16 operands; a component whose operands leave FP16's range is scored from differences */
			h16::prepare_h16_kernel<<<Kp, 128, 0, g_s>>>(mu, var, colc, K, Kp, D, diag, h16_S, h16_IN, Wh, colc16,
														 colp16, h16bad);
			CKL("prepare_h16_kernel");
			if (diag)
				wg::stage_images_kernel<true><<<(Kp + 15) / 16, 256, 0, g_s>>>(Wh, Kp, Wst);
			else
				wg::stage_images_kernel<false><<<(Kp + 15) / 16, 256, 0, g_s>>>(Wh, Kp, Wst);
			CKL("stage_images_kernel");
			CK(cudaMemcpyAsync(bad, h16bad, sizeof(int) * K, cudaMemcpyDeviceToHost, g_s));
		}
		CK(cudaMemcpyAsync(e, ek, sizeof(float) * K, cudaMemcpyDeviceToHost, g_s));
		CK(cudaStreamSynchronize(g_s));
		double emax = 0.0, sq = std::sqrt((double) D);
		for (int k = 0; k < K; k++)
			emax = std::max(emax, std::isfinite(e[k]) ? (double) e[k] : 1e300);
		/* default: 3xTF32 (cuda/NOTES.md: TF32 scores moved SIFT means by 1.5e-3 over 10 iterations) */
		prec_used = g_prec == GMM_GPU_PREC_DEFAULT ? GMM_GPU_PREC_3XTF32 : g_prec;
		/*
		 * flag by what even 3xTF32 cannot score accurately (a forced TF32
		 * keeps its speed), then, with FP16 operands, the components whose
		 * operands leave FP16's range
		 */
		double u = U_3X;
		std::fill(f, f + Kp, 0);
		int nf = 0;
		for (int k = 0; k < K; k++)
			if (!(u * (std::isfinite(e[k]) ? e[k] : 1e300) / sq <= ERR_OK))
			{
				f[k] = 1;
				fi[nf++] = k;
			}
		if (h16_S > 0.f)
			for (int k = 0; k < K; k++)
				if (bad[k] && !f[k])
				{
					f[k] = 1;
					fi[nf++] = k;
				}
		if (nf > 0 || nflag > 0)
			CK(cudaMemcpyAsync(cflag, f, sizeof(int) * Kp, cudaMemcpyHostToDevice, g_s));
		if (nf > 0)
			CK(cudaMemcpyAsync(fidx, fi, sizeof(int) * nf, cudaMemcpyHostToDevice, g_s));
		int nsf = 0;
		if (h16_S > 0.f)
		{
			/* the dense passes' constants without the flagged components (flag_lse_kernel scores them) */
			sp::mask_constants_kernel<<<(Kp + 255) / 256, 256, 0, g_s>>>(colc16, cflag, Kp, colc16m);
			CKL("mask_constants_kernel");
			/*
			 * The sparse pass's screen: an error bound per component;
			 * screen-flagged: bounds above SCREEN_ERR_MAX (first in sfidx:
			 * the exact kernel makes their statistics), then the flagged
			 * (flagged_stats makes theirs).
			 */
			std::fill(sf, sf + Kp, 0);
			std::fill(se, se + Kp, 0.f);
			for (int k = 0; k < K; k++)
			{
				const double b = sp::SCREEN_MARGIN +
								 sp::SCREEN_SIGMAS * sp::U_FP16 * (std::isfinite(e[k]) ? e[k] : 1e300) / sq;
				se[k] = (float) std::min(b, 1e30);
				if (!f[k] && !(b <= sp::SCREEN_ERR_MAX))
				{
					sf[k] = 1;
					sfi[nsf++] = k;
				}
			}
			for (int k = 0; k < K; k++)	/* then the flagged */
				if (f[k])
				{
					sf[k] = 1;
					sfi[nsf++] = k;
				}
			CK(cudaMemcpyAsync(sflag, sf, sizeof(int) * Kp, cudaMemcpyHostToDevice, g_s));
			CK(cudaMemcpyAsync(serr, se, sizeof(float) * Kp, cudaMemcpyHostToDevice, g_s));
			if (nsf > 0)
				CK(cudaMemcpyAsync(sfidx, sfi, sizeof(int) * nsf, cudaMemcpyHostToDevice, g_s));
		}
		nsflag = nsf;
		nflag = nf;
		worst_err = (prec_used == GMM_GPU_PREC_TF32 ? U_TF32 : U_3X) * emax / sq;
	}
	void download(float *weights, float *means, float *vars, const std::vector<float> &shift)
	{
		std::vector<float> mc((size_t) K * D);
		CK(cudaStreamSynchronize(g_s));
		CK(cudaMemcpy(mc.data(), mu, sizeof(float) * K * D, cudaMemcpyDeviceToHost));
		CK(cudaMemcpy(vars, var, sizeof(float) * (size_t) K * VL, cudaMemcpyDeviceToHost));
		CK(cudaMemcpy(weights, w, sizeof(float) * K, cudaMemcpyDeviceToHost));
		for (int k = 0; k < K; k++)
			for (int d = 0; d < D; d++)
				means[(size_t) k * D + d] = mc[(size_t) k * D + d] + shift[d];
	}
};

/* ---- X on the device: resident, or streamed in chunks from host memory -------------- */
struct Source
{
	const float *hX = nullptr;
	int64_t N = 0, chunk = 0;
	int D = 0;
	bool resident = true, registered = false;
	float *dX = nullptr;		/* resident: all rows, centred */
	float *buf[2] = {nullptr, nullptr};
	float *stage[2] = {nullptr, nullptr};
	float *dshift = nullptr;
	cudaEvent_t copied[2], used[2];
	double h2d_seconds = 0.0;
	bool logz_full = true;		/* per-row logZ for all N fits on the device */

	/* bytes_other: what the caller will allocate besides X; budget: bytes allowed */
	void init(const float *X, int64_t N_, int D_, const std::vector<float> &shift, int64_t budget,
			  int64_t bytes_other, int64_t per_row_other)
	{
		hX = X;
		N = N_;
		D = D_;
		size_t freeb = 0, totalb = 0;
		CK(cudaMemGetInfo(&freeb, &totalb));
		int64_t avail = (int64_t) (freeb * 0.92) - (64ll << 20);
		if (budget > 0)
			avail = std::min<int64_t>(avail, budget - g_live);
		avail -= bytes_other;
		int64_t row_bytes = (int64_t) D * 4 + per_row_other;
		dshift = dalloc<float>(D, "shift");
		CK(cudaMemcpy(dshift, shift.data(), sizeof(float) * D, cudaMemcpyHostToDevice));
		for (int i = 0; i < 2; i++)
		{
			CK(cudaEventCreateWithFlags(&copied[i], cudaEventDisableTiming));
			CK(cudaEventCreateWithFlags(&used[i], cudaEventDisableTiming));
		}
		if (N * row_bytes <= avail)
		{
			resident = true;
			chunk = N;
			dX = dalloc<float>((size_t) N * D, "X");
			auto t0 = std::chrono::steady_clock::now();
			CK(cudaMemcpyAsync(dX, hX, sizeof(float) * N * D, cudaMemcpyHostToDevice, g_s));
			center_kernel<<<4096, 128, 0, g_s>>>(dX, N, D, dshift);
			CKL("center_kernel");
			CK(cudaStreamSynchronize(g_s));
			h2d_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
		}
		else
		{
			resident = false;
			/* per-row logZ for all rows (re-seeding by lowest likelihood, as when resident) if small */
			logz_full = N * 4 <= avail / 8;
			if (logz_full)
				avail -= N * 4;
			/* two device buffers (and, without registration, two pinned staging buffers) */
			chunk = avail / (2 * row_bytes);
			chunk = chunk / BM * BM;
			if (chunk < BM)
				fail(GMM_ENOMEM, "GPU memory budget too small: %.1f MiB available for data, need at least %.1f MiB",
					 avail / 1048576.0, 2.0 * BM * row_bytes / 1048576.0);
			chunk = std::min<int64_t>(chunk, 4ll << 20);
			chunk = std::min<int64_t>(chunk, (N + BM - 1) / BM * BM);
			for (int i = 0; i < 2; i++)
				buf[i] = dalloc<float>((size_t) chunk * D, "X chunk");
			registered = try_register(hX, (size_t) N * D * sizeof(float));
			if (!registered)
				for (int i = 0; i < 2; i++)
					stage[i] = pinned((size_t) chunk * D);
		}
	}
	int64_t x_bytes() const { return resident ? N * D * 4 : 2 * chunk * D * 4; }
	int64_t max_rows() const { return chunk; }

	/* fn(dXchunk, n0, nc) for every chunk, in order, on stream g_s */
	template <typename F>
	void for_each(F fn)
	{
		if (resident)
		{
			fn(dX, (int64_t) 0, N);
			return;
		}
		int64_t nch = (N + chunk - 1) / chunk;
		auto issue = [&](int64_t c) {
			int b = (int) (c & 1);
			int64_t n0 = c * chunk, nc = std::min(chunk, N - n0);
			CK(cudaStreamWaitEvent(g_cs, used[b], 0));
			const float *src = hX + n0 * D;
			if (!registered)
			{
				CK(cudaEventSynchronize(used[b]));	/* staging buffer free again */
				auto t0 = std::chrono::steady_clock::now();
				memcpy(stage[b], src, sizeof(float) * nc * D);
				h2d_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
				src = stage[b];
			}
			CK(cudaMemcpyAsync(buf[b], src, sizeof(float) * nc * D, cudaMemcpyHostToDevice, g_cs));
			CK(cudaEventRecord(copied[b], g_cs));
		};
		/* mark both buffers free */
		for (int b = 0; b < 2; b++)
			CK(cudaEventRecord(used[b], g_s));
		issue(0);
		for (int64_t c = 0; c < nch; c++)
		{
			int b = (int) (c & 1);
			int64_t n0 = c * chunk, nc = std::min(chunk, N - n0);
			CK(cudaStreamWaitEvent(g_s, copied[b], 0));
			center_kernel<<<1024, 128, 0, g_s>>>(buf[b], nc, D, dshift);
			CKL("center_kernel");
			fn(buf[b], n0, nc);
			CK(cudaEventRecord(used[b], g_s));
			/* the copy of the next chunk overlaps this chunk's kernels */
			if (c + 1 < nch)
				issue(c + 1);
		}
	}
	void destroy()
	{
		for (int i = 0; i < 2; i++)
		{
			cudaEventDestroy(copied[i]);
			cudaEventDestroy(used[i]);
		}
	}
};

/* device-event timer on g_s */
struct Timer
{
	cudaEvent_t a, b;
	Timer()
	{
		CK(cudaEventCreate(&a));
		CK(cudaEventCreate(&b));
	}
	~Timer()
	{
		cudaEventDestroy(a);
		cudaEventDestroy(b);
	}
	void start() { CK(cudaEventRecord(a, g_s)); }
	double stop_ms()
	{
		float ms = 0.f;
		CK(cudaEventRecord(b, g_s));
		CK(cudaEventSynchronize(b));
		CK(cudaEventElapsedTime(&ms, a, b));
		return ms;
	}
};

/* ---- the chunked GEMM E pass (chunked.cuh): workspace and steps -------------------- */

/*
 * Which E pass: "gemm" (cuBLAS products over blocks of rows, the default) or
 * "fused" (kernels.cuh; FLASHGMM_GPU_ESTEP=fused, or when cuBLAS cannot be
 * loaded, or K > 8192).  Read at every call so that a benchmark can compare.
 */
bool use_gemm(int Kp, char *why = g_variant, size_t whyn = sizeof(g_variant))
{
	const char *e = getenv("FLASHGMM_GPU_ESTEP");
	if (e && strcmp(e, "fused") == 0)
	{
		snprintf(why, whyn, "fused (FLASHGMM_GPU_ESTEP=fused)");
		return false;
	}
	if (Kp > 256 * VPT)
	{
		snprintf(why, whyn, "fused (K above %d)", 256 * VPT);
		return false;
	}
	if (!g_blas.load(g_s))
	{
		snprintf(why, whyn, "fused (%s)", g_blas.why);
		return false;
	}
	snprintf(why, whyn, "gemm (%s)", g_blas.why);
	return true;
}

/*
 * The h16 E pass (half.cuh and, on cc 9.0, hopper.cuh: FP16 tensor cores,
 * 3xFP16 scores), the default where it is the faster pass.  It pads every D
 * to 128.  On cc 9.0 (wgmma) it is faster than gemm at every D <= 128 for
 * both covariance types (H100, 1M x 1024, E pass ms, h16 / gemm, D = 32, 64,
 * 96: spherical 5.3 / 13.5, 5.3 / 16.7, 5.7 / 17.8; diag 13.3 / 16.4,
 * 14.8 / 19.1, 17.7 / 23.1).  On mma.sync alone, diag only from D > 112
 * (diag 25.2 / 16.0, 28.2 / 19.1, 33.8 / 23.2 at D = 32, 64, 96).  X must
 * be resident (EStep::init checks that).  FLASHGMM_GPU_ESTEP=h16 (or
 * h16mma) asks for it at any D <= 128, =gemm or =fused for the others.
 */
bool use_wgmma();
bool want_h16(int D, bool diag)
{
	const char *e = getenv("FLASHGMM_GPU_ESTEP");
	if (D > h16::DMAX || (e && (strcmp(e, "gemm") == 0 || strcmp(e, "fused") == 0)))
		return false;
	if (e && strncmp(e, "h16", 3) == 0)
		return true;
	return !diag || D > 112 || use_wgmma();
}

/*
 * Pass 1 and the assignment of the h16 pass on Hopper's wgmma (hopper.cuh)
 * on cc 9.0 devices (the library carries sm_90a code), else mma.sync
 * (half.cuh); FLASHGMM_GPU_ESTEP=h16mma forces mma.sync (tests, benchmark).
 */
bool use_wgmma()
{
	const char *e = getenv("FLASHGMM_GPU_ESTEP");
	return g_prop.major == 9 && g_prop.minor == 0 && !(e && strcmp(e, "h16mma") == 0);
}

/*
 * Products per score of the h16 top-m assignment on wgmma: one (x_hi.W_hi,
 * the default for spherical models: a ranking, measured against the CPU
 * engine in cuda/NOTES.md, v6) or three (the E pass's precision; the default
 * for diag models, whose one-product ranking put only 98.9% of SIFT's rows
 * first in the CPU engine's list at D = 100).  FLASHGMM_GPU_ASSIGN=x3 asks
 * for three, =x1 for one.  mma.sync (lse16_kernel) always takes three.
 */
bool assign_one_product(bool diag)
{
	const char *e = getenv("FLASHGMM_GPU_ASSIGN");
	if (!use_wgmma() || (e && strcmp(e, "x3") == 0))
		return false;
	return !diag || (e && strcmp(e, "x1") == 0);
}

/* the model as the kernel launch_pass1 picks reads it: stage images on wgmma, Wh on mma.sync */
const __half *pass1_model(const DevModel &M)
{
	return use_wgmma() ? M.Wst : M.Wh;
}
/*
 * Blocks for a persistent one-product launch of lse_wg_kernel (the screens,
 * the one-product assignment) over nb row blocks of rows x (D features): a
 * CTA an SM, whose spare warps read the next block's rows as float4s, so
 * only where rows are 16-byte aligned; else nb, a CTA a block
 * (convert_rows_next traps on unaligned rows rather than leave the
 * consumers waiting).
 */
unsigned persistent_grid(unsigned nb, int D, const float *x)
{
	if (D % 4 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0)
		return std::min<unsigned>(nb, (unsigned) g_prop.multiProcessorCount);
	return nb;
}
/*
 * The h16 pass-1 kernel (logZ, or with MM > 0 the top-m assignment) over
 * nblocks blocks of 128 rows; ONE: one product per score (assignment on
 * wgmma only).
 */
template <bool DG, int MM, bool ONE = false, class... A>
void launch_pass1(unsigned nblocks, A... args)
{
	static_assert(wg::Cfg<DG>::BM == h16::BM1, "both pass-1 kernels take blocks of the same rows");
	if (use_wgmma())
	{
		const size_t sm = wg::lse_smem(DG, ONE, MM > 0);
		set_smem(wg::lse_wg_kernel<DG, MM, ONE>, sm);
		wg::lse_wg_kernel<DG, MM, ONE><<<nblocks, wg::Cfg<DG>::THREADS, sm, g_s>>>(args...);
	}
	else
	{
		const size_t sm = h16::lse16_smem(DG);
		set_smem(h16::lse16_kernel<DG, MM>, sm);
		h16::lse16_kernel<DG, MM><<<nblocks, h16::NW1 * 32, sm, g_s>>>(args...);
	}
}

/*
 * The sparse E pass (sparse.cuh) on wgmma: the default for diag mixtures of
 * K >= 1024 components (H100, cuda/NOTES.md v7, `gpu_bench --sweep`: faster
 * at K = 1024 from 100k to 1M rows, 1.4-2.0x, and 2.4-2.7x at 4096; slower
 * at K = 256 from 100k to 1M, 0.52-0.68x; SIFT means 5e-5 of float64 against
 * 5.5e-4; at K = 512 slower, 0.77-0.98x, v9), and for spherical ones of
 * K >= 1024 (v9 sweep: 1.3-1.5x faster at K = 2048 from 100k to 1M rows,
 * 1.5-1.9x at 4096; at K = 1024, from 2048 since v9, v11: 1M rows from
 * k-means++ seeding, the model CREATE INDEX trains, 3.70 ms an iteration
 * against 5.81 dense; from the benchmark's random start 7.01 against 6.44,
 * its first passes scoring 9-10 candidates a row);
 * FLASHGMM_GPU_ESTEP=sparse asks for it for every mixture, =h16 (or any
 * other) for none.  Deterministic fits take the dense pass (EStep::sparse_now).
 */
constexpr int SPARSE_KMIN = 1024;	/* both covariances */
bool want_sparse(int Kp)
{
	const char *e = getenv("FLASHGMM_GPU_ESTEP");
	if (!use_wgmma())
		return false;
	return e ? strcmp(e, "sparse") == 0 : Kp >= SPARSE_KMIN;
}
/* the sparse pass for an EM model of Kp (padded) components: wanted, and Kp a whole number of the screen's tiles */
inline bool sparse_applies(int Kp, bool diag)
{
	return want_sparse(Kp) && Kp % (diag ? wg::Cfg<true>::BN : wg::Cfg<false>::BN) == 0;
}
/*
 * Rows per screened block: 2^17 (its buffers: 22 MiB with lists of 32
 * candidates, sparse_cap_for); for tables of at most 2M rows, 2^20 (280
 * MiB), but no more than the table's rows.
 * Each block costs a host sync (the overflow count), a few small launches
 * and each kernel's ramp and tail; at 1M x 1024 diag
 * from k-means++ an iteration took 3.65 ms in blocks of 2^16, 3.20 in 2^17,
 * 3.01 in 2^18 (v11) and 2.77-2.82 in 2^20 (v12).  Spherical took 3.7-3.8
 * in 2^18 and 4.3-4.4 in 2^20 (v12), but with v17's window and statistics
 * 2.30-2.44 in 2^18 and 2.09-2.15 in 2^20 (1M x 4096: 5.16-5.20 against
 * 4.93-5.35), so 2^20 since.  Past 2M rows the blocks are small, so that
 * 10M rows keep X + 64 MiB: 10M x 1024 diag from k-means++ took 110.2 ms an
 * iteration in blocks of 2^16, 97.8 in 2^17 (v12); v17: 43.7-44.0 in 2^16,
 * 36.1-36.4 in 2^17, 33.8-34.0 in 2^18 (lists of 32: about X + 85 MiB),
 * 36.2-37.0 in 2^18 with lists of 16 (282k rows a pass overflow them).
 * Diag tables take 2^18 since the dense pass's FP16 rows share the lists'
 * bytes there (SparseLayout), which keeps them within X + 64 MiB.
 * Spherical ones keep 2^17: 10M x 1024 spherical from k-means++ runs dense
 * (1500 candidates a row), 54.5 ms an iteration in 2^17, 55.0 in 2^18.
 */
constexpr int64_t SPARSE_ROWS = 1 << 17, SPARSE_ROWS_DIAG = 1 << 18, SPARSE_ROWS_SMALL_N = 1 << 20,
				  SPARSE_SMALL_N = 2ll << 20, SPARSE_ROWS_FORCED_MAX = 1 << 20;
/*
 * (N: the table's rows; 0: unknown, as for a large one.)  FLASHGMM_GPU_SPARSE_ROWS
 * (a power of two, 2^10 to 2^20) sets it instead: the tests' 100k-row tables
 * take several blocks and flushes with 16384.
 */
inline bool small_table(int64_t N) { return N > 0 && N <= SPARSE_SMALL_N; }
inline int64_t sparse_rows_for(int64_t N, bool diag)
{
	static const int64_t forced = [] {
		const int64_t v = env_int("FLASHGMM_GPU_SPARSE_ROWS", 1024, SPARSE_ROWS_FORCED_MAX, 0);
		return (v & (v - 1)) == 0 ? v : 0;
	}();
	const int64_t r = forced ? forced : small_table(N) ? SPARSE_ROWS_SMALL_N : diag ? SPARSE_ROWS_DIAG : SPARSE_ROWS;
	return N > 0 ? std::min(r, (N + 1023) / 1024 * 1024) : r;
}
/*
 * Candidates a row's list holds: 64 (sp::SPARSE_CAP) for tables of at most
 * 2M rows, else 32, where the lists are most of a block's buffers (4 bytes
 * each a row): with 32, blocks of 2^17 rows take 22 MiB, 2^16 took 19.  A
 * row with more overflows (its block's dense pass scores it; v12: 10M x 1024
 * diag from k-means++ has 5.0 a row).  FLASHGMM_GPU_SPARSE_CAP (16, 32 or
 * 64) sets it (the tests' sparse-blocks pass runs 32; 16 overflowed 282k
 * rows a pass at 10M x 1024 diag, v17).  Lists of 64 at 10M x
 * 1024 diag (H100, v15): 65.5 -> 58.3 ms an iteration (r kept in the lists,
 * 91k overflowed rows a pass -> 200), for 16 MiB more: past X + 64 MiB.
 */
inline int sparse_cap_for(int64_t N)
{
	static const int forced = [] {
		const int64_t v = env_int("FLASHGMM_GPU_SPARSE_CAP", 16, sp::SPARSE_CAP, 0);
		return v == 16 || v == 32 || v == sp::SPARSE_CAP ? (int) v : 0;
	}();
	if (forced)
		return forced;
	return small_table(N) ? sp::SPARSE_CAP : 32;
}
/*
 * Rows whose FP32 sums around the means (sparse.cuh) build up before
 * flush_sparse_kernel adds them into the FP64 statistics: two blocks, as a
 * flush a block was a fixed 8 us launch (v11), but at most 2^19 rows (one
 * diag block of 2^20 rows: each).  FP32 sums of r (x - mu) over about
 * 2^19 / K rows a component stay far inside the means' 1e-3.
 */
constexpr int64_t SPARSE_FLUSH_ROWS = 1 << 19;
inline int64_t sparse_flush_rows(int64_t srows) { return std::max<int64_t>(srows, std::min<int64_t>(2 * srows, SPARSE_FLUSH_ROWS)); }
/* overflowed lists in a block of srows (5%): beyond, the dense pass takes the whole block; below, just those rows */
inline int64_t sparse_overflow_rows(int64_t srows) { return srows / 20; }
/*
 * Whether the sparse pass sums its statistics sorted by component
 * (sparse.cuh) rather than by an atomic a pair: past SPARSE_SMALL_N rows.
 * Measured (H100, stop 18, seeded fits): 10M x 1024 diag 92.2 -> 77.6 /
 * 78.6 ms an iteration (a pass's exact step 51.6 -> 26, with the scatter 3.5
 * and the sums 5.5), but sorting everywhere took 1M x 1024 diag 2.46 ->
 * 2.76, spherical 3.31 -> 3.49, 1M x 4096 diag 6.64 -> 7.0: where the
 * atomics are fewer than the L2 takes, reading the rows again costs more.
 * Every list of at most 32 entries sorted (v15; before, at most cap / 2):
 * 77.1 -> 65.5 ms at 10M x 1024 diag.
 * FLASHGMM_GPU_SPARSE_SORTED=0 or 1 forces either (N: 0 = unknown, large).
 */
inline bool sparse_sorted_for(int64_t N)
{
	static const int forced = (int) env_int("FLASHGMM_GPU_SPARSE_SORTED", 0, 1, -1);
	return forced >= 0 ? forced == 1 : !small_table(N);
}
/*
 * Pairs a block's sorted statistics hold (sparse.cuh; more go by atomics):
 * at least 6 a row (10M x 1024 diag from k-means++ has 4.6), or as many as
 * fit in the overflowed rows' buffer, whose bytes they share (6.4 a row at
 * D = 128): no device memory of their own there.
 */
inline int64_t sparse_pair_cap(int64_t srows, int D) { return std::max<int64_t>(6 * srows, sparse_overflow_rows(srows) * D); }
constexpr int SPARSE_REST = 2, SPARSE_REST_MAX = 64;	/* dense passes after one that was mostly dense: 2, 4, .. 64 */
/*
 * Candidates a row (per 1024 components) past which the sparse pass, where
 * the default chose it, backs off as after overflowed lists: the exact
 * kernel's cost grows with the candidates, the dense pass's does not.
 * Measured (H100, v9): 10M x 1024 diag from k-means++ seeding, 11 a row,
 * sparse 191 ms a pass against dense 139; 1M x 1024 diag at 9.2 a row
 * (the second pass from the random start) 15.9 against 15.5.  Spherical
 * (v11, blocks of 2^18 rows): 1M x 1024 at 5.7 a row 3.7 ms an iteration
 * against 5.8 dense, at 9.2 a row 7.0 against 5.6, so 8 (5 before; 12
 * measured the same as 8 at 5.7 a row, 3.8).  10M x 1024 spherical from
 * k-means++ (4096 clusters) overflows and backs off: 55.2 against 54.9.
 * These were measured with a window (sp::sparse_window) of 22 nats; at 16 (v12)
 * rows have fewer candidates (10M x 1024 diag from k-means++: 5.0 instead of
 * 10.1, and the pass now stays sparse: 111 ms against 137 dense).
 * FLASHGMM_GPU_ESTEP=sparse keeps the pass whatever the count.
 */
constexpr double SPARSE_CANDS_DIAG = 10.0, SPARSE_CANDS_SPH = 8.0;

/*
 * Blocks of sparse.cuh's warp-per-row kernels over nr rows (one row per
 * warp, rows strided), for a kernel k that loads smem bytes of shared state
 * per block (a FlagSet) before its rows: one wave of the blocks the SMs hold
 * at once (at most 8 an SM), so that state is loaded once per resident
 * block.  (Before, 8 blocks an SM whatever the shared memory allowed: at
 * 1M x 4096 with ~390 flagged components, seven launches per 64k-row block,
 * each of 1056 blocks of about 62 rows loading up to 66 KB; cuda/NOTES.md,
 * v8.)  Call set_smem(k, smem) first.
 */
template <class Kern>
int warp_rows_grid(int64_t nr, Kern k, size_t smem)
{
	int per = 0;
	if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k, sp::EXACT_WARPS * 32, smem) != cudaSuccess)
	{
		cudaGetLastError();
		per = 8;
	}
	per = std::max(1, std::min(per, 8));
	return (int) std::min<int64_t>((int64_t) per * g_prop.multiProcessorCount,
								   (nr + sp::EXACT_WARPS - 1) / sp::EXACT_WARPS);
}

/*
 * device bytes of the h16 pass: one block of FP16 rows and their norms, the
 * FP16 model (rows16: the rows where the sparse pass's lists hold them, 0: their own buffer)
 */
int64_t h16_bytes(int Kp, bool diag, int64_t rows16 = 0)
{
	const int64_t IN = h16::in_width(diag), rb = h16::block_rows16(diag);
	return (rows16 > 0 ? rows16 * 4 : rb * (4 * IN + 4)) +
		   (int64_t) Kp * (4 * IN + 20);	/* rows, norms; model, colc16, colp16, c2l, flags */
}

/*
 * blockll entries (thread blocks' row sums) an h16 or sparse launch writes:
 * one block of FP16 rows' thread blocks (h16::BM1 rows each), or one wave of
 * warp-per-row blocks (warp_rows_grid), so not one per 64 rows of the table
 */
inline int64_t h16_blockll(int sms)
{
	return std::max<int64_t>(h16::block_rows16(false) / h16::BM1, 8ll * sms) + 1;
}

/* the data scale of the h16 pass: a power of two with max |x| S in [64, 128) */
float h16_scale(const float *dX, int64_t n)
{
	const int nb = (int) std::min<int64_t>(1024, std::max<int64_t>(1, (n + 255) / 256));
	float *d = dalloc<float>(nb, "scale");
	h16::absmax_kernel<<<nb, 256, 0, g_s>>>(dX, n, d);
	CKL("absmax_kernel");
	std::vector<float> h(nb);
	CK(cudaMemcpyAsync(h.data(), d, sizeof(float) * nb, cudaMemcpyDeviceToHost, g_s));
	CK(cudaStreamSynchronize(g_s));
	dfree(d);
	float m = 0.f;
	for (float v : h)
		m = std::max(m, v);
	if (!(m > 0.f) || !std::isfinite(m))
		return 1.f;
	int e;
	std::frexp(m, &e);			/* m in [2^(e-1), 2^e) */
	return std::ldexp(1.f, 7 - e);
}

/*
 * The h16 kernels' input: one block of at most `rows` rows converted to FP16
 * [hi | lo] (convert16_kernel) and their norms; both the E pass and the
 * assignment walk X block by block through it.
 */
struct H16Rows
{
	int64_t rows = 0;
	__half *Xg = nullptr;
	float *xh = nullptr;

	/* the model's data scale from X (resident, N x D), then one block's buffers (unless the kernels convert) */
	void init(DevModel &M, const float *dX, int64_t N, bool buffers = true)
	{
		M.enable_h16(h16_scale(dX, N * M.D));
		rows = h16::block_rows16(M.diag);
		if (buffers)
			alloc(M, rows, true);
	}
	/* buffers for blocks of r rows; without own_rows, Xg (r * 2 * h16_IN halves) is set by the caller */
	void alloc(const DevModel &M, int64_t r, bool own_rows)
	{
		rows = r;
		if (own_rows)
			Xg = dalloc<__half>((size_t) rows * 2 * M.h16_IN, "FP16 rows");
		xh = dalloc<float>(rows, "row norms");
	}
	/* nr rows padded to a whole thread block of rows */
	static int64_t padded(int64_t nr) { return (nr + h16::BM1 - 1) / h16::BM1 * h16::BM1; }
	/* rows x[0..nr) (nr <= rows) into the block, zero-padded to a whole thread block of rows; returns that count */
	int64_t convert(const DevModel &M, const float *x, int64_t nr)
	{
		const int64_t npad = padded(nr);
		const unsigned grid = (unsigned) ((npad + 7) / 8);	/* a warp per row */
		if (M.diag)
			h16::convert16_kernel<true><<<grid, 256, 0, g_s>>>(x, nr, npad, M.D, M.h16_S, Xg, xh);
		else
			h16::convert16_kernel<false><<<grid, 256, 0, g_s>>>(x, nr, npad, M.D, M.h16_S, Xg, xh);
		CKL("convert16_kernel");
		return npad;
	}
};

constexpr int64_t GEMM_WS_MAX = 60ll << 20;		/* workspace + logZ, within "X + 64 MiB" */
/* one block's scores: 16 MiB stays in L2 (50 MiB on an H100); FLASHGMM_GPU_BLOCK_MIB overrides (tuning) */
int64_t gemm_s_max()
{
	return env_int("FLASHGMM_GPU_BLOCK_MIB", 1, 256, 16) * (1ll << 20);
}
/* partial statistics products; FLASHGMM_GPU_SPLITS overrides (tuning) */
int gemm_splits_env()
{
	const int v = (int) env_int("FLASHGMM_GPU_SPLITS", 1, 64, 0);
	return (v & (v - 1)) == 0 ? v : 0;	/* divides the 256-row multiples */
}
constexpr int64_t GEMM_GROUP_ROWS = 65536;		/* rows summed in FP32 before the FP64 flush */
constexpr int64_t GEMM_LOGZ_FULL_MAX = 16ll << 20;	/* per-row logZ of all N rows kept up to this size */
/*
 * Whether the one-pass screen's seeds are kept as FP16 (2 bytes a row,
 * sp::seeds_in_kernel) for a table whose logZ is not kept for every row
 * (past GEMM_LOGZ_FULL_MAX of it, 4M rows; below, the FP32 seeds are that
 * logZ's companions), so that passes after the first screen once instead of
 * twice (SCREEN_MAX, then SCREEN_COLLECT).  Measured on the device (H100,
 * 10M x 1024 diag, seeded, v15): lists of 32, 65.5 -> 61.3 ms an iteration;
 * lists of 64 (FLASHGMM_GPU_SPARSE_CAP=64, 16 MiB more), 58.3 -> 54.6.  The
 * one pass's looser threshold (the seed less SPARSE_SLACK) brings 5.6
 * candidates a row instead of 4.6, and per block a few rows collected again
 * (4-5 ms a pass).
 *
 * Where they live (sparse_seeds_host): at 10M rows, 19 MiB on the device
 * would take the E pass past X + 64 MiB, so by default they are kept in
 * pinned host memory, and each block's are copied in on g_cs while the
 * block before it runs and back out after its screens (four staging
 * buffers of a block's rows: 1 MiB at 10M rows).
 * FLASHGMM_GPU_SPARSE_SEEDS16=0 turns them off, 2 takes them for every
 * table (the tests' sparse-blocks pass); FLASHGMM_GPU_SPARSE_SEEDS_HOST=0
 * keeps them on the device.  (N: the table's rows, 0 if unknown.)
 */
inline int sparse_seeds16_mode() { static const int m = (int) env_int("FLASHGMM_GPU_SPARSE_SEEDS16", 0, 2, 1); return m; }
inline bool sparse_seeds16_for(int64_t N)
{
	return sparse_seeds16_mode() == 2 || (sparse_seeds16_mode() == 1 && N * 4 > GEMM_LOGZ_FULL_MAX);
}
/* FLASHGMM_GPU_SPARSE_DEFER (EStep::run_sparse's dense_gathered): 0 never, 1 past 4M rows (default), 2 every table */
inline int sparse_defer_mode() { static const int m = (int) env_int("FLASHGMM_GPU_SPARSE_DEFER", 0, 2, 1); return m; }
inline bool sparse_seeds_host() { static const bool h = env_int("FLASHGMM_GPU_SPARSE_SEEDS_HOST", 0, 1, 1) != 0; return h; }
/*
 * The smallest r a sparse pair adds to the statistics (every candidate counts
 * in logZ): sp::SPARSE_RMIN, or 2^-FLASHGMM_GPU_SPARSE_RMIN_LOG2 (10 to 40).
 */
inline float sparse_rmin()
{
	static const int l = (int) env_int("FLASHGMM_GPU_SPARSE_RMIN_LOG2", 10, 40, 0);
	static const float r = l > 0 ? ldexpf(1.f, -l) : sp::SPARSE_RMIN;
	return r;
}
/* device bytes of the FP16 seeds for a table of N rows in sparse blocks of srows */
inline int64_t sparse_seeds16_bytes(int64_t N, int64_t srows)
{
	return !sparse_seeds16_for(N) ? 0 : sparse_seeds_host() ? 2 * 2 * srows : 2 * N;
}
/* whether a table's overflowed rows may wait for one dense pass over several blocks (EStep::defer_allowed; N as sparse_rows_for) */
inline bool sparse_defer_for(int64_t N)
{
	return sparse_defer_mode() == 2 || (sparse_defer_mode() == 1 && !(N > 0 && N * 4 <= GEMM_LOGZ_FULL_MAX));
}
/* FLASHGMM_GPU_SPARSE_SHARE (SparseLayout::rows16): 0 never, 1 where a whole FP16 row block fits (default), 2 wherever any does */
inline int sparse_share_mode() { static const int m = (int) env_int("FLASHGMM_GPU_SPARSE_SHARE", 0, 2, 1); return m; }
/*
 * Pairs a row the sorted statistics hold where the lists are shared
 * (SparseLayout; 6.4 otherwise, sparse_pair_cap): 10M x 1024 diag, seeded,
 * uses 1.3-1.5 (v17); more go by atomics.
 */
constexpr int64_t SPARSE_PAIRS_SHARED = 3;

/*
 * The sparse pass's buffer sizes for a table of N rows (0: unknown, as a
 * large one), made once for the memory estimate (EStep::bytes_needed) and
 * the allocations (EStep::init, run_sparse) alike.
 *
 * Where overflowed rows are deferred (defer) and a whole block of the dense
 * pass's FP16 rows fits in half the candidate lists' bytes, it lives there
 * (rows16; FLASHGMM_GPU_SPARSE_SHARE): the lists are dead whenever the dense
 * pass runs (after a block's sums, or for a block or a pass that went
 * dense), and the rows it takes gathered (the pending list, or a block's own
 * overflowed rows) use the lower half.  At 10M x 1024 diag in blocks of 2^18
 * rows that is 16 MiB, what blocks of 2^18 needed to stay within X + 64 MiB
 * (v18).  There xo holds only the sorted pairs (SPARSE_PAIRS_SHARED a row) and
 * the rows a one-pass screen collects again, gathered (xo_rows at most:
 * past it the whole block is collected again).
 */
struct SparseLayout
{
	int64_t srows = SPARSE_ROWS;	/* rows a block (sparse_rows_for) */
	int cap = sp::SPARSE_CAP;		/* candidates a row's list holds (sparse_cap_for) */
	bool sorted = false;			/* the statistics sorted by component (sparse_sorted_for) */
	bool defer = false;				/* deferral may run (sparse_defer_for) */
	int64_t rows16 = 0;				/* the dense pass's FP16 rows in the lists' upper half: its block rows (0: not shared) */
	int64_t pend_rows = 0;			/* the pending list: the rows one deferred dense pass takes */
	int64_t pcap = 0;				/* pairs of the sorted statistics (in xo) */
	int64_t xo = 0;					/* floats of xo */
	int64_t xo_rows = 0;			/* rows xo holds gathered, to be collected again */

	static SparseLayout for_table(int64_t N, int D, bool diag)
	{
		SparseLayout l;
		l.srows = sparse_rows_for(N, diag);
		l.cap = sparse_cap_for(N);
		l.sorted = sparse_sorted_for(N);
		l.defer = sparse_defer_for(N);
		const int64_t ov = sparse_overflow_rows(l.srows), lists = l.srows * l.cap * 4, rb = h16::block_rows16(diag);
		if (l.defer && sparse_share_mode() > 0)
		{
			const int64_t r = std::min(rb, lists / 2 / (4 * h16::in_width(diag))) / h16::BM1 * h16::BM1;
			if ((sparse_share_mode() == 2 ? r >= h16::BM1 : r == rb) && lists / 2 / (4 * D) >= ov)
				l.rows16 = r;
		}
		/*
		 * The pending list: two of the dense pass's row blocks, gathered into
		 * the lists' free bytes, and never fewer than sparse_overflow_rows.
		 * (Before, the overflowed rows' buffer's 6553 rows at 10M: a dense
		 * pass of 51 thread blocks on 132 SMs, 20 a pass.)
		 */
		const int64_t gathered = (l.rows16 > 0 ? lists / 2 : lists) / (4 * D);
		l.pend_rows = l.defer ? std::max(ov, std::min(gathered, 2 * (l.rows16 > 0 ? l.rows16 : rb))) : ov;
		if (l.rows16 > 0)
		{
			l.xo = SPARSE_PAIRS_SHARED * l.srows;
			l.pcap = l.sorted ? l.xo : 0;
			l.xo_rows = std::min(ov, l.xo / D);
		}
		else
		{
			l.pcap = l.sorted ? sparse_pair_cap(l.srows, D) : 0;
			l.xo = std::max(ov * D, l.pcap);
			l.xo_rows = ov;
		}
		return l;
	}
	/*
	 * device bytes: a block's best scores, candidate lists, counts and
	 * overflowed rows (int32, both lists); the pending list (int64) and its
	 * logZ; xo; the screen's constants; the FP32 sums; the sorted
	 * statistics' counts
	 */
	int64_t bytes(int Kp, int D) const
	{
		return srows * (4 + 4 * (int64_t) cap + 4 + 4) + sparse_overflow_rows(srows) * 4 + pend_rows * (8 + 4) + 4 * xo +
			   64 + (int64_t) Kp * (16 + 16 + 4 * 2 * D) + (sorted ? 12 * (int64_t) Kp + 4 : 0);
	}
};

struct GemmWork
{
	ChunkLayout cl;				/* as allocated (3xTF32 widths) */
	int Kp = 0, tpr = 32, vpt = VPT, P = 1;
	int64_t rc = 0;				/* rows per block (a multiple of 256, so of P) */
	float *A = nullptr, *B = nullptr, *S = nullptr, *Y = nullptr, *T = nullptr, *xn = nullptr;
	double *bll = nullptr;		/* per-thread-block sums of logZ, summed into ll when full */
	int64_t bll_cap = 0, bll_used = 0;

	static ChunkLayout layout(const DevModel &M, bool split)
	{
		ChunkLayout c;
		c.D = M.D;
		c.Dp = M.Dp;
		c.Dp2 = M.Dp2;
		c.split = split ? 1 : 0;
		c.diag = M.diag ? 1 : 0;
		c.L = split ? 3 * M.Dp2 : M.Dp2;
		c.Wd = M.diag ? 2 * M.D : M.D;
		c.Ws = round_up(c.Wd + 2, 4);
		c.W2 = split ? 2 * c.Ws : c.Ws;
		return c;
	}
	static int64_t per_row(int Kp, const ChunkLayout &c) { return 4 * ((int64_t) Kp + c.L + c.W2 + 1) + 8 * 16 / 32 + 8; }
	/*
	 * Sizes for a workspace of at most ws bytes: P partial statistics (enough
	 * thread blocks for the skinny statistics GEMM: P x its 128 x 128 tiles >=
	 * 2 x SMs, at most 16, and at most a quarter of ws), then rows.
	 */
	static void sizes(int Kp, const ChunkLayout &c, int64_t ws, int64_t max_rows, int &P, int64_t &rows)
	{
		int64_t tiles = ((Kp + 127) / 128) * (int64_t) ((c.W2 + 127) / 128);
		int64_t tbytes = 4 * (int64_t) Kp * c.W2;
		P = 1;
		while (P < 16 && P * tiles < 2 * g_prop.multiProcessorCount && 2 * P * tbytes <= ws / 4)
			P *= 2;
		if (gemm_splits_env())
			P = gemm_splits_env();
		int64_t fixed = 4 * (int64_t) Kp * c.L + P * tbytes;
		int64_t r = std::min<int64_t>({65536, gemm_s_max() / (4 * (int64_t) Kp), (ws - fixed) / per_row(Kp, c)});
		r = std::max<int64_t>(256, r / 256 * 256);
		rows = std::min<int64_t>(r, (max_rows + 255) / 256 * 256);
	}
	/* workspace bytes allowed: budget (0 = none) and what logZ takes */
	static int64_t ws_for(int64_t budget, int64_t logz_bytes)
	{
		int64_t ws = std::max<int64_t>(8ll << 20, std::max(GEMM_WS_MAX, 3 * gemm_s_max()) - logz_bytes);
		if (budget > 0)
			ws = std::min<int64_t>(ws, std::max<int64_t>(2ll << 20, budget / 4));
		return ws;
	}
	static int64_t bytes(const DevModel &M, int64_t ws, int64_t max_rows)
	{
		ChunkLayout c = layout(M, true);
		int P;
		int64_t r;
		sizes(M.Kp, c, ws, max_rows, P, r);
		return r * per_row(M.Kp, c) + 4 * (int64_t) M.Kp * (c.L + P * (int64_t) c.W2) + 64;
	}
	void init(const DevModel &M, int64_t ws, int64_t max_rows)
	{
		cl = layout(M, true);
		Kp = M.Kp;
		sizes(Kp, cl, ws, max_rows, P, rc);
		/* 16 scores per thread while K <= 4096 (fewer registers, more rows in flight), else 32 */
		vpt = Kp <= 256 * 16 ? 16 : VPT;
		tpr = 32;
		while (tpr * vpt < Kp)
			tpr *= 2;
		A = dalloc<float>((size_t) rc * cl.L, "score operand");
		Y = dalloc<float>((size_t) rc * cl.W2, "statistics operand");
		S = dalloc<float>((size_t) rc * Kp, "block scores");
		xn = dalloc<float>(rc, "row norms");
		B = dalloc<float>((size_t) Kp * cl.L, "model operand");
		T = dalloc<float>((size_t) P * Kp * cl.W2, "block statistics");
		bll_cap = std::max<int64_t>(16 * (rc / 32 + 1), rc + 1);
		bll = dalloc<double>(bll_cap, "row sums");
		bll_used = 0;
	}
	ChunkLayout current(const DevModel &M) const { return layout(M, M.prec_used == GMM_GPU_PREC_3XTF32); }
	/* after every model change */
	void pack_model(const DevModel &M)
	{
		ChunkLayout c = current(M);
		pack_model_kernel<<<std::min<int64_t>(2048, ((int64_t) Kp * c.Dp2 + 255) / 256), 256, 0, g_s>>>(M.Wm, Kp, c, B);
		CKL("pack_model_kernel");
	}
	void check(cublasStatus_t st, const char *what)
	{
		if (st != CUBLAS_STATUS_SUCCESS)
			fail(GMM_EDEVICE, "cuBLAS %s failed (status %d)", what, (int) st);
	}
	/* rows of the statistics GEMM: nr rounded up to its P slices (padding rows are zeros) */
	int64_t padded(int64_t nr) const { return (nr + P - 1) / P * P; }
	/*
	 * Steps 1 and 2 for rows x[0..nr): S = scores before the per-component
	 * constants, feature-major S^T (Kp x rc, for the EM pass: the statistics
	 * GEMM reads it K-major) or row-major (nr x Kp, for the assignment);
	 * flagged components finished from differences.
	 */
	void scores(const DevModel &M, const float *x, int64_t nr, bool transposed)
	{
		ChunkLayout c = current(M);
		int64_t np = transposed ? padded(nr) : nr;
		pack_rows_kernel<<<(unsigned) ((np + 31) / 32), 256, 0, g_s>>>(x, nr, np, c, A, transposed ? Y : nullptr, rc, xn);
		CKL("pack_rows_kernel");
		if (transposed)
			check(g_blas.gemm_tn((int) nr, Kp, c.L, A, c.L, B, c.L, 0.f, S, (int) rc), "score GEMM");
		else
			check(g_blas.gemm_tn(Kp, (int) nr, c.L, B, c.L, A, c.L, 0.f, S, Kp), "score GEMM");
		if (M.nflag > 0)
		{
			int64_t warps = nr * M.nflag;
			direct_scores_kernel<<<(unsigned) std::min<int64_t>(8192, (warps + 7) / 8), 256, 0, g_s>>>(
				x, nr, M.D, M.fidx, M.nflag, M.direct(), S, transposed ? 1 : Kp, transposed ? rc : 1);
			CKL("direct_scores_kernel");
		}
	}
	int rows_per_block() const { return 256 / tpr; }
	/* step 3 on S^T; the logZ sums of the thread blocks go to bll (summed into ll by sum_ll) */
	void softmax(const DevModel &M, int64_t nr, bool hard, float *lz, double *ll)
	{
		int64_t np = padded(nr);
		unsigned grid = (unsigned) ((np + 31) / 32);
		if (bll_used + grid > bll_cap)
			sum_ll(ll);
		softmax_cols_kernel<<<grid, 1024, 0, g_s>>>(S, rc, nr, np, Kp, !M.diag, M.colc, M.colp, xn, (int) hard, lz,
													 bll + bll_used, M.direct());
		CKL("softmax_cols_kernel");
		bll_used += grid;
	}
	void sum_ll(double *ll)
	{
		if (bll_used == 0)
			return;
		sum_kernel<<<1, 1024, 0, g_s>>>(bll, bll_used, ll, 1);
		CKL("sum_kernel");
		bll_used = 0;
	}
	/* step 4: T_p (+)= R_p^T Y_p over P slices of the block's (padded) rows; both operands K-major */
	void stats(const DevModel &M, int64_t nr, bool accumulate)
	{
		ChunkLayout c = current(M);
		int64_t np = padded(nr), k = np / P;
		check(g_blas.gemm_tn_batched(c.W2, Kp, (int) k, Y, (int) rc, k, S, (int) rc, k, accumulate ? 1.f : 0.f, T, c.W2,
									 (long long) Kp * c.W2, P),
			  "statistics GEMM");
	}
	/* step 5 */
	void flush(const DevModel &M, double *sx, double *nk, double *sxn)
	{
		ChunkLayout c = current(M);
		int64_t total = (int64_t) M.K * (c.Wd + 2);
		flush_stats_kernel<<<(unsigned) std::min<int64_t>(4096, (total + 255) / 256), 256, 0, g_s>>>(T, M.K, Kp, P, c,
																									   sx, nk, sxn);
		CKL("flush_stats_kernel");
	}
	/* assignment of rows x[0..nr) (steps 1, 2 and the top-m selection) */
	unsigned topk(const DevModel &M, const float *x, int64_t nr, float invT, int m, float tau, int32_t *comp,
				  float *resp)
	{
		scores(M, x, nr, false);
		unsigned grid = (unsigned) ((nr + rows_per_block() - 1) / rows_per_block());
		int sph = !M.diag;
		Direct dr = M.direct();
#define TK_ARGS S, nr, Kp, sph, M.colc, M.colp, xn, invT, m, tau, comp, resp, bll, dr, x, M.D
#define TK_CASE(T, V)                                             \
	case T * 1000 + V:                                            \
		topk_rows_kernel<T, V><<<grid, 256, 0, g_s>>>(TK_ARGS); \
		break;
		switch (tpr * 1000 + vpt)
		{
			TK_CASE(32, 16)
			TK_CASE(64, 16)
			TK_CASE(128, 16)
			TK_CASE(256, 16)
			TK_CASE(32, 32)
			TK_CASE(64, 32)
			TK_CASE(128, 32)
			TK_CASE(256, 32)
			default: fail(GMM_EINTERNAL, "no top-m kernel for %d x %d", tpr, vpt);
		}
#undef TK_CASE
#undef TK_ARGS
		CKL("topk_rows_kernel");
		return grid;
	}
};

/* ---- the E pass ------------------------------------------------------------------ */
struct EStep
{
	DevModel *M;
	Source *src;
	int prec;
	int Wd, nDt;
	int nsplit_max;
	float *logZ;				/* N (resident) or chunk rows */
	/* re-seeding scratch, allocated on first use: candidates (row, logZ) and their count, seeds' k / rows / source */
	struct Reseed
	{
		int64_t cap = 0;
		int64_t *crow = nullptr;
		float *clz = nullptr, *pv = nullptr, *src = nullptr;
		unsigned long long *count = nullptr;
		int *ks = nullptr;
		int64_t *rows = nullptr;
	} rs;
	double *blockll, *ll;
	float *part;
	double *pnk, *psxn;
	double *nk, *sx, *sxn;		/* FP64 accumulators */
	/* flagged components (allocated on demand, freed with the call) */
	int fcap = 0, fsplit = 0;
	double *fps1 = nullptr, *fps2 = nullptr, *fpnk = nullptr, *fs1 = nullptr, *fs2 = nullptr, *fnk = nullptr;
	float *fmu = nullptr;
	int fn = 0;					/* flagged components in the last stats pass */
	int64_t logz_rows;
	SparseLayout sl;				/* the sparse pass's sizes (rows a block, candidates a list, ..) */
	bool seeds16 = false;			/* the one-pass screen's seeds as FP16 (sparse_seeds16_for) */

	bool gemm = false;			/* chunked GEMM pass (chunked.cuh) instead of the fused kernels */
	bool h16 = false;			/* FP16 pass (half.cuh) instead of the fused kernels */
	H16Rows hr;					/* its converted rows */
	GemmWork gw;
	/*
	 * The sparse pass (sparse.cuh) where it applies and was chosen; its
	 * statistics are summed with atomics, so a deterministic fit
	 * (gmm_fit_params.deterministic) keeps the dense h16 pass.
	 */
	bool sparse = false;
	bool sparse_auto = false;	/* sparse by the default (no FLASHGMM_GPU_ESTEP): it may back off on candidates */
	bool deterministic = false;
	struct SparseWork
	{
		float *smax = nullptr, *c2s = nullptr, *psx = nullptr;
		double *bnk = nullptr, *bsxn = nullptr;	/* a block's sum r and sum r ||x - mu||^2 */
		unsigned long long *npairs = nullptr;
		int32_t *cand = nullptr, *count = nullptr;
		int *overflow = nullptr;	/* [2]: rows in orows, in orows2 */
		int32_t *orows = nullptr;	/* the block's rows whose lists overflowed (block rows) */
		int32_t *orows2 = nullptr;	/* those of them whose lists overflowed again, collected from the full maximum */
		int64_t *pend = nullptr;	/* overflowed rows of the pass's blocks so far (chunk rows), for one dense pass (sl.pend_rows) */
		float *seed = nullptr;		/* every row's lower bound on its best screened score (logZ kept for all rows) */
		__half *seed16 = nullptr;	/* the same as FP16 where logZ is a block's (sparse_seeds16_for), staged through smax */
		/*
		 * seed16 in pinned host memory (sparse_seeds_host): a block's
		 * copied in and out through sbuf on g_cs, alternating buffers; the
		 * block's seeds are read from sbuf[i] before they are written back
		 * there, and its next copy in (two blocks on) follows the copy out
		 * on g_cs.  sout_ready: seeds_out_kernel wrote sbuf, for the copy out.
		 */
		bool seed16_host = false;
		/* the block's overflow count, copied after its screens (late_ov): pinned, and the copy's event */
		int *hov = nullptr;
		cudaEvent_t ov_ready = nullptr;
		__half *sbuf[2] = {nullptr, nullptr};
		cudaEvent_t sout_ready = nullptr;
		bool seeded = false;		/* seed holds the last pass's bounds: one screen pass */
		float *xo = nullptr, *lzo = nullptr;	/* those rows gathered, their logZ */
		/*
		 * The sorted statistics (sparse.cuh; only where sl.sorted): pairs a
		 * component (hist), their offsets and cursors, the count; pidx
		 * (sl.pcap pairs) shares xo's bytes, used before the overflowed rows
		 * are gathered there.
		 */
		int32_t *hist = nullptr, *off = nullptr, *cur = nullptr, *ptotal = nullptr, *pidx = nullptr;
	} sw;
	int sparse_rest = 0;		/* passes left that take the dense pass, after one whose lists overflowed */
	int sparse_backoff = SPARSE_REST;	/* the next such rest (doubles while the screen keeps failing) */

	/* device bytes besides X and logZ (rows: N when logZ covers every row, else 0) */
	static int64_t bytes_needed(const DevModel &M, int64_t rows, int sms, int64_t budget)
	{
		int Kp = M.Kp, D = M.D;
		bool diag = M.diag;
		int Wd = diag ? 2 * D : D;
		int64_t acc = (int64_t) Kp * (Wd + 2) * 8 + 64;
		int64_t per_split = (int64_t) Kp * Wd * 4 + 2 * (int64_t) Kp * 8;
		int64_t ns = std::max<int64_t>(1, std::min<int64_t>(PART_BYTES_MAX / per_split, 4 * sms));
		int64_t parts = ns * per_split + acc;	/* statistics partials and accumulators, as init */
		int64_t fused = parts + ((rows + 63) / 64 + 1) * 8;	/* (blockll: a double a 64 rows) */
		int64_t other = fused;
		if (use_gemm(Kp))
		{
			/* rows * 4: logZ, which the caller counts per row; kept only up to GEMM_LOGZ_FULL_MAX */
			int64_t lzb = rows * 4 <= GEMM_LOGZ_FULL_MAX ? rows * 4 : 0;
			other = acc + GemmWork::bytes(M, GemmWork::ws_for(budget, lzb), std::max<int64_t>(rows, 1ll << 20));
		}
		/* the h16 pass's buffers, when X will be resident (else gemm or fused runs): the larger */
		int64_t h16 = 0;
		if (want_h16(D, diag))
		{
			/* (blockll: per launch, not per row, as init sizes it for h16) */
			const int64_t h16fused = parts + h16_blockll(sms) * 8;
			if (sparse_applies(Kp, diag))
			{
				const SparseLayout sl = SparseLayout::for_table(rows, D, diag);
				h16 = h16fused + h16_bytes(Kp, diag, sl.rows16) + sl.bytes(Kp, D) + sparse_seeds16_bytes(rows, sl.srows);
			}
			else
				h16 = h16fused + h16_bytes(Kp, diag);
		}
		if (h16 > 0 && budget > 0 && rows * ((int64_t) D * 4 + 4) + h16 > budget)
			h16 = 0;
		return std::max(other, h16);
	}

	void init(DevModel *M_, Source *s_, int64_t logz_rows_, int64_t budget)
	{
		M = M_;
		src = s_;
		prec = effective_prec();
		Wd = M->diag ? 2 * M->D : M->D;
		nDt = (M->D + DT - 1) / DT;
		int64_t per_split = (int64_t) M->Kp * Wd * 4 + 2 * (int64_t) M->Kp * 8;
		ll = dalloc<double>(1, "log-likelihood");
		nk = dalloc<double>(M->Kp, "statistics");
		sxn = dalloc<double>(M->Kp, "statistics");
		sx = dalloc<double>((size_t) M->Kp * Wd, "statistics");
		const bool try16 = want_h16(M->D, M->diag);
		h16 = try16 && src->resident && (budget <= 0 || g_live + h16_bytes(M->Kp, M->diag) <= budget);
		const int64_t table_rows = logz_rows_ >= src->N ? src->N : 0;	/* (0: unknown, as for a large table) */
		if (h16)
		{
			hr.init(*M, src->dX, src->N, false);
			sparse = sparse_applies(M->Kp, M->diag);
			if (sparse)
				sl = SparseLayout::for_table(table_rows, M->D, M->diag);	/* (as bytes_needed counted it) */
			/* (where the lists hold the FP16 rows, share_lists makes them at the first pass) */
			hr.alloc(*M, sparse && sl.rows16 > 0 ? sl.rows16 : hr.rows, !(sparse && sl.rows16 > 0));
			snprintf(g_variant, sizeof(g_variant), "h16 (FP16 tensor cores, pass 1 on %s, data scale 2^%d)",
					 use_wgmma() ? "wgmma" : "mma.sync", (int) std::lround(std::log2((double) M->h16_S)));
		}
		else
		{
			gemm = use_gemm(M->Kp);
			const char *e = getenv("FLASHGMM_GPU_ESTEP");
			if (try16 || (e && strncmp(e, "h16", 3) == 0))
			{
				char tmp[sizeof(g_variant)];
				/* (a truncated reason is acceptable: it only names the pass) */
				if (snprintf(tmp, sizeof(tmp), "%s (h16 needs %s)", g_variant,
							 M->D > h16::DMAX ? "D <= 128" : "X resident and 16 MiB more") >= (int) sizeof(tmp))
					tmp[sizeof(tmp) - 1] = '\0';
				memcpy(g_variant, tmp, sizeof(tmp));
			}
		}
		if (gemm)
		{
			/*
			 * logZ of every row only while it is small (re-seeding picks the rows
			 * of lowest likelihood from it); else one block's worth, and empty
			 * components are re-seeded from random rows, as when streaming.
			 */
			bool full = logz_rows_ >= src->N && src->N * 4 <= GEMM_LOGZ_FULL_MAX;
			gw.init(*M, GemmWork::ws_for(budget, full ? src->N * 4 : 0), src->max_rows());
			logz_rows = full ? src->N : gw.rc;
			logZ = dalloc<float>(logz_rows, "logZ");
			return;
		}
		sparse_auto = sparse && !getenv("FLASHGMM_GPU_ESTEP");
		/* h16: logZ of every row while small, as gemm; else one block's (pass 2 follows pass 1 per block) */
		logz_rows = h16 && !(logz_rows_ >= src->N && src->N * 4 <= GEMM_LOGZ_FULL_MAX)
						? std::max<int64_t>(hr.rows, sparse ? sl.srows : 0) : logz_rows_;
		logZ = dalloc<float>(logz_rows, "logZ");
		/* (sparse needs X resident: one source chunk, rows 0..N, as seed16's offsets assume) */
		seeds16 = sparse && src->resident && sparse_seeds16_for(table_rows);
		nsplit_max = (int) std::max<int64_t>(1, std::min<int64_t>(PART_BYTES_MAX / per_split, 4 * g_prop.multiProcessorCount));
		/* blocks of >= 64 rows; the h16 and sparse launches' thread blocks (h16_blockll) */
		blockll = dalloc<double>(h16 ? h16_blockll(g_prop.multiProcessorCount) : (src->max_rows() + 63) / 64 + 1, "row sums");
		part = dalloc<float>((size_t) nsplit_max * M->Kp * Wd, "partial statistics");
		pnk = dalloc<double>((size_t) nsplit_max * M->Kp, "partial statistics");
		psxn = dalloc<double>((size_t) nsplit_max * M->Kp, "partial statistics");

		/* shared memory opt-in for every instance we may launch */
		set_smem(lse_kernel<128, false>, lse_smem(128));
		set_smem(lse_kernel<128, true>, lse_smem(128));
		set_smem(lse_kernel<64, false>, lse_smem(64));
		set_smem(lse_kernel<64, true>, lse_smem(64));
		set_smem(stats_kernel<128, false, false>, stats_smem(128));
		set_smem(stats_kernel<128, false, true>, stats_smem(128));
		set_smem(stats_kernel<64, true, false>, stats_smem(64));
		set_smem(stats_kernel<64, true, true>, stats_smem(64));
		if (h16)
		{
			set_smem(h16::stats16_kernel<false, 8>, h16::stats16_smem(false, 8));
			set_smem(h16::stats16_kernel<false, 4>, h16::stats16_smem(false, 4));
			set_smem(h16::stats16_kernel<true, 4>, h16::stats16_smem(true, 4));
			set_smem(h16::stats16_kernel<true, 8>, h16::stats16_smem(true, 8));
		}
	}

	/*
	 * The h16 pass (half.cuh) over rows dX[0..nc): blocks of hr.rows rows are
	 * converted to FP16 [hi | lo] once, then pass 1 and pass 2 read them.
	 */
	void run_h16(const float *dX, int64_t nc, float *lz, bool stats, bool hard)
	{
		for (int64_t b0 = 0; b0 < nc; b0 += hr.rows)
		{
			const int64_t nr = std::min(hr.rows, nc - b0);
			const float *x = dX + b0 * M->D;
			float *lzb = logz_rows >= src->N ? lz + b0 : logZ;	/* else logZ holds one block */
			const int64_t npad = hr.convert(*M, x, nr);
			launch_lse16(x, nr, npad, lzb, hard);
			if (stats)
				launch_stats16(x, nr, lzb, hard);
			if (fn > 0 && logz_rows < src->N)	/* else once per source chunk (run) */
				flagged_stats(x, nr, lzb);
		}
	}

	void launch_lse16(const float *x, int64_t nr, int64_t npad, float *lz, bool hard)
	{
		const unsigned nb = (unsigned) (npad / h16::BM1);
		const bool mask = flags_apart(hard);
		Direct dr = M->direct();
		if (mask)
			dr.any = 0;
#define A16 hr.Xg, (const float *) hr.xh, x, nr, M->D, M->Kp, pass1_model(*M), \
			(const float *) (mask ? M->colc16m : M->colc16), (const float *) M->colp16, (int) hard, lz, blockll, dr, 1.f, \
			0, 0.f, (int32_t *) nullptr, (float *) nullptr, M->h16_S
		if (M->diag)
			launch_pass1<true, 0>(nb, A16);
		else
			launch_pass1<false, 0>(nb, A16);
#undef A16
		CKL("pass 1 (lse16_kernel / lse_wg_kernel)");
		unsigned nsum = nb;
		if (mask)
		{
			/* the flagged components' scores from differences merged into logZ (and its block sums) */
			nsum = merge_flagged(x, nr, M->fidx, M->nflag, lz, blockll);
		}
		sum_kernel<<<1, 1024, 0, g_s>>>(blockll, nsum, ll, 1);
		CKL("sum_kernel");
	}
	/*
	 * Components fidx[0..n) scored from the differences and merged into lz
	 * over rows x[0..nr) by flag_lse_kernel, SPARSE_FMAX at a time, every
	 * launch on one grid, which it returns: the last launch's block sums
	 * (blockll) are those of the final logZ.  best2: the screen's best lower
	 * bounds, where lz holds nothing yet (the sparse pass).
	 */
	unsigned merge_flagged(const float *x, int64_t nr, const int *fidx, int n, float *lz, double *blockll,
						   const float *best2 = nullptr)
	{
		const size_t fbmax = sp::FlagSet::bytes(std::min(sp::SPARSE_FMAX, n), M->D, M->diag);
		set_smem(sp::flag_lse_kernel, fbmax);
		const unsigned grid = (unsigned) warp_rows_grid(nr, sp::flag_lse_kernel, fbmax);
		for (int f0 = 0; f0 < n; f0 += sp::SPARSE_FMAX)
		{
			const int nf = std::min(sp::SPARSE_FMAX, n - f0);
			sp::flag_lse_kernel<<<grid, sp::EXACT_WARPS * 32, sp::FlagSet::bytes(nf, M->D, M->diag), g_s>>>(
				x, nr, M->D, M->direct(), fidx + f0, nf, lz, blockll, best2);
			CKL("flag_lse_kernel");
		}
		return grid;
	}
	/*
	 * The dense h16 passes leave the flagged components out (constants -inf):
	 * flag_lse_kernel adds them to logZ, flag_stats_kernel makes their
	 * statistics.  Not for hard passes (their statistics would be lost).
	 */
	bool flags_apart(bool hard) const
	{
		return !hard && M->nflag > 0 && M->D <= FLAG_DMAX;
	}

	/* pass 2: partial statistics per (component tile, row range), then reduce_parts_kernel */
	void launch_stats16(const float *x, int64_t nr, const float *lz, bool hard)
	{
		/* warps per block, 16 components each */
		const int nw = M->Kp % 128 == 0 ? 8 : 4;
		int nkt = M->Kp / (16 * nw);
		int64_t tiles = (nr + BM - 1) / BM;
		int64_t want = std::max<int64_t>(1, (2 * g_prop.multiProcessorCount + nkt - 1) / nkt);
		int ns = (int) std::min<int64_t>({(int64_t) nsplit_max, tiles, want});
		int64_t rps = (tiles + ns - 1) / ns * BM;
		ns = (int) ((nr + rps - 1) / rps);
		dim3 grid(nkt, ns);
		size_t sm = h16::stats16_smem(M->diag, nw);
		const bool mask = flags_apart(hard);	/* as pass 1: flag_stats_kernel makes the flagged statistics */
		Direct dr = M->direct();
		if (mask)
			dr.any = 0;
		const float *cc = mask ? M->colc16m : M->colc16;
#define S16 hr.Xg, hr.xh, x, nr, M->D, M->Kp, M->Wh, cc, M->colp16, M->h16_S, lz, (int) hard, rps, part, pnk, psxn, Wd, dr
		if (nw == 8 && use_wgmma())	/* 128 components per block, as stats16_kernel<*, 8> */
		{
			const size_t smw = wg::stats_smem(M->diag);
			if (M->diag)
			{
				set_smem(wg::stats_wg_kernel<true>, smw);
				wg::stats_wg_kernel<true><<<grid, wg::Cfg2<true>::THREADS, smw, g_s>>>(S16);
			}
			else
			{
				set_smem(wg::stats_wg_kernel<false>, smw);
				wg::stats_wg_kernel<false><<<grid, wg::Cfg2<false>::THREADS, smw, g_s>>>(S16);
			}
		}
		else if (M->diag && nw == 8)
			h16::stats16_kernel<true, 8><<<grid, 8 * 32, sm, g_s>>>(S16);
		else if (M->diag)
			h16::stats16_kernel<true, 4><<<grid, 4 * 32, sm, g_s>>>(S16);
		else if (nw == 8)
			h16::stats16_kernel<false, 8><<<grid, 8 * 32, sm, g_s>>>(S16);
		else
			h16::stats16_kernel<false, 4><<<grid, 4 * 32, sm, g_s>>>(S16);
#undef S16
		CKL("pass 2 (stats16_kernel / stats_wg_kernel)");
		reduce_parts_kernel<<<std::min<int64_t>(4096, ((int64_t) M->K * Wd + 255) / 256), 256, 0, g_s>>>(
			part, pnk, psxn, ns, M->Kp, M->K, Wd, sx, nk, sxn);
		CKL("reduce_parts_kernel");
	}

	/* the sparse pass for this E pass: chosen, soft, not deterministic, the screen-flagged set small enough */
	bool sparse_now(bool hard) const
	{
		return sparse && !hard && !deterministic && M->nsflag - M->nflag <= sp::SPARSE_FMAX && sparse_rest == 0;
	}

	/*
	 * Where the sorted statistics keep a pair's r (sp::SORT_R_*): in the
	 * list's second half for lists of 64; packed into the entry with its
	 * component for lists of 32 where Kp <= 65535 (NOTES v16;
	 * FLASHGMM_GPU_SPARSE_RPACK=0: scored again, as v15 measured); else
	 * scored again in the sums.
	 */
	/*
	 * Whether a block's overflowed rows may wait for one dense pass of
	 * several blocks' (FLASHGMM_GPU_SPARSE_DEFER, run_sparse's defer): by
	 * default where logZ is kept for a block only (past 4M rows).
	 */
	bool defer_allowed() const
	{
		return sparse_defer_mode() == 2 || (sparse_defer_mode() == 1 && logz_rows < src->N);
	}
	int sort_rmode() const
	{
		static const bool pack = env_int("FLASHGMM_GPU_SPARSE_RPACK", 0, 1, 1) != 0;
		if (sl.cap / 2 >= 32)
			return sp::SORT_R_HALF;
		return pack && M->Kp <= 65535 ? sp::SORT_R_PACKED : sp::SORT_R_RESCORE;
	}
	/* the components whose pairs the exact and scatter kernels count in shared memory: all, up to SORT_BINS_MAX, else none */
	int sorted_bins() const { return M->Kp <= sp::SORT_BINS_MAX ? M->Kp : 0; }
	/*
	 * The sorted statistics of the exact kernel's pairs over rows x[0..nr)
	 * (sparse.cuh): the offsets and the scatter into component order
	 * (sorted_scatter), then the sums (sorted_sums); lz: the rows' logZ
	 * (sp::SORT_R_RESCORE).  pidx is xo's bytes: both run before the
	 * overflowed rows are gathered there.
	 */
	void sorted_scatter(const float *x, int64_t nr, const float *lz)
	{
		const int D = M->D;
		const int hk = sorted_bins();
		sp::pair_offsets_kernel<<<1, 1024, 0, g_s>>>(sw.hist, sw.off, sw.cur, M->Kp, sw.ptotal);
		CKL("pair_offsets_kernel");
		auto scatter = M->diag ? (D == 128 ? sp::pair_scatter_kernel<true, 128> : sp::pair_scatter_kernel<true, 0>)
							   : (D == 128 ? sp::pair_scatter_kernel<false, 128> : sp::pair_scatter_kernel<false, 0>);
		set_smem(scatter, 4 * (size_t) hk);
		scatter<<<warp_rows_grid(nr, scatter, 4 * (size_t) hk), sp::EXACT_WARPS * 32, 4 * (size_t) hk, g_s>>>(
			x, nr, D, M->mu, sw.cand, sw.count, sl.cap, sort_rmode(), sw.off, sw.cur, sw.pidx, sl.pcap, sw.psx, sw.bnk,
			sw.bsxn, hk, lz, M->direct(), sparse_rmin());
		CKL("pair_scatter_kernel");
	}
	void sorted_sums(const float *x, const float *lz)
	{
		const int D = M->D;
		auto sums = M->diag ? (D == 128 ? sp::pair_sums_kernel<true, 128> : sp::pair_sums_kernel<true, 0>)
							: (D == 128 ? sp::pair_sums_kernel<false, 128> : sp::pair_sums_kernel<false, 0>);
		/* (warps loop over runs of PAIR_RUN pairs: one wave of blocks, as for the warp-per-row kernels) */
		sums<<<warp_rows_grid(sl.pcap / sp::PAIR_RUN + 1, sums, 0), sp::EXACT_WARPS * 32, 0, g_s>>>(
			x, D, M->mu, sw.cand, sl.cap, sort_rmode(), sw.pidx, sw.ptotal, sl.pcap, sw.psx, sw.bnk, sw.bsxn, lz,
			M->direct(), sparse_rmin());
		CKL("pair_sums_kernel");
	}

	/*
	 * The sparse pass (sparse.cuh) over rows dX[0..nc), blocks of
	 * srows: screen (best score, then the candidates), exact scores
	 * and statistics, the FP32 sums flushed into the FP64 ones every
	 * sparse_flush_rows(srows) rows.
	 */
	void run_sparse(const float *dX, int64_t nc, float *lz, bool stats, bool last_chunk)
	{
		const int Kp = M->Kp, D = M->D, Wd = M->diag ? 2 * D : D;
		const int64_t srows = sl.srows;
		const int scap = sl.cap;
		const bool ssorted = sl.sorted;
		snprintf(g_variant, sizeof(g_variant), "sparse (one-product screen on wgmma, exact scores of the candidates, "
				 "data scale 2^%d)", (int) std::lround(std::log2((double) M->h16_S)));
		if (!sw.smax)
		{
			sw.smax = dalloc<float>(srows, "sparse pass");
			if (!sw.cand)	/* (else share_lists made it) */
				sw.cand = dalloc<int32_t>((size_t) srows * scap, "sparse pass");
			sw.count = dalloc<int32_t>(srows, "sparse pass");
			sw.overflow = dalloc<int>(2, "sparse pass");
			sw.orows = dalloc<int32_t>(srows, "sparse pass");
			sw.orows2 = dalloc<int32_t>(sparse_overflow_rows(srows), "sparse pass");
			/*
			 * The pending list and its logZ at the deferred dense pass's
			 * size only where deferral can run (sl.pend_rows); else lzo
			 * serves a block's own overflowed rows.  (83b4c07 sized them for deferral on
			 * every table: 1M x 1024 spherical went 3.30-3.34 -> 3.81-3.89
			 * ms an iteration, H100, with no other change on its path.  The
			 * buffers are unused there; what moved is where the allocations
			 * after them land: psx given its own 4 MiB allocation measured
			 * as slow.  The exact kernel's FP32 atomics into psx are
			 * sensitive to its placement: NOTES v17.)
			 */
			sw.pend = dalloc<int64_t>(sl.pend_rows, "sparse pass");
			sw.xo = dalloc<float>((size_t) sl.xo, "sparse pass");
			if (ssorted)
			{
				sw.pidx = reinterpret_cast<int32_t *>(sw.xo);
				sw.hist = dalloc<int32_t>(3 * (size_t) Kp + 1, "sparse pass");
				sw.off = sw.hist + Kp;
				sw.cur = sw.off + Kp;
				sw.ptotal = sw.cur + Kp;
				CK(cudaMemsetAsync(sw.hist, 0, sizeof(int32_t) * Kp, g_s));
			}
			sw.lzo = dalloc<float>(sl.pend_rows, "sparse pass");
			sw.c2s = dalloc<float>(4 * (size_t) Kp, "sparse pass");
			sw.npairs = dalloc<unsigned long long>(2, "sparse pass");
			sw.psx = dalloc<float>((size_t) Kp * Wd, "sparse pass");
			sw.bnk = dalloc<double>(Kp, "sparse pass");
			sw.bsxn = dalloc<double>(Kp, "sparse pass");
			CK(cudaMemsetAsync(sw.psx, 0, sizeof(float) * Kp * Wd, g_s));
			CK(cudaMemsetAsync(sw.bnk, 0, sizeof(double) * Kp, g_s));
			CK(cudaMemsetAsync(sw.bsxn, 0, sizeof(double) * Kp, g_s));
			set_smem(wg::lse_wg_kernel<false, 0, true, wg::SCREEN_MAX>, wg::lse_smem(false, true));
			set_smem(wg::lse_wg_kernel<false, 0, true, wg::SCREEN_COLLECT>, wg::lse_smem(false, true));
			set_smem(wg::lse_wg_kernel<true, 0, true, wg::SCREEN_MAX>, wg::lse_smem(true, true));
			set_smem(wg::lse_wg_kernel<true, 0, true, wg::SCREEN_COLLECT>, wg::lse_smem(true, true));
			set_smem(wg::lse_wg_kernel<false, 0, true, wg::SCREEN_ONEPASS>, wg::lse_smem(false, true));
			set_smem(wg::lse_wg_kernel<true, 0, true, wg::SCREEN_ONEPASS>, wg::lse_smem(true, true));
			if (defer_allowed())	/* (late_ov) */
			{
				sw.hov = static_cast<int *>(try_pinned(sizeof(int)));
				if (sw.hov)
					sw.ov_ready = registered_event();
			}
			if (seeds16 && sparse_seeds_host())
			{
				sw.seed16 = static_cast<__half *>(try_pinned(sizeof(__half) * src->N));
				sw.seed16_host = sw.seed16 != nullptr;	/* (else: two screens a pass, no seeds) */
				if (sw.seed16_host)
				{
					for (int i = 0; i < 2; i++)
						sw.sbuf[i] = dalloc<__half>(srows, "sparse pass");
					sw.sout_ready = registered_event();
				}
			}
			else if (seeds16)
				sw.seed16 = dalloc<__half>(src->N, "sparse pass");
			else if (logz_rows >= src->N)
				sw.seed = dalloc<float>(src->N, "sparse pass");
		}
		/*
		 * One screen pass from the last pass's bounds where they are kept
		 * (logZ of every row, or FP16 seeds), else two.  The rows a one-pass
		 * screen fails (their best fell more than the slack since the last
		 * pass, or their lists overflowed) are collected again from the full
		 * maximum it left: gathered, or the whole block where they are
		 * more than sparse_overflow_rows(srows) (and two passes for the blocks
		 * after it).  (Before, they went to the dense pass, whose error
		 * took SIFT diag's means from 5.2e-5 to 7.6e-4 of float64: v7.)
		 * Where the overflowed rows are deferred (past 4M rows), the failed
		 * rows wait with them for one dense pass instead (recollect, below):
		 * there they are about 1% of the rows.
		 * FLASHGMM_GPU_SPARSE_PASSES=1 or 2 forces either.
		 */
		const int fp = (int) env_int("FLASHGMM_GPU_SPARSE_PASSES", 1, 2, 0);
		bool onepass = (sw.seed || sw.seed16) && sw.seeded && fp != 2;
		/* FLASHGMM_GPU_SPARSE_SLACK (nats, 0 to 40) overrides SPARSE_SLACK / SPARSE_SLACK16 (tuning) */
		static const float slack_env = (float) env_float("FLASHGMM_GPU_SPARSE_SLACK", 0.0, 40.0, -1.0);
		const float slack = slack_env >= 0.f ? slack_env : (float) (sw.seed16 ? sp::SPARSE_SLACK16 : sp::SPARSE_SLACK);
		/* FLASHGMM_GPU_SPARSE_T (nats, 8 to 40) overrides sparse_window(K), the window below the row's best (tuning) */
		static const float window_env = (float) env_float("FLASHGMM_GPU_SPARSE_T", 8.0, 40.0, -1.0);
		const float window = window_env > 0.f ? window_env : sp::sparse_window(M->K);
		int64_t redone_rows = 0;	/* rows collected again after a one-pass screen failed them */
		const int64_t n0 = sw.seed ? lz - logZ : 0;	/* this chunk's first row (seed16: X resident, one chunk) */
		sp::screen_constants_kernel<<<(Kp + 255) / 256, 256, 0, g_s>>>(M->colc16, M->colp16, M->serr, M->sflag, Kp,
																		sw.c2s);
		CK(cudaMemsetAsync(sw.npairs, 0, 2 * sizeof(unsigned long long), g_s));
		CKL("screen_constants_kernel");
		Direct dr = M->direct(), none = dr;
		none.any = 0;	/* the screen scores no component from differences: those are -inf there */
		const int nsf = M->nsflag;
		const size_t smw = wg::lse_smem(M->diag, true);
		/* profiling: device time of each step (synchronises: a diagnostic) */
		std::unique_ptr<Timer> pt(profiling() ? new Timer : nullptr);
		double tms[7] = {0, 0, 0, 0, 0, 0, 0};	/* max, collect (or one pass), exact, the rest, collected again, sorted scatter, sums */
		auto lap = [&](int step) {
			if (pt)
			{
				tms[step] += pt->stop_ms();
				pt->start();
			}
		};
		if (pt)
			pt->start();
		int64_t dense_rows = 0, over_rows = 0;
		/* the FP32 sums around the means into the FP64 statistics, every sparse_flush_rows(srows) rows and at the end */
		int64_t unflushed = 0;	/* rows */
		auto flush = [&]() {
			sp::flush_sparse_kernel<<<Kp, 128, 0, g_s>>>(M->mu, D, (int) M->diag, sw.psx, sw.bnk, sw.bsxn, sx, nk, sxn);
			CKL("flush_sparse_kernel");
			unflushed = 0;
		};
		/*
		 * Rows xs[rows[0..n)] gathered through the dense h16 pass, their
		 * logZ to lzd[rows[i]] (nullptr: not kept).  The rows whose lists
		 * overflowed wait in sw.pend (chunk rows) for one such pass over
		 * several blocks' (defer): a pass over a block's few hundred rows
		 * is a wave of a few dozen thread blocks, each streaming the whole
		 * model, about 0.1 ms however few the rows (10M x 1024 diag, 91k
		 * such rows a pass: 77 passes, 11 ms; deferred, 4.1 ms, and 66.8 ->
		 * 60.1 ms an iteration on an H100).  By default only where logZ is
		 * kept for a block (past 4M rows: GEMM_LOGZ_FULL_MAX; 1M x 1024 spherical, whose
		 * blocks' lists rarely overflow, measured 3.28 -> 3.38 ms with it,
		 * not understood), and not where the flagged components'
		 * statistics need each block's logZ complete (fn > 0).
		 * FLASHGMM_GPU_SPARSE_DEFER=0: each block's; 2: deferred for every
		 * table (the tests' sparse-blocks pass).
		 */
		auto dense_gathered = [&](const float *xs, const auto *rows, int n, float *lzd, float *xg) {
			gather_rows_kernel<<<256, 256, 0, g_s>>>(xs, D, rows, n, xg);
			CKL("gather_rows_kernel");
			for (int64_t c0 = 0; c0 < n; c0 += hr.rows)
			{
				const int64_t m = std::min<int64_t>(hr.rows, n - c0);
				const int64_t npad = hr.convert(*M, xg + c0 * D, m);
				launch_lse16(xg + c0 * D, m, npad, sw.lzo + c0, false);
				if (stats)
					launch_stats16(xg + c0 * D, m, sw.lzo + c0, false);
			}
			if (lzd)
			{
				sp::scatter_logz_kernel<<<(n + 255) / 256, 256, 0, g_s>>>(sw.lzo, rows, n, lzd);
				CKL("scatter_logz_kernel");
			}
		};
		const bool block_logz = logz_rows < src->N;
		const bool defer = defer_allowed() && !(fn > 0 && block_logz);
		/*
		 * The rows a one-pass screen fails, where overflowed rows are
		 * deferred (defer): left overflowed, so they wait for the dense pass
		 * with those, instead of being gathered and collected again from
		 * their full maximum block by block (a launch over a few thousand
		 * rows and a sync, 77 times a pass at 10M rows: 5.5 ms a pass).
		 * H100, 10M x 1024 diag, seeded, slack 3: at par (54.4-55.0 ms an
		 * iteration against 53.2-57.4); with SPARSE_SLACK16 it is what lets
		 * the tighter slack pay.  Those rows' statistics then come from the
		 * dense pass (3xFP16), as the overflowed rows' do.
		 * FLASHGMM_GPU_SPARSE_RECOLLECT=1 collects them again.
		 */
		static const int recollect = (int) env_int("FLASHGMM_GPU_SPARSE_RECOLLECT", 0, 1, 0);
		int npend = 0;
		/* where dense_gathered gathers a block's overflowed rows: the lists' bytes where they are shared, else xo */
		auto gather_to = [&]() { return sl.rows16 > 0 ? reinterpret_cast<float *>(sw.cand) : sw.xo; };
		auto dense_pending = [&]() {
			if (npend > 0)
				dense_gathered(dX, sw.pend, npend, block_logz ? nullptr : lz, reinterpret_cast<float *>(sw.cand));
			npend = 0;
		};
		/* a block's n overflowed rows (block rows, the block at chunk row b0) onto the pending list, a dense pass each time it fills */
		auto defer_rows = [&](const int32_t *rows, int n, int64_t b0) {
			for (int i = 0; i < n;)
			{
				const int take = (int) std::min<int64_t>(n - i, sl.pend_rows - npend);
				if (take == 0)
				{
					dense_pending();
					continue;
				}
				sp::offset_rows_kernel<<<(take + 255) / 256, 256, 0, g_s>>>(rows + i, take, b0, sw.pend + npend);
				CKL("offset_rows_kernel");
				npend += take;
				i += take;
			}
		};
		/* host-kept FP16 seeds (sparse_seeds_host): the block at b0's copied into sbuf[i] on g_cs */
		const bool hseeds = sw.seed16_host;
		auto seeds_copy_in = [&](int64_t b0, int i) {
			const int64_t nr = std::min<int64_t>(srows, nc - b0);
			CK(cudaMemcpyAsync(sw.sbuf[i], sw.seed16 + n0 + b0, sizeof(__half) * nr, cudaMemcpyHostToDevice, g_cs));
		};
		if (hseeds && onepass)
			seeds_copy_in(0, 0);
		for (int64_t b0 = 0; b0 < nc; b0 += srows)
		{
			const int64_t nr = std::min<int64_t>(srows, nc - b0);
			/*
			 * Host-kept seeds: this block's are in sbuf[bi] once g_cs is done,
			 * after sbuf[bi]'s copy out (two blocks back).  The
			 * copies are long done by now (a block's screens take far longer),
			 * so the wait costs nothing; sbuf[bi ^ 1]'s last reader (the block
			 * before's seeds_in_kernel) ended before its overflow count's sync.
			 */
			const int bi = (int) ((b0 / srows) & 1);
			if (hseeds)
				CK(cudaStreamSynchronize(g_cs));
			CK(cudaMemsetAsync(sw.overflow, 0, 2 * sizeof(int), g_s));
			const float *x = dX + b0 * D;
			float *lzb = logz_rows >= src->N ? lz + b0 : logZ;
			/* the rows' best lower bounds: kept for every row where seeds are, else this block's */
			wg::Screen sc{sw.seed ? sw.seed + n0 + b0 : sw.smax, sw.cand, sw.count, sw.overflow, sw.orows,
						  scap, window * h16::L2E, slack * h16::L2E, sw.c2s + 3 * Kp};
			/* FP16 seeds: this block's staged in smax (the one-pass screen's), its bests kept after the screens */
			if (sw.seed16 && onepass)
			{
				sp::seeds_in_kernel<<<256, 256, 0, g_s>>>(hseeds ? sw.sbuf[bi] : sw.seed16 + n0 + b0, nr, sw.smax);
				CKL("seeds_in_kernel");
				if (hseeds && b0 + srows < nc)
					seeds_copy_in(b0 + srows, bi ^ 1);	/* the next block's, while this one runs */
			}
			auto keep_seeds = [&]() {
				if (sw.seed16)
				{
					sp::seeds_out_kernel<<<256, 256, 0, g_s>>>(sw.smax, nr, hseeds ? sw.sbuf[bi] : sw.seed16 + n0 + b0);
					CKL("seeds_out_kernel");
					if (hseeds)
					{
						CK(cudaEventRecord(sw.sout_ready, g_s));
						CK(cudaStreamWaitEvent(g_cs, sw.sout_ready, 0));
						CK(cudaMemcpyAsync(sw.seed16 + n0 + b0, sw.sbuf[bi], sizeof(__half) * nr,
										   cudaMemcpyDeviceToHost, g_cs));
					}
				}
			};
			/* the best from the lower bounds (c2s lo), the candidates from the upper bounds (c2s hi) */
#define SCR_ARGS(LOHI) nullptr, nullptr, xs, ns, D, Kp, (const __half *) M->Wst, (const float *) sw.c2s + (LOHI) * Kp, \
			(const float *) sw.c2s + 2 * Kp, 0, (float *) nullptr, (double *) nullptr, none, 1.f, 0, 0.f, \
			(int32_t *) nullptr, (float *) nullptr, M->h16_S, s
			/* rows xs[0..ns): one pass from the seeds, the best (c2s lo), or the candidates (c2s hi) */
			auto screen = [&](auto kd, auto kf, int lohi, const char *what, const float *xs, int64_t ns,
							  const wg::Screen &s) {
				unsigned nb = (unsigned) (H16Rows::padded(ns) / h16::BM1);
				/* persistent where rows allow (persistent_grid); FLASHGMM_GPU_SCREEN_PERSIST=0: a CTA a block */
				static const bool persist = env_int("FLASHGMM_GPU_SCREEN_PERSIST", 0, 1, 1) != 0;
				if (persist)
					nb = persistent_grid(nb, D, xs);
				if (M->diag)
					kd<<<nb, wg::Cfg<true>::THREADS, smw, g_s>>>(SCR_ARGS(lohi));
				else
					kf<<<nb, wg::Cfg<false>::THREADS, smw, g_s>>>(SCR_ARGS(lohi));
				CKL(what);
			};
			auto collect = [&](const float *xs, int64_t ns, const wg::Screen &s) {
				screen(wg::lse_wg_kernel<true, 0, true, wg::SCREEN_COLLECT>,
					   wg::lse_wg_kernel<false, 0, true, wg::SCREEN_COLLECT>, 1, "screen (SCREEN_COLLECT)", xs, ns, s);
			};
			auto overflowed = [&](int i) {
				int v = 0;
				CK(cudaMemcpyAsync(&v, sw.overflow + i, sizeof(int), cudaMemcpyDeviceToHost, g_s));
				CK(cudaStreamSynchronize(g_s));
				return v;
			};
			int ov = 0;
			const int32_t *orows = sw.orows;	/* the rows left overflowed */
			/*
			 * Where the block's overflowed rows all wait for the deferred
			 * dense pass (defer, and no collecting again), nothing before the
			 * exact kernel needs their count (it skips those rows): it is
			 * copied to the host after the screens and read once the exact
			 * and statistics kernels are queued, so the device has this
			 * block's work while the host waits (a sync right after the
			 * screens left it idle until the next launches, 77 times a pass
			 * at 10M rows).  Rows past what the pending list holds take
			 * dense passes of its size (sl.pend_rows) at a time; past
			 * sparse_overflow_rows(srows) the block counts as dense for
			 * the back-off, as a block the dense pass took whole did, and a
			 * one-pass screen's blocks after it screen twice.
			 */
			const bool late_ov = defer && sw.hov && !(onepass && recollect);
			if (onepass)
				screen(wg::lse_wg_kernel<true, 0, true, wg::SCREEN_ONEPASS>,
					   wg::lse_wg_kernel<false, 0, true, wg::SCREEN_ONEPASS>, 1, "screen (SCREEN_ONEPASS)", x, nr, sc);
			else
			{
				screen(wg::lse_wg_kernel<true, 0, true, wg::SCREEN_MAX>, wg::lse_wg_kernel<false, 0, true, wg::SCREEN_MAX>,
					   0, "screen (SCREEN_MAX)", x, nr, sc);
				lap(0);
				collect(x, nr, sc);
			}
			lap(1);
			if (late_ov)
			{
				CK(cudaMemcpyAsync(sw.hov, sw.overflow, sizeof(int), cudaMemcpyDeviceToHost, g_s));
				CK(cudaEventRecord(sw.ov_ready, g_s));
			}
			else if (onepass)
			{
				ov = overflowed(0);
				/* (past sl.xo_rows, which xo holds gathered, the same) */
				if (ov > sparse_overflow_rows(srows) || (ov > sl.xo_rows && !(defer && !recollect)))
				{
					/* the model moved too far for the seeds: this block collected again, two passes from here on */
					onepass = false;
					redone_rows += nr;
					CK(cudaMemsetAsync(sw.overflow, 0, sizeof(int), g_s));
					collect(x, nr, sc);
					ov = overflowed(0);
				}
				else if (ov > 0 && !(defer && !recollect))
				{
					/* those rows gathered and collected again, into their own lists */
					redone_rows += ov;
					gather_rows_kernel<<<256, 256, 0, g_s>>>(x, D, sw.orows, ov, sw.xo);
					CKL("gather_rows_kernel");
					wg::Screen rc = sc;
					rc.rmap = sw.orows;
					rc.overflow = sw.overflow + 1;
					rc.orows = sw.orows2;
					collect(sw.xo, ov, rc);
					ov = overflowed(1);
					orows = sw.orows2;
				}
				lap(4);
			}
			else
				ov = overflowed(0);
#undef SCR_ARGS
			/*
			 * Too many long lists (responsibilities spread over more than
			 * scap components within the window): the dense pass on
			 * this block, and on the next passes (the model moves slowly).
			 */
			over_rows += ov;
			if (!late_ov && ov > sparse_overflow_rows(srows))
			{
				keep_seeds();
				run_h16(x, nr, logz_rows >= src->N ? lz + b0 : lz, stats, false);
				dense_rows += nr;
				lap(3);
				continue;
			}
			/*
			 * The exact kernel holds SPARSE_FMAX screen-flagged components;
			 * the others (flagged ones: sfidx lists them last) are merged
			 * into logZ first, which it folds in.
			 */
			const int nse = std::min(nsf, sp::SPARSE_FMAX);
			if (nsf > nse)
			{
				sp::neg_inf_kernel<<<256, 256, 0, g_s>>>(lzb, nr);
				CKL("neg_inf_kernel");
				merge_flagged(x, nr, M->sfidx + nse, nsf - nse, lzb, nullptr, sc.best);
			}
			keep_seeds();
			const int hk = stats && ssorted ? sorted_bins() : 0;
			const size_t fb = sp::FlagSet::bytes(nse, D, M->diag) + 4 * (size_t) hk;
			/*
			 * Two rows a warp (sparse_exact2_kernel) where it applies: D = 128,
			 * no screen-flagged component, and every list sorted (lists of at
			 * most 32) or no statistics.  FLASHGMM_GPU_EXACT2=0: one row a warp.
			 */
			static const bool exact2_env = env_int("FLASHGMM_GPU_EXACT2", 0, 1, 1) != 0;
			const bool exact2 = exact2_env && D == 128 && nse == 0 && (!stats || (ssorted && scap <= 32));
			int eg = 0;	/* (the blocks' sums: sum_kernel below) */
			if (exact2)
			{
				auto exact = M->diag ? sp::sparse_exact2_kernel<true> : sp::sparse_exact2_kernel<false>;
				const size_t hb = 4 * (size_t) hk;
				set_smem(exact, hb);
				eg = warp_rows_grid((nr + 1) / 2, exact, hb);
				exact<<<eg, sp::EXACT_WARPS * 32, hb, g_s>>>(x, nr, dr, sw.cand, sw.count, lzb, blockll, (int) stats,
															 sw.npairs, scap, stats ? sw.hist : nullptr, hk,
															 sort_rmode(), sparse_rmin());
				CKL("sparse_exact2_kernel");
			}
			else
			{
				auto exact = M->diag ? (D == 128 ? sp::sparse_exact_kernel<true, 128> : sp::sparse_exact_kernel<true, 0>)
									 : (D == 128 ? sp::sparse_exact_kernel<false, 128> : sp::sparse_exact_kernel<false, 0>);
				set_smem(exact, fb);
				eg = warp_rows_grid(nr, exact, fb);
				exact<<<eg, sp::EXACT_WARPS * 32, fb, g_s>>>(
					x, nr, D, dr, M->sfidx, nse, (int) (nsf > nse), sw.cand, sw.count, lzb, blockll, (int) stats,
					sw.psx, sw.bnk, sw.bsxn, sw.npairs, scap, stats && ssorted ? sw.hist : nullptr, hk, sort_rmode(),
					sparse_rmin());
				CKL("sparse_exact_kernel");
			}
			if (stats && ssorted)
			{
				lap(2);
				sorted_scatter(x, nr, lzb);
				lap(5);
				sorted_sums(x, lzb);
				lap(6);
			}
			sum_kernel<<<1, 1024, 0, g_s>>>(blockll, eg, ll, 1);
			CKL("sum_kernel");
			lap(2);
			if (late_ov)
			{
				CK(cudaEventSynchronize(sw.ov_ready));
				ov = *sw.hov;
				over_rows += ov;
				if (ov > sparse_overflow_rows(srows))
				{
					dense_rows += nr;
					onepass = false;	/* the model moved too far for the seeds: two screens from here on */
				}
				defer_rows(orows, ov, b0);
				lap(3);
			}
			else if (ov > 0)
			{
				/* the overflowed rows (which the exact kernel skipped): through the dense h16 pass, now or gathered later */
				if (defer)
					defer_rows(orows, ov, b0);
				else
					dense_gathered(x, orows, ov, lzb, gather_to());
				lap(3);
			}
			unflushed += nr;
			if (stats && unflushed >= sparse_flush_rows(srows))
				flush();
			if (fn > 0 && logz_rows < src->N)	/* else once per source chunk (run) */
				flagged_stats(x, nr, lzb);
			lap(3);
		}
		dense_pending();
		lap(3);
		if (hseeds)
			CK(cudaStreamSynchronize(g_cs));	/* every block's seeds back in host memory */
		if (stats && unflushed > 0)
			flush();
		/* the exact kernel's counts: [0] pairs in the statistics, [1] candidates scored */
		unsigned long long np[2] = {0, 0};
		const bool backoff_check = last_chunk && sparse_auto && dense_rows < nc;
		if (backoff_check || profiling())
		{
			CK(cudaMemcpyAsync(np, sw.npairs, sizeof(np), cudaMemcpyDeviceToHost, g_s));
			CK(cudaStreamSynchronize(g_s));
		}
		/* candidates a row past SPARSE_CANDS_* (the default's choice only) */
		const bool many = backoff_check && (double) np[1] > (M->diag ? SPARSE_CANDS_DIAG : SPARSE_CANDS_SPH) * Kp /
																 1024.0 * (double) (nc - dense_rows);
		if ((dense_rows * 2 > nc || many) && last_chunk)
		{
			sparse_rest = sparse_backoff;
			sparse_backoff = std::min(2 * sparse_backoff, SPARSE_REST_MAX);
		}
		else if (last_chunk)
			sparse_backoff = SPARSE_REST;
		if (last_chunk)
			sw.seeded = true;
		if (profiling())
		{
			fprintf(stderr, "flashgmm profile: sparse pass%s: screen max %.2f ms, collect (or one pass) %.2f, "
					"collected again %.2f, exact %.2f, flush+flagged (+dense blocks) %.2f; %d screen-flagged components, "
					"%lld rows overflowed, %lld rows dense, %lld collected again, %.2f candidates and %.2f pairs a row; "
					"sorted statistics: scatter %.2f ms, sums %.2f\n",
					stats ? "" : " (no statistics)", tms[0], tms[1], tms[4], tms[2], tms[3], nsf, (long long) over_rows,
					(long long) dense_rows, (long long) redone_rows,
					(double) np[1] / std::max<int64_t>(1, nc - dense_rows),
					(double) np[0] / std::max<int64_t>(1, nc - dense_rows), tms[5], tms[6]);
		}
	}

	/* the chunked GEMM pass over rows dX[0..nc) of one source chunk */
	void run_gemm(const float *dX, int64_t nc, float *lz, bool stats, bool hard, int64_t &group)
	{
		/* profiling: device time of each step, in g_prof (synchronises: a diagnostic) */
		std::unique_ptr<Timer> pt(profiling() ? new Timer : nullptr);
		auto lap = [&](int step) {
			if (pt)
			{
				g_prof[step] += pt->stop_ms();
				pt->start();
			}
		};
		for (int64_t s0 = 0; s0 < nc; s0 += gw.rc)
		{
			int64_t nr = std::min(gw.rc, nc - s0);
			const float *x = dX + s0 * M->D;
			float *lzb = logz_rows >= src->N ? lz + s0 : logZ;	/* else logZ holds one block */
			if (pt)
				pt->start();
			gw.scores(*M, x, nr, true);
			lap(0);
			gw.softmax(*M, nr, hard, lzb, ll);
			lap(1);
			if (fn > 0 && logz_rows < src->N)	/* else once per source chunk (run) */
				flagged_stats(x, nr, lzb);
			lap(2);
			if (stats)
			{
				gw.stats(*M, nr, group > 0);
				lap(3);
				group += nr;
				if (group >= GEMM_GROUP_ROWS)
				{
					gw.flush(*M, sx, nk, sxn);
					group = 0;
				}
			}
		}
	}

	void launch_lse(const float *dX, int64_t nc, float *lz, bool hard)
	{
		dim3 grid((unsigned) ((nc + BM - 1) / BM));
		bool sp = M->prec_used == GMM_GPU_PREC_3XTF32;
		Direct dr = M->direct();
		int sph = !M->diag;
#define LSE_ARGS dX, nc, M->D, M->Dp, M->Dp2, M->Kp, M->Wm, M->colc, M->colp, sph, (int) hard, lz, blockll, dr
		if (M->BN == 128)
		{
			if (sp) lse_kernel<128, true><<<grid, NTHREADS, lse_smem(128), g_s>>>(LSE_ARGS);
			else lse_kernel<128, false><<<grid, NTHREADS, lse_smem(128), g_s>>>(LSE_ARGS);
		}
		else
		{
			if (sp) lse_kernel<64, true><<<grid, NTHREADS, lse_smem(64), g_s>>>(LSE_ARGS);
			else lse_kernel<64, false><<<grid, NTHREADS, lse_smem(64), g_s>>>(LSE_ARGS);
		}
#undef LSE_ARGS
		CKL("lse_kernel");
		sum_kernel<<<1, 1024, 0, g_s>>>(blockll, grid.x, ll, 1);
		CKL("sum_kernel");
	}

	void launch_stats(const float *dX, int64_t nc, const float *lz, bool hard)
	{
		int nkt = M->Kp / M->BN;
		int64_t tiles = (nc + BM - 1) / BM;
		int64_t want = std::max<int64_t>(1, (2 * g_prop.multiProcessorCount + nkt * nDt - 1) / (nkt * nDt));
		int ns = (int) std::min<int64_t>({(int64_t) nsplit_max, tiles, want});
		int64_t rps = (tiles + ns - 1) / ns * BM;
		ns = (int) ((nc + rps - 1) / rps);
		dim3 grid(nkt, ns, nDt);
		bool sp = M->prec_used == GMM_GPU_PREC_3XTF32;
		Direct dr = M->direct();
#define ST_ARGS dX, nc, M->D, M->Dp, M->Dp2, M->Kp, M->Wm, M->colc, M->colp, lz, (int) hard, rps, part, pnk, psxn, Wd, dr
		if (!M->diag)
		{
			if (sp) stats_kernel<128, false, true><<<grid, NTHREADS, stats_smem(128), g_s>>>(ST_ARGS);
			else stats_kernel<128, false, false><<<grid, NTHREADS, stats_smem(128), g_s>>>(ST_ARGS);
		}
		else
		{
			if (sp) stats_kernel<64, true, true><<<grid, NTHREADS, stats_smem(64), g_s>>>(ST_ARGS);
			else stats_kernel<64, true, false><<<grid, NTHREADS, stats_smem(64), g_s>>>(ST_ARGS);
		}
#undef ST_ARGS
		CKL("stats_kernel");
		reduce_parts_kernel<<<std::min<int64_t>(4096, ((int64_t) M->K * Wd + 255) / 256), 256, 0, g_s>>>(
			part, pnk, psxn, ns, M->Kp, M->K, Wd, sx, nk, sxn);
		CKL("reduce_parts_kernel");
	}

	/*
	 * One pass over X: ll = sum_n logZ_n; with stats, the sufficient statistics
	 * too.  (Capturing the chunked pass as a CUDA graph was tried: no faster,
	 * and re-capturing whenever the flagged set changes cost more; cuda/NOTES.md.)
	 */
	/*
	 * The candidate lists, whose upper half holds the dense pass's FP16 rows
	 * where they share them (SparseLayout::rows16), made at the first pass:
	 * after the k-means++ sample is freed (made in init, 10M x 1024 diag's
	 * seeded fit peaked 15 MiB higher, at X + 120 MiB).
	 */
	void share_lists()
	{
		if (!sparse || sl.rows16 == 0 || sw.cand)
			return;
		sw.cand = dalloc<int32_t>((size_t) sl.srows * sl.cap, "sparse pass (and FP16 rows)");
		hr.Xg = reinterpret_cast<__half *>(sw.cand + sl.srows * sl.cap / 2);
	}

	void run(bool stats, bool hard)
	{
		share_lists();
		fn = (stats && !hard && M->D <= FLAG_DMAX) ? M->nflag : 0;
		if (fn > 0)
		{
			const int D = M->D;
			if (fn > fcap)
			{
				if (fps1)
				{
					for (void *p : {(void *) fps1, (void *) fps2, (void *) fpnk, (void *) fs1, (void *) fs2,
									(void *) fnk, (void *) fmu})
						dfree(p);
				}
				fcap = fn;
				fsplit = (int) std::max<int64_t>(1, std::min<int64_t>((2 * g_prop.multiProcessorCount + fn - 1) / fn,
																	  (8ll << 20) / ((int64_t) fn * D * 16)));
				fps1 = dalloc<double>((size_t) fsplit * fn * D, "flagged statistics");
				fps2 = dalloc<double>((size_t) fsplit * fn * D, "flagged statistics");
				fpnk = dalloc<double>((size_t) fsplit * fn, "flagged statistics");
				fs1 = dalloc<double>((size_t) fn * D, "flagged statistics");
				fs2 = dalloc<double>((size_t) fn * D, "flagged statistics");
				fnk = dalloc<double>(fn, "flagged statistics");
				fmu = dalloc<float>((size_t) fn * D, "flagged means");
			}
		}
		enqueue(stats, hard);
	}

	/* the pass itself, on g_s */
	void enqueue(bool stats, bool hard)
	{
		CK(cudaMemsetAsync(ll, 0, sizeof(double), g_s));
		if (stats)
		{
			CK(cudaMemsetAsync(nk, 0, sizeof(double) * M->Kp, g_s));
			CK(cudaMemsetAsync(sxn, 0, sizeof(double) * M->Kp, g_s));
			CK(cudaMemsetAsync(sx, 0, sizeof(double) * M->Kp * Wd, g_s));
		}
		if (fn > 0)
		{
			const int D = M->D;
			CK(cudaMemsetAsync(fs1, 0, sizeof(double) * fn * D, g_s));
			CK(cudaMemsetAsync(fs2, 0, sizeof(double) * fn * D, g_s));
			CK(cudaMemsetAsync(fnk, 0, sizeof(double) * fn, g_s));
			gather_means_kernel<<<64, 256, 0, g_s>>>(M->mu, M->fidx, fn, D, fmu);
			CKL("gather_means_kernel");
		}
		if (gemm)
			gw.pack_model(*M);
		const bool use_sparse = sparse_now(hard);
		if (sparse && !use_sparse && sparse_rest > 0 && !hard)
			sparse_rest--;
		if (!use_sparse)
			sw.seeded = false;	/* the model moves on without the screen: its bounds go stale */
		int64_t group = 0;
		src->for_each([&](const float *dX, int64_t n0, int64_t nc) {
			float *lz = (logz_rows >= src->N) ? logZ + n0 : logZ;
			if (gemm)
				run_gemm(dX, nc, lz, stats, hard, group);
			else if (use_sparse)
				run_sparse(dX, nc, lz, stats, n0 + nc == src->N);
			else if (h16)
				run_h16(dX, nc, lz, stats, hard);
			else
			{
				launch_lse(dX, nc, lz, hard);
				if (stats)
					launch_stats(dX, nc, lz, hard);
			}
			if (fn > 0 && ((!gemm && !h16) || logz_rows >= src->N))
				flagged_stats(dX, nc, lz);
		});
		if (gemm && stats && group > 0)
			gw.flush(*M, sx, nk, sxn);
		if (gemm)
			gw.sum_ll(ll);
	}
	/* statistics of the flagged (ill-conditioned) components over rows dX[0..nc), logZ lz */
	void flagged_stats(const float *dX, int64_t nc, const float *lz)
	{
		if (!deterministic && M->D <= 128)
		{
			/* the rows read once per SPARSE_FMAX flagged components (sp::flag_stats_atomic_kernel) */
			for (int f0 = 0; f0 < fn; f0 += sp::SPARSE_FMAX)
			{
				const int nf = std::min(sp::SPARSE_FMAX, fn - f0);
				const size_t fb = sp::FlagSet::bytes(nf, M->D, M->diag);
				set_smem(sp::flag_stats_atomic_kernel, fb);
				sp::flag_stats_atomic_kernel<<<warp_rows_grid(nc, sp::flag_stats_atomic_kernel, fb), sp::EXACT_WARPS * 32,
											   fb, g_s>>>(
					dX, nc, M->D, M->direct(), M->fidx + f0, nf, lz, fs1 + (size_t) f0 * M->D, fs2 + (size_t) f0 * M->D,
					fnk + f0);
				CKL("flag_stats_atomic_kernel");
			}
			return;
		}
		int64_t rps = (nc + fsplit - 1) / fsplit;
		int ns = (int) ((nc + rps - 1) / rps);
		if (M->D <= 128)
			flag_stats_warp_kernel<<<dim3(fn, ns), 256, 0, g_s>>>(dX, nc, M->D, M->fidx, M->direct(), lz, rps, fn, fps1,
																   fps2, fpnk);
		else
			flag_stats_kernel<<<dim3(fn, ns), 256, 0, g_s>>>(dX, nc, M->D, M->fidx, fn, M->direct(), lz, rps, fps1,
															  fps2, fpnk);
		CKL("flag_stats_kernel");
		flag_reduce_kernel<<<64, 256, 0, g_s>>>(fps1, fps2, fpnk, ns, fn, M->D, fs1, fs2, fnk);
		CKL("flag_reduce_kernel");
	}
	double get_ll()
	{
		double v;
		CK(cudaMemcpyAsync(&v, ll, sizeof(double), cudaMemcpyDeviceToHost, g_s));
		CK(cudaStreamSynchronize(g_s));
		return v;
	}
};

/* every step-th logZ (a stride sample for the re-seeding threshold) */
__global__ void sample_kernel(const float *lz, int64_t step, int n, float *out)
{
	const int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		out[i] = lz[(int64_t) i * step];
}

/* rows with logZ <= t0 into (crow, clz), in any order (the host sorts them); count may exceed cap (then: none kept) */
__global__ void candidates_kernel(const float *lz, int64_t N, float t0, int64_t cap, int64_t *crow, float *clz,
								  unsigned long long *count)
{
	for (int64_t i = (int64_t) blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (int64_t) gridDim.x * blockDim.x)
		if (lz[i] <= t0)
		{
			const unsigned long long j = atomicAdd(count, 1ull);
			if ((int64_t) j < cap)
			{
				crow[j] = i;
				clz[j] = lz[i];
			}
		}
}

/*
 * Re-seeding of empty components, all in one launch (block j: component
 * ks[j]): mean = row rows[j] of src (or row j when rows is null), variances =
 * pv (VL), raw weight 1.  Was a device copy, two uploads and a stream
 * synchronisation per component: about 4 ms per M-step at 1M rows from the
 * benchmark's random start.
 */
__global__ void reseed_kernel(const float *src, const int64_t *rows, const int *ks, const float *pv, int D, int VL,
							  float *mu, float *var, double *wraw)
{
	const int k = ks[blockIdx.x];
	const int64_t r = rows ? rows[blockIdx.x] : blockIdx.x;
	for (int d = threadIdx.x; d < D; d += blockDim.x)
		mu[(size_t) k * D + d] = src[r * D + d];
	for (int j = threadIdx.x; j < VL; j += blockDim.x)
		var[(size_t) k * VL + j] = pv[j];
	if (threadIdx.x == 0)
		wraw[k] = 1.0;
}

/*
 * M-step and re-seeding.  seed_rows: for the k-means++ initialisation, the
 * seed of each component (an empty one gets its seed back); otherwise empty
 * components get the rows of lowest log-likelihood (resident X) or rows drawn
 * at random (streamed X).
 */
struct Rng
{
	uint64_t s;
	uint64_t next()
	{
		uint64_t z = (s += 0x9E3779B97F4A7C15ull);
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
		return z ^ (z >> 31);
	}
	double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
};

/*
 * The e lowest (logZ, row) pairs of the resident rows, in that order (ties
 * to the lower row), exact and deterministic: a stride sample of 4096 logZ
 * sets a threshold t0 below which about 2e + 16 N / 4096 rows fall; the
 * device lists the rows at or below t0 (any order), the host sorts those.
 * When fewer than e (or more than the buffer) fall below t0, the whole logZ
 * is copied and scanned with a max-heap.  (Was: 4 MB copied and scanned on
 * the host at every re-seeding M-step, about 4 ms at 1M rows.)
 */
std::vector<int64_t> lowest_rows(EStep::Reseed &rs, const float *dlz, int64_t N, size_t e)
{
	const int ns = (int) std::min<int64_t>(N, 4096);
	const int64_t step = N / ns;
	if (rs.cap == 0)
	{
		rs.cap = std::min<int64_t>(N, 65536 + 4 * (int64_t) e);
		rs.crow = dalloc<int64_t>(rs.cap, "re-seeding");
		rs.clz = dalloc<float>(std::max<int64_t>(rs.cap, ns), "re-seeding");
		rs.count = dalloc<unsigned long long>(1, "re-seeding");
	}
	std::vector<float> smp(ns);
	sample_kernel<<<(ns + 255) / 256, 256, 0, g_s>>>(dlz, step, ns, rs.clz);
	CKL("sample_kernel");
	CK(cudaMemcpyAsync(smp.data(), rs.clz, sizeof(float) * ns, cudaMemcpyDeviceToHost, g_s));
	CK(cudaStreamSynchronize(g_s));
	smp.erase(std::remove_if(smp.begin(), smp.end(), [](float v) { return std::isnan(v); }), smp.end());
	std::sort(smp.begin(), smp.end());
	std::vector<std::pair<float, int64_t>> cand;
	unsigned long long cnt = 0;
	if (!smp.empty() && (int64_t) e <= rs.cap)
	{
		const size_t rank = std::min(smp.size() - 1, (size_t) ((double) e / N * smp.size() * 2.0) + 16);
		CK(cudaMemsetAsync(rs.count, 0, sizeof(unsigned long long), g_s));
		candidates_kernel<<<std::min<int64_t>(1024, (N + 255) / 256), 256, 0, g_s>>>(dlz, N, smp[rank], rs.cap,
																					   rs.crow, rs.clz, rs.count);
		CKL("candidates_kernel");
		CK(cudaMemcpyAsync(&cnt, rs.count, sizeof(cnt), cudaMemcpyDeviceToHost, g_s));
		CK(cudaStreamSynchronize(g_s));
		if (cnt >= e && (int64_t) cnt <= rs.cap)
		{
			std::vector<int64_t> r(cnt);
			std::vector<float> v(cnt);
			CK(cudaMemcpyAsync(r.data(), rs.crow, sizeof(int64_t) * cnt, cudaMemcpyDeviceToHost, g_s));
			CK(cudaMemcpyAsync(v.data(), rs.clz, sizeof(float) * cnt, cudaMemcpyDeviceToHost, g_s));
			CK(cudaStreamSynchronize(g_s));
			for (size_t i = 0; i < cnt; i++)
				cand.emplace_back(v[i], r[i]);
		}
	}
	if (cand.size() < e)
	{
		/* the sample misjudged (or ties overflowed the buffer): every row, with a max-heap of e */
		std::vector<float> lz(N);
		CK(cudaMemcpy(lz.data(), dlz, sizeof(float) * N, cudaMemcpyDeviceToHost));
		cand.clear();
		for (int64_t i = 0; i < N; i++)
		{
			std::pair<float, int64_t> c(lz[i], i);
			if (cand.size() < e)
			{
				cand.push_back(c);
				std::push_heap(cand.begin(), cand.end());
			}
			else if (c < cand.front())
			{
				std::pop_heap(cand.begin(), cand.end());
				cand.back() = c;
				std::push_heap(cand.begin(), cand.end());
			}
		}
	}
	std::partial_sort(cand.begin(), cand.begin() + e, cand.end());
	std::vector<int64_t> out(e);
	for (size_t i = 0; i < e; i++)
		out[i] = cand[i].second;
	return out;
}

int mstep(DevModel &M, EStep &E, Source &src, double reg, const std::vector<int64_t> *seed_rows, Rng &rng,
		  const std::vector<float> &shift, bool equal_weights)
{
	const int K = M.K, VL = M.VL;
	auto t0 = std::chrono::steady_clock::now();
	auto since = [&]() {
		CK(cudaStreamSynchronize(g_s));
		return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
	};
	double t_stats = 0, t_seed = 0;
	mstep_kernel<<<K, 128, 0, g_s>>>(E.nk, E.sx, E.sxn, M.D, E.Wd, M.diag, reg, M.mu, M.var, M.wraw);
	CKL("mstep_kernel");
	if (E.fn > 0)
	{
		flag_mstep_kernel<<<E.fn, 256, 0, g_s>>>(M.fidx, E.fmu, E.fs1, E.fs2, E.fnk, M.D, M.diag, reg, M.mu, M.var,
												 M.wraw, E.nk);
		CKL("flag_mstep_kernel");
	}
	std::vector<double> nk(K);
	CK(cudaMemcpyAsync(nk.data(), E.nk, sizeof(double) * K, cudaMemcpyDeviceToHost, g_s));
	CK(cudaStreamSynchronize(g_s));
	double wsum = 0.0;
	std::vector<int> empty;
	for (int k = 0; k < K; k++)
	{
		if (nk[k] < EMPTY_NK)
			empty.push_back(k);
		else
			wsum += nk[k] + 10.0 * DBL_EPSILON;
	}
	if (profiling())
		t_stats = since();
	if (!empty.empty())
	{
		std::vector<float> var((size_t) K * VL);
		CK(cudaMemcpy(var.data(), M.var, sizeof(float) * K * VL, cudaMemcpyDeviceToHost));
		std::vector<double> pooled(VL, 0.0);
		double pw = 0.0;
		for (int k = 0; k < K; k++)
			if (nk[k] >= EMPTY_NK)
			{
				for (int j = 0; j < VL; j++)
					pooled[j] += nk[k] * var[(size_t) k * VL + j];
				pw += nk[k];
			}
		std::vector<float> pv(VL);
		for (int j = 0; j < VL; j++)
		{
			double v = pw > 0 ? pooled[j] / pw : 1.0;
			pv[j] = (float) (v > 0 ? v : (reg > 0 ? reg : 1.0));
		}
		std::vector<int64_t> rows;
		if (seed_rows == nullptr)
		{
			if (E.logz_rows >= src.N)
			{
				/* lowest log-likelihood rows, like the CPU engine */
				rows = lowest_rows(E.rs, E.logZ, src.N, std::min(empty.size(), (size_t) src.N));
			}
			else
				for (size_t j = 0; j < empty.size(); j++)
					rows.push_back((int64_t) (rng.uniform() * src.N) % src.N);
		}
		/* the seeds' rows: gathered from X on the device when resident, else centred here and uploaded */
		const int ne = (int) empty.size();
		std::vector<int64_t> rsel(ne);
		for (int j = 0; j < ne; j++)
			rsel[j] = seed_rows ? (*seed_rows)[empty[j]] : rows[j % rows.size()];
		EStep::Reseed &rs = E.rs;
		if (!rs.ks)		/* once per fit: K seeds at most */
		{
			rs.ks = dalloc<int>(K, "re-seeding");
			rs.pv = dalloc<float>(VL, "re-seeding");
			if (src.resident)
				rs.rows = dalloc<int64_t>(K, "re-seeding");
			else
				rs.src = dalloc<float>((size_t) K * M.D, "re-seeding");
		}
		CK(cudaMemcpyAsync(rs.ks, empty.data(), sizeof(int) * ne, cudaMemcpyHostToDevice, g_s));
		CK(cudaMemcpyAsync(rs.pv, pv.data(), sizeof(float) * VL, cudaMemcpyHostToDevice, g_s));
		std::vector<float> hrows;
		if (src.resident)
			CK(cudaMemcpyAsync(rs.rows, rsel.data(), sizeof(int64_t) * ne, cudaMemcpyHostToDevice, g_s));
		else
		{
			hrows.resize((size_t) ne * M.D);
			for (int j = 0; j < ne; j++)
				for (int d = 0; d < M.D; d++)
					hrows[(size_t) j * M.D + d] = src.hX[rsel[j] * M.D + d] - shift[d];
			CK(cudaMemcpyAsync(rs.src, hrows.data(), sizeof(float) * hrows.size(), cudaMemcpyHostToDevice, g_s));
		}
		reseed_kernel<<<ne, 128, 0, g_s>>>(src.resident ? src.dX : rs.src, src.resident ? rs.rows : nullptr, rs.ks,
											rs.pv, M.D, VL, M.mu, M.var, M.wraw);
		CKL("reseed_kernel");
		CK(cudaStreamSynchronize(g_s));	/* the host buffers above live until here */
		wsum += ne;
	}
	if (equal_weights)
	{
		/* gmm_fit_params.equal_weights: every component keeps weight 1/K (as the CPU engine) */
		std::vector<double> ones(K, 1.0);
		CK(cudaMemcpyAsync(M.wraw, ones.data(), sizeof(double) * K, cudaMemcpyHostToDevice, g_s));
		CK(cudaStreamSynchronize(g_s));
		wsum = K;
	}
	if (profiling())
		t_seed = since();
	M.prepare(1.0 / wsum);
	if (profiling())
	{
		const double t_end = since();	/* once: the parts then add up to the total */
		fprintf(stderr, "flashgmm profile: M-step %.2f ms (statistics %.2f, re-seeding %zu: %.2f, constants %.2f)\n",
				t_end, t_stats, empty.size(), t_seed - t_stats, t_end - t_seed);
	}
	return (int) empty.size();
}

void ensure_ready()
{
	if (!g_inited)
		fail(GMM_EDEVICE, "the CUDA engine is not initialised (call gmm_gpu_load first)");
	if (g_broken)
		fail(GMM_EDEVICE, "%s", g_broken_msg);
	free_all();
	g_peak = 0;
	memset(&g_stats, 0, sizeof(g_stats));
	CK(cudaSetDevice(0));
}

/* fitting needs K <= N; scoring and assigning take any N >= 1 (the access method assigns in batches) */
void check_inputs(const float *X, int64_t N, int K, int D, int cov, bool fitting = true)
{
	if (X == nullptr || N < 1)
		fail(GMM_EINVAL, "no input rows (N = %lld)", (long long) N);
	if (K < 1 || D < 1)
		fail(GMM_EINVAL, "K and D must be >= 1 (K = %d, D = %d)", K, D);
	if (fitting && (int64_t) K > N)
		fail(GMM_EINVAL, "K = %d components need at least as many rows (N = %lld)", K, (long long) N);
	if (cov != GMM_COV_SPHERICAL && cov != GMM_COV_DIAG)
		fail(GMM_EINVAL, "unknown covariance type %d", cov);
	if (D > 65536)
		fail(GMM_EINVAL, "D = %d is above the GPU engine's limit (65536)", D);
}

void check_params(const gmm_fit_params *p)
{
	if (p == nullptr)
		fail(GMM_EINVAL, "no fit parameters");
	if (p->max_iter < 0)
		fail(GMM_EINVAL, "max_iter must be >= 0 (got %d)", p->max_iter);
	if (std::isnan(p->tol))
		fail(GMM_EINVAL, "tol is NaN");
	if (!(p->reg_covar >= 0.0) || !std::isfinite(p->reg_covar))
		fail(GMM_EINVAL, "reg_covar must be finite and >= 0 (got %g)", p->reg_covar);
}

struct DevModel;
void finish_stats(Source &src, const DevModel &M);
void finish_stats_(Source &src, int prec, int flagged, double err)
{
	if (profiling())
		fprintf(stderr, "flashgmm profile: scores %.2f ms, softmax %.2f ms, flagged %.2f ms, statistics %.2f ms\n",
				g_prof[0], g_prof[1], g_prof[2], g_prof[3]);
	memset(g_prof, 0, sizeof(g_prof));
	g_stats.precision = prec;
	g_stats.flagged = flagged;
	g_stats.score_err = err;
	g_stats.peak_bytes = g_peak;
	g_stats.x_bytes = src.x_bytes();
	g_stats.streamed = !src.resident;
	g_stats.chunk_rows = src.chunk;
	g_stats.seconds_h2d = src.h2d_seconds;
}

double median(std::vector<double> v)
{
	if (v.empty())
		return 0.0;
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

/* shift = weighted mean of the model's means (any fixed shift is exact; this one centres X) */
std::vector<float> model_shift(int K, int D, const float *weights, const float *means)
{
	std::vector<double> s(D, 0.0);
	double ws = 0.0;
	for (int k = 0; k < K; k++)
	{
		double w = weights[k] > 0 ? weights[k] : 0.0;
		ws += w;
		for (int d = 0; d < D; d++)
			s[d] += w * means[(size_t) k * D + d];
	}
	std::vector<float> r(D);
	for (int d = 0; d < D; d++)
		r[d] = (float) (ws > 0 ? s[d] / ws : 0.0);
	return r;
}

/* shift for a fit: the column mean of up to 65536 evenly spaced rows (any shift is exact) */
std::vector<float> sample_mean(const float *X, int64_t N, int D)
{
	int64_t n = std::min<int64_t>(N, 65536);
	std::vector<double> s(D, 0.0);
	for (int64_t i = 0; i < n; i++)
	{
		int64_t r = (n == N) ? i : (int64_t) ((double) i * N / n);
		for (int d = 0; d < D; d++)
			s[d] += X[r * D + d];
	}
	std::vector<float> out(D);
	for (int d = 0; d < D; d++)
		out[d] = (float) (s[d] / n);
	return out;
}


/* EM on a prepared device model */
void em_loop(DevModel &M, Source &src, EStep &E, const gmm_fit_params *p, gmm_fit_report *rep,
			 const std::vector<float> &shift)
{
	Rng rng{p->seed ^ 0x5eedull};
	double prev = -INFINITY, ll = 0.0;
	std::vector<double> it_ms, e_ms;
	Timer t_it, t_e;
	const double N = (double) src.N;
	for (int it = 0; it < p->max_iter; it++)
	{
		t_it.start();
		t_e.start();
		E.run(true, false);
		ll = E.get_ll() / N;
		double ems = t_e.stop_ms();
		rep->seconds_estep += ems / 1000.0;
		if (!std::isfinite(ll))
			fail(GMM_ENONFINITE, "the log-likelihood is not finite at EM iteration %d (NaN or Inf in X?)", it + 1);
		if (it > 0 && ll - prev < p->tol)
		{
			rep->converged = 1;
			break;
		}
		prev = ll;
		Timer t_m;
		t_m.start();
		rep->reseeded += mstep(M, E, src, p->reg_covar, nullptr, rng, shift, p->equal_weights != 0);
		double mms = t_m.stop_ms();
		rep->seconds_mstep += mms / 1000.0;
		it_ms.push_back(t_it.stop_ms());
		e_ms.push_back(ems);
		rep->iterations++;
		if (p->progress && p->progress(p->progress_arg, "em", rep->iterations, p->max_iter))
			fail(GMM_ECANCELED, "canceled after EM iteration %d", rep->iterations);
	}
	if (!rep->converged)
	{
		t_e.start();
		E.run(false, false);
		ll = E.get_ll() / N;
		rep->seconds_estep += t_e.stop_ms() / 1000.0;
	}
	rep->mean_loglik = ll;
	g_stats.ms_per_iter = median(it_ms);
	g_stats.ms_estep = median(e_ms);
}

template <typename F>
gmm_status guarded(gmm_error *err, F body)
{
	if (err)
	{
		err->code = GMM_OK;
		err->msg[0] = '\0';
	}
	try
	{
		body();
		free_all();
		return GMM_OK;
	}
	catch (const Fail &f)
	{
		if (g_s)
			cudaStreamSynchronize(g_s);
		if (g_cs)
			cudaStreamSynchronize(g_cs);
		free_all();
		if (err)
		{
			err->code = f.st;
			snprintf(err->msg, sizeof(err->msg), "%s", f.msg);
		}
		return f.st;
	}
	catch (const std::bad_alloc &)
	{
		free_all();
		if (err)
		{
			err->code = GMM_ENOMEM;
			snprintf(err->msg, sizeof(err->msg), "out of host memory in the CUDA engine");
		}
		return GMM_ENOMEM;
	}
	catch (...)
	{
		free_all();
		if (err)
		{
			err->code = GMM_EINTERNAL;
			snprintf(err->msg, sizeof(err->msg), "unexpected C++ exception in the CUDA engine");
		}
		return GMM_EINTERNAL;
	}
}

/* k-means++ (device) on a sample, then a hard assignment of every row and the
 * M-step of that assignment: the initial model, in centred coordinates. */
void kmeanspp_device(Source &src, DevModel &M, EStep &E, const gmm_fit_params *p, const std::vector<float> &shift)
{
	const int K = M.K, D = M.D;
	const int64_t N = src.N;
	Rng rng{p->seed};
	/* sample: all rows when N <= 128 K (or 65536), else a strided pseudo-random subset */
	int64_t S = std::min<int64_t>(N, std::max<int64_t>(128ll * K, 65536));
	std::vector<int64_t> idx(S);
	if (S == N)
		for (int64_t i = 0; i < S; i++)
			idx[i] = i;
	else
	{
		auto gcd = [](int64_t a, int64_t b) { while (b) { int64_t t = a % b; a = b; b = t; } return a; };
		int64_t a;
		do
			a = (int64_t) (rng.next() % (uint64_t) N) | 1;
		while (gcd(a, N) != 1);
		int64_t b = (int64_t) (rng.next() % (uint64_t) N);
		for (int64_t i = 0; i < S; i++)
			idx[i] = (int64_t) (((__int128) a * i + b) % N);
	}
	float *Xs = dalloc<float>((size_t) S * D, "k-means++ sample");
	if (src.resident)
	{
		int64_t *didx = dalloc<int64_t>(S, "sample index");
		CK(cudaMemcpy(didx, idx.data(), sizeof(int64_t) * S, cudaMemcpyHostToDevice));
		gather_rows_kernel<<<1024, 256, 0, g_s>>>(src.dX, D, didx, S, Xs);
		CKL("gather_rows_kernel");
	}
	else
	{
		std::vector<float> h((size_t) S * D);
		for (int64_t i = 0; i < S; i++)
			for (int d = 0; d < D; d++)
				h[(size_t) i * D + d] = src.hX[idx[i] * D + d] - shift[d];
		CK(cudaMemcpy(Xs, h.data(), sizeof(float) * S * D, cudaMemcpyHostToDevice));
	}
	float *mind = dalloc<float>(S, "k-means++ distances");
	int nb = (int) ((S + 127) / 128);
	double *bsum = dalloc<double>(nb, "k-means++ sums");
	int64_t *seeds = dalloc<int64_t>(K, "seeds");
	int64_t first = (int64_t) (rng.uniform() * S) % S;
	CK(cudaMemcpyAsync(seeds, &first, sizeof(int64_t), cudaMemcpyHostToDevice, g_s));
	CK(cudaStreamSynchronize(g_s));
	for (int k = 0; k + 1 < K; k++)
	{
		kpp_update_kernel<<<nb, 256, 0, g_s>>>(Xs, S, D, seeds, k, mind, bsum, k == 0);
		CKL("kpp_update_kernel");
		kpp_pick_kernel<<<1, 1024, 0, g_s>>>(bsum, nb, mind, S, rng.uniform(), seeds, k);
		CKL("kpp_pick_kernel");
		if (p->progress && (k & 63) == 63)
		{
			CK(cudaStreamSynchronize(g_s));
			if (p->progress(p->progress_arg, "init", k + 1, K))
				fail(GMM_ECANCELED, "canceled during k-means++");
		}
	}
	std::vector<int64_t> hs(K);
	CK(cudaMemcpyAsync(hs.data(), seeds, sizeof(int64_t) * K, cudaMemcpyDeviceToHost, g_s));
	CK(cudaStreamSynchronize(g_s));
	/* the seeds become unit-variance, equal-weight components: argmax = nearest seed */
	gather_rows_kernel<<<256, 256, 0, g_s>>>(Xs, D, seeds, K, M.mu);
	CKL("gather_rows_kernel");
	{
		std::vector<float> ones((size_t) K * M.VL, 1.0f);
		std::vector<double> w(K, 1.0);
		CK(cudaMemcpyAsync(M.var, ones.data(), sizeof(float) * ones.size(), cudaMemcpyHostToDevice, g_s));
		CK(cudaMemcpyAsync(M.wraw, w.data(), sizeof(double) * K, cudaMemcpyHostToDevice, g_s));
		CK(cudaStreamSynchronize(g_s));
		M.prepare(1.0 / K);
	}
	dfree(Xs);
	dfree(mind);
	std::vector<int64_t> seed_rows(K);
	for (int k = 0; k < K; k++)
		seed_rows[k] = idx[hs[k]];
	E.run(true, true);
	Rng r2{p->seed};
	mstep(M, E, src, p->reg_covar, &seed_rows, r2, shift, p->equal_weights != 0);
}

void finish_stats(Source &src, const DevModel &M)
{
	finish_stats_(src, M.prec_used, M.nflag, M.worst_err);
}

}								/* namespace */

/* ================================ extern "C" ================================== */

extern "C" {

int fgc_abi_version(void) { return FGC_ABI_VERSION; }

void fgc_abi_sizes(size_t *a, size_t *b, size_t *c)
{
	*a = sizeof(gmm_fit_params);
	*b = sizeof(gmm_fit_report);
	*c = sizeof(gmm_gpu_stats);
}

gmm_status fgc_init(gmm_error *err)
{
	return guarded(err, [&] {
		if (g_broken)
			fail(GMM_EDEVICE, "%s", g_broken_msg);
		if (g_inited)
			return;
		int n = 0;
		cudaError_t e = cudaGetDeviceCount(&n);
		if (e == cudaErrorInsufficientDriver)
		{
			int drv = 0;
			cudaDriverGetVersion(&drv);
			if (drv == 0)
				fail(GMM_EDEVICE, "no NVIDIA driver is installed (libcuda.so.1 not found): no GPU on this machine");
			fail(GMM_EDEVICE, "the NVIDIA driver is too old: it supports CUDA %d.%d, the flashgmm CUDA library needs %d.%d",
				 drv / 1000, (drv % 1000) / 10, CUDART_VERSION / 1000, (CUDART_VERSION % 1000) / 10);
		}
		if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
			fail(GMM_EDEVICE, "no CUDA device is visible to this process");
		if (e != cudaSuccess)
		{
			cudaGetLastError();
			fail(GMM_EDEVICE, "CUDA initialisation failed: %s", cudaGetErrorString(e));
		}
		CK(cudaSetDevice(0));
		CK(cudaGetDeviceProperties(&g_prop, 0));
		if (g_prop.major < 8)
			fail(GMM_EDEVICE, "GPU %s has compute capability %d.%d; the flashgmm CUDA engine needs 8.0 or newer",
				 g_prop.name, g_prop.major, g_prop.minor);
		if (g_prop.sharedMemPerBlockOptin < stats_smem(128) || g_prop.sharedMemPerBlockOptin < assign_smem(32))
			fail(GMM_EDEVICE, "GPU %s offers %zu bytes of shared memory per block; the engine needs %zu",
				 g_prop.name, (size_t) g_prop.sharedMemPerBlockOptin, std::max(stats_smem(128), assign_smem(32)));
		CK(cudaStreamCreateWithFlags(&g_s, cudaStreamNonBlocking));
		CK(cudaStreamCreateWithFlags(&g_cs, cudaStreamNonBlocking));
		snprintf(g_devname, sizeof(g_devname), "%.100s (sm_%d%d, %d SMs, %.1f GiB)", g_prop.name, g_prop.major,
				 g_prop.minor, g_prop.multiProcessorCount, g_prop.totalGlobalMem / 1073741824.0);
		g_inited = true;
	});
}

const char *fgc_device_name(void) { return g_devname; }

const char *fgc_estep_variant(void) { return g_variant; }

gmm_status fgc_set_precision(int prec, gmm_error *err)
{
	if (prec < GMM_GPU_PREC_DEFAULT || prec > GMM_GPU_PREC_3XTF32)
	{
		if (err)
		{
			err->code = GMM_EINVAL;
			snprintf(err->msg, sizeof(err->msg), "unknown GPU precision %d", prec);
		}
		return GMM_EINVAL;
	}
	g_prec = prec;
	return GMM_OK;
}

void fgc_set_mem_budget(int64_t bytes) { g_budget = bytes > 0 ? bytes : 0; }

gmm_status fgc_last_stats(gmm_gpu_stats *out, gmm_error *err)
{
	(void) err;					/* cannot fail */
	*out = g_stats;
	out->live_bytes = g_live;
	return GMM_OK;
}

gmm_status fgc_init_kmeanspp(const float *X, int64_t N, int D, const gmm_fit_params *p,
							 float *weights, float *means, float *vars, gmm_error *err)
{
	return guarded(err, [&] {
		ensure_ready();
		check_params(p);
		check_inputs(X, N, p->K, D, p->cov);
		std::vector<float> shift = sample_mean(X, N, D);
		DevModel M;
		M.init(p->K, D, p->cov);
		int64_t eb = EStep::bytes_needed(M, N, g_prop.multiProcessorCount, p->device_mem_budget);
		Source src;
		src.init(X, N, D, shift, p->device_mem_budget, eb, 4);
		EStep E;
		E.init(&M, &src, src.logz_full ? N : src.chunk, p->device_mem_budget);
		E.deterministic = p->deterministic != 0;
		Timer t;
		t.start();
		kmeanspp_device(src, M, E, p, shift);
		M.download(weights, means, vars, shift);
		g_stats.ms_kernel = t.stop_ms();
		finish_stats(src, M);
		src.destroy();
	});
}

gmm_status fgc_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
				   float *weights, float *means, float *vars, gmm_fit_report *report, gmm_error *err)
{
	return guarded(err, [&] {
		ensure_ready();
		check_params(p);
		check_inputs(X, N, p->K, D, p->cov);
		gmm_fit_report rep;
		memset(&rep, 0, sizeof(rep));
		std::vector<float> shift = sample_mean(X, N, D);
		DevModel M;
		M.init(p->K, D, p->cov);
		int64_t eb = EStep::bytes_needed(M, N, g_prop.multiProcessorCount, p->device_mem_budget);
		Source src;
		src.init(X, N, D, shift, p->device_mem_budget, eb, 4);
		EStep E;
		E.init(&M, &src, src.logz_full ? N : src.chunk, p->device_mem_budget);
		E.deterministic = p->deterministic != 0;
		Timer t;
		t.start();
		kmeanspp_device(src, M, E, p, shift);
		rep.seconds_init = t.stop_ms() / 1000.0;
		em_loop(M, src, E, p, &rep, shift);
		M.download(weights, means, vars, shift);
		finish_stats(src, M);
		src.destroy();
		if (report)
			*report = rep;
	});
}

gmm_status fgc_em(const float *X, int64_t N, int K, int D, int cov, const gmm_fit_params *p,
				  float *weights, float *means, float *vars, gmm_fit_report *report, gmm_error *err)
{
	return guarded(err, [&] {
		ensure_ready();
		check_params(p);
		check_inputs(X, N, K, D, cov);
		gmm_fit_report rep;
		memset(&rep, 0, sizeof(rep));
		std::vector<float> shift = model_shift(K, D, weights, means);
		DevModel M;
		M.init(K, D, cov);
		int64_t eb = EStep::bytes_needed(M, N, g_prop.multiProcessorCount, p->device_mem_budget);
		Source src;
		src.init(X, N, D, shift, p->device_mem_budget, eb, 4);
		EStep E;
		E.init(&M, &src, src.logz_full ? N : src.chunk, p->device_mem_budget);
		E.deterministic = p->deterministic != 0;
		M.upload(weights, means, vars, shift);
		em_loop(M, src, E, p, &rep, shift);
		M.download(weights, means, vars, shift);
		finish_stats(src, M);
		src.destroy();
		if (report)
			*report = rep;
	});
}

/* test hook: one E pass of the given model; nk (K), sx (K * Wd, Wd = D or 2D), sxn (K), ll (sum) */
gmm_status fgc_debug_estep(const float *X, int64_t N, int K, int D, int cov, const float *weights,
						   const float *means, const float *vars, double *nk, double *sx, double *sxn, double *ll,
						   gmm_error *err)
{
	return guarded(err, [&] {
		ensure_ready();
		check_inputs(X, N, K, D, cov);
		std::vector<float> shift = model_shift(K, D, weights, means);
		DevModel M;
		M.init(K, D, cov);
		int64_t eb = EStep::bytes_needed(M, N, g_prop.multiProcessorCount, g_budget);
		Source src;
		src.init(X, N, D, shift, g_budget, eb, 4);
		EStep E;
		E.init(&M, &src, src.logz_full ? N : src.chunk, g_budget);
		M.upload(weights, means, vars, shift);
		E.run(true, false);
		*ll = E.get_ll();
		CK(cudaMemcpy(nk, E.nk, sizeof(double) * K, cudaMemcpyDeviceToHost));
		CK(cudaMemcpy(sxn, E.sxn, sizeof(double) * K, cudaMemcpyDeviceToHost));
		CK(cudaMemcpy(sx, E.sx, sizeof(double) * K * E.Wd, cudaMemcpyDeviceToHost));
		if (E.fn > 0)
		{
			/* the flagged components' statistics: sums around their means (E.fs1, fs2, fnk), as the M-step takes them */
			const int fn = E.fn;
			std::vector<int> fi(fn);
			std::vector<float> fm((size_t) fn * D);
			std::vector<double> f1((size_t) fn * D), f2((size_t) fn * D), fk(fn);
			CK(cudaMemcpy(fi.data(), M.fidx, sizeof(int) * fn, cudaMemcpyDeviceToHost));
			CK(cudaMemcpy(fm.data(), E.fmu, sizeof(float) * fn * D, cudaMemcpyDeviceToHost));
			CK(cudaMemcpy(f1.data(), E.fs1, sizeof(double) * fn * D, cudaMemcpyDeviceToHost));
			CK(cudaMemcpy(f2.data(), E.fs2, sizeof(double) * fn * D, cudaMemcpyDeviceToHost));
			CK(cudaMemcpy(fk.data(), E.fnk, sizeof(double) * fn, cudaMemcpyDeviceToHost));
			for (int f = 0; f < fn; f++)
			{
				const int k = fi[f];
				double sn = 0.0;
				nk[k] = fk[f];
				for (int d = 0; d < D; d++)
				{
					const double m = fm[(size_t) f * D + d], a = f1[(size_t) f * D + d], b = f2[(size_t) f * D + d];
					const double xx = b + 2.0 * m * a + fk[f] * m * m;	/* sum r x^2 = sum r (t + m)^2 */
					sx[(size_t) k * E.Wd + d] = a + fk[f] * m;
					if (M.diag)
						sx[(size_t) k * E.Wd + D + d] = xx;
					sn += xx;
				}
				if (!M.diag)
					sxn[k] = sn;
			}
		}
		/* back to raw coordinates: sx_d += nk * shift_d, sxx_d += 2 shift_d sx_d + nk shift_d^2 (before the first fix) */
		for (int k = 0; k < K; k++)
			for (int d = 0; d < D; d++)
			{
				double c = shift[d], a = sx[(size_t) k * E.Wd + d];
				if (M.diag)
					sx[(size_t) k * E.Wd + D + d] += 2.0 * c * a + nk[k] * c * c;
				sx[(size_t) k * E.Wd + d] = a + nk[k] * c;
			}
		src.destroy();
	});
}

gmm_status fgc_score(const float *X, int64_t N, int K, int D, int cov, const float *weights,
					 const float *means, const float *vars, double *mean_loglik, gmm_error *err)
{
	return guarded(err, [&] {
		ensure_ready();
		check_inputs(X, N, K, D, cov, false);
		std::vector<float> shift = model_shift(K, D, weights, means);
		DevModel M;
		M.init(K, D, cov);
		int64_t eb = EStep::bytes_needed(M, 0, g_prop.multiProcessorCount, g_budget);
		Source src;
		src.init(X, N, D, shift, g_budget, eb, 4);
		EStep E;
		E.init(&M, &src, src.chunk, g_budget);
		M.upload(weights, means, vars, shift);
		Timer t;
		t.start();
		E.run(false, false);
		double ll = E.get_ll();
		g_stats.ms_kernel = t.stop_ms();
		*mean_loglik = ll / (double) N;
		finish_stats(src, M);
		src.destroy();
	});
}

/* FGC_ASSIGN_PERSIST=0 (a build flag, for A/B runs): the one-product assignment a CTA a block */
#ifndef FGC_ASSIGN_PERSIST
#define FGC_ASSIGN_PERSIST 1
#endif
/* the h16 top-m assignment of one block of converted rows (the pass-1 kernel with MAXM > 0) */
void assign16(const DevModel &M, const __half *Xg, const float *xh, const float *x, int64_t nr, int64_t npad,
			  int maxm, float invT, int m, float tau, int32_t *comp, float *resp)
{
	unsigned nb = (unsigned) (npad / h16::BM1);
	Direct dr = M.direct();
	const bool one = assign_one_product(M.diag);
	/* the one-product kernel persistent where rows allow (persistent_grid; FGC_ASSIGN_PERSIST, above) */
	if (FGC_ASSIGN_PERSIST && one)
		nb = persistent_grid(nb, M.D, x);
	/* one product: the constants in log2 units */
	const float *cc = one ? M.c2l : M.colc16, *cp = one ? M.c2l + M.Kp : M.colp16;
#define AS16_ARGS                                                                                             \
	nb, Xg, xh, x, nr, M.D, M.Kp, pass1_model(M), cc, cp, 0, (float *) nullptr, (double *) nullptr, dr, \
		invT, m, tau, comp, resp, M.h16_S
#define AS16(DG, MM) \
	(one ? launch_pass1<DG, MM, true>(AS16_ARGS) : launch_pass1<DG, MM, false>(AS16_ARGS))
	if (M.diag)
	{
		if (maxm == 1) AS16(true, 1);
		else if (maxm == 2) AS16(true, 2);
		else if (maxm == 4) AS16(true, 4);
		else AS16(true, 8);
	}
	else
	{
		if (maxm == 1) AS16(false, 1);
		else if (maxm == 2) AS16(false, 2);
		else if (maxm == 4) AS16(false, 4);
		else AS16(false, 8);
	}
#undef AS16
#undef AS16_ARGS
	CKL("pass 1 (assignment)");
}

gmm_status fgc_assign(const float *X, int64_t N, int K, int D, int cov, const float *weights,
					  const float *means, const float *vars, int max_assign, float tau, float temperature,
					  int32_t *out_comp, float *out_resp, gmm_error *err)
{
	return guarded(err, [&] {
		ensure_ready();
		check_inputs(X, N, K, D, cov, false);
		if (max_assign < 1)
			fail(GMM_EINVAL, "max_assign must be >= 1 (got %d)", max_assign);
		if (max_assign > 32)
			fail(GMM_EINVAL, "max_assign = %d is above the GPU engine's limit (32)", max_assign);
		if (!(temperature > 0.f) || !std::isfinite(temperature))
			fail(GMM_EINVAL, "temperature must be finite and > 0 (got %g)", (double) temperature);
		if (std::isnan(tau))
			fail(GMM_EINVAL, "tau is NaN");
		if (out_comp == nullptr)
			fail(GMM_EINVAL, "no output array");
		const int m = max_assign;
		int maxm = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : m <= 16 ? 16 : 32;
		std::vector<float> shift = model_shift(K, D, weights, means);
		DevModel M;
		M.init(K, D, cov, 128);	/* the assignment kernel tiles 128 components at a time */
		/* results: at most 64 MiB per launch, copied back after each */
		int64_t out_rows = std::max<int64_t>(BM, ((64ll << 20) / ((int64_t) m * 8)) / BM * BM);
		char why[256];			/* fgc_estep_variant() keeps naming the last EM pass */
		bool gemm = use_gemm(M.Kp, why, sizeof(why));
		/* the h16 kernels (half.cuh) where they apply: D <= 128, m <= 8, X resident; else gemm or fused */
		bool h16 = want_h16(D, M.diag) && maxm <= 8;
		const bool one = h16 && assign_one_product(M.diag);	/* its kernel reads X and converts the rows itself */
		int64_t gws = GemmWork::ws_for(g_budget, 0);
		int64_t gbytes = gemm ? GemmWork::bytes(M, gws, std::min<int64_t>(out_rows, N)) : 0;
		if (h16)
			gbytes = std::max(gbytes, h16_bytes(M.Kp, M.diag));
		Source src;
		src.init(X, N, D, shift, g_budget, std::min<int64_t>(out_rows, N + BM) * m * 8 + gbytes, 0);
		int64_t sub = std::min<int64_t>(out_rows, (src.chunk + BM - 1) / BM * BM);
		h16 = h16 && src.resident;
		GemmWork gw;
		H16Rows hr;
		if (h16)
		{
			gemm = false;
			hr.init(M, src.dX, N, !one);
		}
		if (gemm)
			gw.init(M, gws, sub);
		int32_t *dcomp = dalloc<int32_t>((size_t) sub * m, "assignment");
		float *dresp = dalloc<float>((size_t) sub * m, "assignment");
		double *bll = dalloc<double>(sub / BM + 1, "row sums");
		M.upload(weights, means, vars, shift);
		if (h16 && one)
			M.make_c2l();
		if (gemm)
			gw.pack_model(M);
		bool sp = M.prec_used == GMM_GPU_PREC_3XTF32;
		Direct dr = M.direct();
		int sph = !M.diag;
		float invT = 1.0f / temperature;
		size_t sm = assign_smem(maxm);
#define AS_CASE(MM)                                                                                              \
	case MM:                                                                                                       \
		if (sp)                                                                                                    \
		{                                                                                                          \
			set_smem(assign_kernel<MM, true>, sm);                                                                 \
			assign_kernel<MM, true><<<grid, NTHREADS, sm, g_s>>>(dx, nr, D, M.Dp, M.Dp2, M.Kp, M.Wm, M.colc,     \
																  M.colp, sph, invT, m, tau, dcomp, dresp, bll, dr); \
		}                                                                                                          \
		else                                                                                                       \
		{                                                                                                          \
			set_smem(assign_kernel<MM, false>, sm);                                                                \
			assign_kernel<MM, false><<<grid, NTHREADS, sm, g_s>>>(dx, nr, D, M.Dp, M.Dp2, M.Kp, M.Wm, M.colc,    \
																   M.colp, sph, invT, m, tau, dcomp, dresp, bll, dr); \
		}                                                                                                          \
		break;
		double kms = 0.0;
		Timer t;
		src.for_each([&](const float *dXc, int64_t n0, int64_t nc) {
			for (int64_t s0 = 0; s0 < nc; s0 += sub)
			{
				int64_t nr = std::min(sub, nc - s0);
				const float *dx = dXc + s0 * D;
				dim3 grid((unsigned) ((nr + BM - 1) / BM));
				t.start();
				if (h16 && one)		/* the kernel converts its rows itself */
					assign16(M, nullptr, nullptr, dx, nr, H16Rows::padded(nr), maxm, invT, m, tau, dcomp, dresp);
				else if (h16)
					for (int64_t b0 = 0; b0 < nr; b0 += hr.rows)
					{
						const int64_t nb = std::min(hr.rows, nr - b0);
						const float *xb = dx + b0 * D;
						const int64_t npad = hr.convert(M, xb, nb);
						assign16(M, hr.Xg, hr.xh, xb, nb, npad, maxm, invT, m, tau, dcomp + b0 * m, dresp + b0 * m);
					}
				else if (gemm)
					for (int64_t b0 = 0; b0 < nr; b0 += gw.rc)
						gw.topk(M, dx + b0 * D, std::min(gw.rc, nr - b0), invT, m, tau, dcomp + b0 * m, dresp + b0 * m);
				else
				{
					switch (maxm)
					{
						AS_CASE(1)
						AS_CASE(2)
						AS_CASE(4)
						AS_CASE(8)
						AS_CASE(16)
						AS_CASE(32)
					}
					CKL("assign_kernel");
				}
				kms += t.stop_ms();
				CK(cudaMemcpyAsync(out_comp + (n0 + s0) * m, dcomp, sizeof(int32_t) * nr * m, cudaMemcpyDeviceToHost, g_s));
				if (out_resp)
					CK(cudaMemcpyAsync(out_resp + (n0 + s0) * m, dresp, sizeof(float) * nr * m, cudaMemcpyDeviceToHost, g_s));
				CK(cudaStreamSynchronize(g_s));
			}
		});
#undef AS_CASE
		g_stats.ms_kernel = kms;
		finish_stats(src, M);
		src.destroy();
	});
}

}								/* extern "C" */
