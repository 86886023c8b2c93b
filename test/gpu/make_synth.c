/*
 * make_synth.c - clustered synthetic data in texmex form for the in-PostgreSQL GPU
 * measurement: DIR/base.fvecs (N x D), query.fvecs (Q rows of the same distribution, other
 * draws), groundtruth.ivecs (exact L2 top-100 by brute force, ties to the smaller id).
 *   make_synth DIR N D Q [CLUSTERS [CENTRE_SCALE]]
 * CENTRE_SCALE (default 1): spread of the cluster centres against the clusters' own
 * (0.5 to 1.5): at 1 they overlap, so an IVF index needs several probes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"

static void
write_fvecs(const char *path, const float *X, int64_t n, int d)
{
	FILE	   *f = fopen(path, "wb");

	for (int64_t i = 0; i < n; i++)
	{
		fwrite(&d, 4, 1, f);
		fwrite(X + i * d, 4, d, f);
	}
	fclose(f);
}

int
main(int argc, char **argv)
{
	char		p[4096];
	int64_t		N;
	int			D,
				Q,
				C;
	float	   *X,
			   *Y,
			   *all;
	int32_t    *gt;

	if (argc < 5)
	{
		fprintf(stderr, "usage: %s DIR N D Q [CLUSTERS]\n", argv[0]);
		return 2;
	}
	N = atoll(argv[2]);
	D = atoi(argv[3]);
	Q = atoi(argv[4]);
	C = argc > 5 ? atoi(argv[5]) : 1000;
	float		cs = argc > 6 ? (float) atof(argv[6]) : 1.0f;
	mkdir(argv[1], 0755);
	/* one draw of N + Q rows, the last Q are the queries (same centres) */
	all = make_clustered_scaled(N + Q, D, C, 12345, cs);
	X = all;
	Y = all + N * D;
	snprintf(p, sizeof p, "%s/base.fvecs", argv[1]);
	write_fvecs(p, X, N, D);
	snprintf(p, sizeof p, "%s/query.fvecs", argv[1]);
	write_fvecs(p, Y, Q, D);
	gt = malloc(sizeof(int32_t) * (size_t) Q * 100);
#pragma omp parallel for schedule(dynamic)
	for (int q = 0; q < Q; q++)
	{
		float		bd[100];
		int32_t		bi[100];
		int			cnt = 0;
		const float *y = Y + (int64_t) q * D;

		for (int64_t n = 0; n < N; n++)
		{
			const float *x = X + n * D;
			float		s = 0.f;

			for (int d = 0; d < D; d++)
			{
				float		t = x[d] - y[d];

				s += t * t;
			}
			if (cnt < 100 || s < bd[cnt - 1])
			{
				int			j = cnt < 100 ? cnt++ : 99;

				while (j > 0 && bd[j - 1] > s)
				{
					bd[j] = bd[j - 1];
					bi[j] = bi[j - 1];
					j--;
				}
				bd[j] = s;
				bi[j] = (int32_t) n;
			}
		}
		memcpy(gt + (size_t) q * 100, bi, sizeof bi);
	}
	snprintf(p, sizeof p, "%s/groundtruth.ivecs", argv[1]);
	{
		FILE	   *f = fopen(p, "wb");
		int			k = 100;

		for (int q = 0; q < Q; q++)
		{
			fwrite(&k, 4, 1, f);
			fwrite(gt + (size_t) q * 100, 4, 100, f);
		}
		fclose(f);
	}
	printf("wrote %s: %lld x %d base, %d queries, %d clusters, centre scale %g\n", argv[1], (long long) N, D, Q, C, cs);
	return 0;
}
