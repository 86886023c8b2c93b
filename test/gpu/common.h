/* common.h - data loading and synthetic data for the GPU tests and benchmark. */
#ifndef FLASHGMM_TEST_GPU_COMMON_H
#define FLASHGMM_TEST_GPU_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* .fvecs (texmex) or .u8 (int32 n, int32 d, then n*d bytes: integral data such as SIFT or pixels) */
static inline float *
load_vectors(const char *path, int64_t *n_out, int *d_out)
{
	FILE	   *f = fopen(path, "rb");
	size_t		len = strlen(path);
	float	   *X = NULL;

	if (!f)
		return NULL;
	if (len > 3 && strcmp(path + len - 3, ".u8") == 0)
	{
		int32_t		h[2];
		uint8_t    *u;

		if (fread(h, 4, 2, f) != 2)
			goto bad;
		u = (uint8_t *) malloc((size_t) h[0] * h[1]);
		X = (float *) malloc(sizeof(float) * (size_t) h[0] * h[1]);
		if (fread(u, 1, (size_t) h[0] * h[1], f) != (size_t) h[0] * h[1])
			goto bad;
		for (size_t i = 0; i < (size_t) h[0] * h[1]; i++)
			X[i] = u[i];
		free(u);
		*n_out = h[0];
		*d_out = h[1];
	}
	else
	{
		int32_t		d;
		long		sz;
		int64_t		n;

		if (fread(&d, 4, 1, f) != 1)
			goto bad;
		fseek(f, 0, SEEK_END);
		sz = ftell(f);
		fseek(f, 0, SEEK_SET);
		n = sz / (4 + 4 * (long) d);
		X = (float *) malloc(sizeof(float) * (size_t) n * d);
		for (int64_t i = 0; i < n; i++)
		{
			int32_t		dd;

			if (fread(&dd, 4, 1, f) != 1 || fread(X + i * d, 4, d, f) != (size_t) d)
				goto bad;
		}
		*n_out = n;
		*d_out = d;
	}
	fclose(f);
	return X;
bad:
	fclose(f);
	return NULL;
}

static inline uint64_t
sm64(uint64_t *s)
{
	uint64_t	z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static inline float
approx_normal(uint64_t *s)
{
	uint64_t	a = sm64(s);
	/* sum of 4 uniforms of 16 bits, centred and scaled to variance ~1 */
	float		v = (float) ((a & 0xffff) + ((a >> 16) & 0xffff) + ((a >> 32) & 0xffff) + (a >> 48)) / 65536.0f;

	return (v - 2.0f) * 1.7320508f;
}

/*
 * Clustered synthetic data (never zeros): C centres ~ N(0, 4^2) per dimension
 * with per-cluster spread in [0.5, 1.5], rows = centre + spread * N(0, 1).
 */
static float *make_clustered_scaled(int64_t N, int D, int C, uint64_t seed, float centre_scale);

static inline float *
make_clustered(int64_t N, int D, int C, uint64_t seed)
{
	return make_clustered_scaled(N, D, C, seed, 4.0f);
}

/* centre_scale: standard deviation of the centres per dimension (1 = clusters overlap) */
static float *
make_clustered_scaled(int64_t N, int D, int C, uint64_t seed, float centre_scale)
{
	float	   *X = (float *) malloc(sizeof(float) * (size_t) N * D);
	float	   *cen = (float *) malloc(sizeof(float) * (size_t) C * D);
	float	   *spr = (float *) malloc(sizeof(float) * C);
	uint64_t	s = seed;

	if (!X || !cen || !spr)
	{
		free(X);
		free(cen);
		free(spr);
		return NULL;
	}
	for (int64_t i = 0; i < (int64_t) C * D; i++)
		cen[i] = centre_scale * approx_normal(&s);
	for (int c = 0; c < C; c++)
		spr[c] = 0.5f + (float) (sm64(&s) >> 11) / 9007199254740992.0f;
#pragma omp parallel for schedule(static)
	for (int64_t blk = 0; blk < (N + 4095) / 4096; blk++)
	{
		uint64_t	r = seed * 7919 + (uint64_t) blk * 0x632BE59BD9B4E019ull;

		for (int64_t i = blk * 4096; i < N && i < (blk + 1) * 4096; i++)
		{
			int			c = (int) (sm64(&r) % (uint64_t) C);
			float	   *x = X + i * D;
			const float *m = cen + (int64_t) c * D;

			for (int d = 0; d < D; d++)
				x[d] = m[d] + spr[c] * approx_normal(&r);
		}
	}
	free(cen);
	free(spr);
	return X;
}

#endif
