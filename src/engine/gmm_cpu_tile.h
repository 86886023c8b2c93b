/*
 * gmm_cpu_tile.h - the per-tile E-step kernels, instantiated twice by
 * gmm_cpu.c: REAL = float (SFX _f, sgemm) and REAL = double (SFX _d, dgemm).
 * Not a public header.  (gmm_cpu.c has AVX2 versions of load and post for
 * the float path.)
 *
 *   load:   A = [x - c] or [x - c, (x - c)^2], xn2 = ||x - c||^2 (double)
 *   scores: S = A B^T (GEMM)
 *   post:   S += c0 (+ hprec * xn2), times 1/temperature; lz = log sum_k exp S;
 *           S := exp(S - lz) (responsibilities, exact zeros below e^-RESP_CUT
 *           of the row's best); with st: nk += sum_i S, sxx += sum_i S xn2
 *           (spherical), and the count of non-zero responsibilities
 *   sx:     sx += S^T A: one GEMM, or row by row over the non-zero
 *           responsibilities when S is sparse (near-hard posteriors)
 */
#define TCAT_(a, b) a##b
#define TCAT(a, b) TCAT_(a, b)
#define FN(n) TCAT(n, SFX)
#define FLD(n) TCAT(n, SFX)

static void
FN(tile_load) (score_ctx *s, const float *X, int nt)
{
	int			D = s->D,
				W = s->W;
	REAL	   *A = s->FLD(A);

	for (int i = 0; i < nt; i++)
	{
		const float *x = X + (size_t) i * D;
		REAL	   *a = A + (size_t) i * W;
		double		n2 = 0.0;

		for (int d = 0; d < D; d++)
		{
			REAL		v = (REAL) x[d] - s->FLD(center)[d];

			a[d] = v;
			n2 += (double) v * v;
		}
		if (s->cov == GMM_COV_DIAG)
			for (int d = 0; d < D; d++)
				a[D + d] = a[d] * a[d];
		s->xn2[i] = n2;
	}
}

static void
FN(tile_scores) (score_ctx *s, int nt)
{
	GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, nt, s->K, s->W,
		 (REAL) 1, s->FLD(A), s->W, s->FLD(B), s->W, (REAL) 0, s->FLD(S), s->K);
}

static void
FN(tile_post) (score_ctx *s, int nt, double inv_temp, em_stats *st)
{
	int			K = s->K;
	REAL	   *S = s->FLD(S);
	const REAL *c0 = s->FLD(c0);
	const REAL *hp = s->FLD(hprec);
	REAL		it = (REAL) inv_temp;
	int64_t		nnz = 0;

	for (int i = 0; i < nt; i++)
	{
		REAL	   *row = S + (size_t) i * K;
		REAL		mx;
		double		sum = 0.0;
		REAL		inv;

		if (s->cov == GMM_COV_SPHERICAL)
		{
			REAL		x2 = (REAL) s->xn2[i];

			for (int k = 0; k < K; k++)
				row[k] += c0[k] + hp[k] * x2;
		}
		else
			for (int k = 0; k < K; k++)
				row[k] += c0[k];
		if (inv_temp != 1.0)
			for (int k = 0; k < K; k++)
				row[k] *= it;
		mx = row[0];
		for (int k = 1; k < K; k++)
			if (row[k] > mx)
				mx = row[k];
		for (int k = 0; k < K; k++)
		{
			REAL		t = row[k] - mx;
			REAL		e = t > (REAL) - RESP_CUT ? EXP(t) : (REAL) 0;

			row[k] = e;
			sum += e;
		}
		s->lz[i] = (double) mx + log(sum);
		inv = (REAL) (1.0 / sum);
		for (int k = 0; k < K; k++)
			row[k] *= inv;
		if (st)
		{
			double		x2 = s->xn2[i];

			for (int k = 0; k < K; k++)
			{
				st->nk[k] += row[k];
				if (s->cov == GMM_COV_SPHERICAL)
					st->sxx[k] += row[k] * x2;
				nnz += row[k] != (REAL) 0;
			}
		}
	}
	s->tile_nnz = nnz;
}

static void
FN(tile_sx) (score_ctx *s, int nt, em_stats *st)
{
	int			K = s->K,
				W = s->W,
				D = s->D;
	const REAL *S = s->FLD(S);
	const REAL *A = s->FLD(A);
	REAL	   *tmp = s->FLD(tmp);

	if (s->tile_nnz * SPARSE_RATIO < (int64_t) nt * K)
	{
		for (int i = 0; i < nt; i++)
		{
			const REAL *r = S + (size_t) i * K;
			const REAL *a = A + (size_t) i * W;

			for (int k = 0; k < K; k++)
			{
				double		rk = r[k];
				double	   *acc;

				if (rk == 0.0 || s->isbad[k])
					continue;
				acc = st->sx + (size_t) k * W;
				for (int j = 0; j < D; j++)
					acc[j] += rk * a[j];
				if (W != D)		/* diag: squares in float64 */
					for (int j = 0; j < D; j++)
						acc[D + j] += rk * ((double) a[j] * a[j]);
			}
		}
		s->sparse_tiles++;
		return;
	}
	GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, K, W, nt,
		 (REAL) 1, S, K, A, W, (REAL) 0, tmp, W);
	for (int k = 0; k < K; k++)
	{
		double	   *acc = st->sx + (size_t) k * W;
		const REAL *t = tmp + (size_t) k * W;

		if (s->isbad[k])		/* summed by ctx_bad_stats */
			continue;
		for (int j = 0; j < W; j++)
			acc[j] += t[j];
	}
	s->dense_tiles++;
}

#undef FN
#undef FLD
#undef TCAT
#undef TCAT_
