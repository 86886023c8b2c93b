/*
 * gmmivf_build.c - CREATE INDEX / REINDEX for gmmivf.
 *
 *  1. sampling: blocks chosen at random (Knuth's algorithm S), rows inside
 *     them kept by reservoir sampling (Vitter's algorithm Z) - what ANALYZE
 *     does, seeded by the `seed` option so a build is reproducible.  The
 *     sample's size is checked against maintenance_work_mem before it is
 *     allocated and reduced (NOTICE) when it does not fit.
 *  2. training: the engine fits a K-component mixture on the sample
 *     (flashgmm.device picks the CPU or the CUDA engine).
 *  3. assigning: a full table scan assigns every row softly (top max_assign
 *     components with responsibility > tau) in batches, and feeds
 *     (list, heap TID, vector) to a tuplesort bounded by maintenance_work_mem.
 *  4. writing: sorted by list then TID, each list is written to consecutive
 *     pages; the component records get their list heads.
 *
 * Pages are written without WAL and, when the index needs WAL, logged in
 * one pass at the end with log_newpage_range (like GIN and GiST builds).
 *
 * Cosine: vectors are normalised for training and assignment (stored raw);
 * zero vectors have no direction and go to the meta list, which every scan
 * reads.  Inner product: trained on raw vectors.
 */
#include "postgres.h"

#include <math.h>

#include "access/generic_xlog.h"
#include "access/tableam.h"
#include "access/xloginsert.h"
#include "catalog/index.h"
#include "catalog/pg_operator_d.h"
#include "catalog/pg_type_d.h"
#include "commands/progress.h"
#include "common/pg_prng.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/smgr.h"
#include "utils/array.h"
#include "portability/instr_time.h"
#include "utils/backend_progress.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/sampling.h"
#include "utils/tuplesort.h"

#include "gmmivf.h"

#define ASSIGN_BATCH_BYTES	(8 * 1024 * 1024)

typedef struct GmmIvfBuildState
{
	Relation	heap;
	Relation	index;
	IndexInfo  *indexInfo;
	FlashgmmMetric metric;
	GmmIvfOptions *opts;
	int			lists;			/* requested K */
	int			dims;			/* 0 until the first vector */

	/* sampling */
	int			targrows;
	int			nsamples;
	int			ntrain;			/* the first ntrain samples train; the rest calibrate copies */
	int			samplecap;		/* rows allocated */
	int			memcap;			/* rows maintenance_work_mem allows */
	bool		sample_auto_all;	/* sample = the table, as far as memory allows */
	float4	   *samples;
	double		samplerows;
	double		rowstoskip;
	ReservoirStateData rstate;

	/* model and assignment */
	gmm_model  *model;
	int			K;				/* trained components (0: no model) */
	int			max_assign;
	float		tau;
	float		temperature;
	bool		use_gpu;

	/* batches fed to the engine */
	int			batch_cap;
	int			nbatch;
	float4	   *batch;			/* raw vectors */
	float4	   *batch_assign;	/* vectors given to the engine (normalised for cosine) */
	int		   *batch_row;		/* row of batch_assign -> row of batch */
	ItemPointerData *batch_tids;
	int32	   *comp;

	Tuplesortstate *sort;
	TupleDesc	sortdesc;
	TupleTableSlot *slot;
	TupleTableSlot *rslot;		/* reads the sort */

	double		rows;			/* non-NULL vectors indexed */
	double		copies;			/* list entries */
	double		reltuples;		/* from the table scan */
	double		tuples_total;	/* for progress */

	MemoryContext tmpctx;
} GmmIvfBuildState;

/* Detoast and check one indexed value; set dims on the first. */
static const float4 *
get_vector(GmmIvfBuildState *bs, Datum value, ArrayType **arr)
{
	ArrayType  *a = DatumGetArrayTypeP(value);
	int			d;
	const float4 *x = flashgmm_vector_check(a, &d, "indexed vector");

	if (bs->dims == 0)
	{
		if (d > GMMIVF_MAX_DIM)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("gmmivf indexes vectors of at most %d dimensions, not %d",
							GMMIVF_MAX_DIM, d)));
		bs->dims = d;
	}
	else if (d != bs->dims)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("indexed vector has %d dimensions, expected %d", d, bs->dims),
				 errdetail("All vectors of a gmmivf index must have the same dimension.")));
	*arr = a;
	return x;
}

/*
 * Memory the training needs besides the sample (an estimate of the CPU
 * engine's allocations: float and double copies of the K x D parameters and
 * statistics, 512-row tiles of K scores; the engine never allocates N x K).
 */
static Size
train_overhead(int K, int D, gmm_cov_type cov)
{
	Size		kd = (Size) K * (D + 2) * (cov == GMM_COV_DIAG ? 48 : 32);
	Size		tiles = (Size) 512 * K * 12 * 2 + (Size) 512 * (D + 2) * 12;

	return kd + tiles + (Size) K * 128;
}

/* Sample bytes per row: the vector plus the engine's per-row arrays. */
#define SAMPLE_ROW_BYTES(D)	((Size) (D) * sizeof(float4) + 16)

/*
 * The sample grows by doubling, so a small table costs little; its cap is
 * what maintenance_work_mem leaves after the training's own needs.  When the
 * table has more rows than fit, the sample is reduced (NOTICE) - at the
 * moment the reservoir fills, before Algorithm Z has drawn anything, so the
 * sample stays uniform.
 */
static void
grow_samples(GmmIvfBuildState *bs)
{
	Size		row = (Size) bs->dims * sizeof(float4);
	int			newcap;

	if (bs->samples == NULL)
	{
		Size		budget = (Size) maintenance_work_mem * 1024;
		Size		over = train_overhead(bs->lists, bs->dims, gmmivf_option_cov(bs->opts));

		bs->memcap = budget > over ?
			(int) Min((budget - over) / SAMPLE_ROW_BYTES(bs->dims), (Size) INT_MAX / 2) : 0;
	}
	if (bs->nsamples >= bs->memcap)
	{
		if (bs->memcap < bs->lists)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("maintenance_work_mem is too small to train gmmivf index \"%s\"",
							RelationGetRelationName(bs->index)),
					 errdetail("Training %d lists of %d dimensions needs at least %zu kB; maintenance_work_mem is %d kB.",
							   bs->lists, bs->dims,
							   (SAMPLE_ROW_BYTES(bs->dims) * bs->lists + train_overhead(bs->lists, bs->dims, gmmivf_option_cov(bs->opts))) / 1024,
							   maintenance_work_mem),
					 errhint("Raise maintenance_work_mem or lower \"lists\".")));
		if (!bs->sample_auto_all)
			ereport(NOTICE,
					(errmsg("gmmivf: training sample reduced from %d to %d rows to fit maintenance_work_mem (%d kB)",
							bs->targrows, bs->memcap, maintenance_work_mem),
					 errhint("Raise maintenance_work_mem to train on more rows.")));
		else
			elog(DEBUG1, "gmmivf: training sample is %d rows, what maintenance_work_mem (%d kB) holds",
				 bs->memcap, maintenance_work_mem);
		bs->targrows = bs->memcap;
		bs->rstate.W = exp(-log(sampler_random_fract(&bs->rstate.randstate)) / bs->targrows);
		return;
	}
	newcap = bs->samplecap == 0 ? 1024 : bs->samplecap * 2;
	newcap = Min(newcap, Min(bs->targrows, bs->memcap));
	if (bs->samples == NULL)
		bs->samples = MemoryContextAllocHuge(CurrentMemoryContext, row * newcap);
	else
		bs->samples = repalloc_huge(bs->samples, row * newcap);
	bs->samplecap = newcap;
}

static void
sample_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
				bool tupleIsAlive, void *state)
{
	GmmIvfBuildState *bs = (GmmIvfBuildState *) state;
	MemoryContext old;
	ArrayType  *a;
	const float4 *x;
	int			slot = -1;

	if (isnull[0])
		return;

	old = MemoryContextSwitchTo(bs->tmpctx);
	x = get_vector(bs, values[0], &a);
	MemoryContextSwitchTo(old);

	/* cosine: a zero vector has no direction and is no training row */
	if (bs->metric == FLASHGMM_METRIC_COSINE && flashgmm_norm(x, bs->dims) == 0)
	{
		MemoryContextReset(bs->tmpctx);
		return;
	}

	if (bs->nsamples < bs->targrows && bs->nsamples == bs->samplecap)
		grow_samples(bs);

	if (bs->nsamples < bs->targrows)
		slot = bs->nsamples++;
	else
	{
		if (bs->rowstoskip < 0)
			bs->rowstoskip = reservoir_get_next_S(&bs->rstate, bs->samplerows, bs->targrows);
		if (bs->rowstoskip <= 0)
			slot = (int) (bs->targrows * sampler_random_fract(&bs->rstate.randstate));
		bs->rowstoskip -= 1;
	}
	bs->samplerows += 1;

	if (slot >= 0)
	{
		float4	   *dst = bs->samples + (Size) slot * bs->dims;

		memcpy(dst, x, sizeof(float4) * bs->dims);
		if (bs->metric == FLASHGMM_METRIC_COSINE)
			gmmivf_normalize(dst, bs->dims);
	}
	MemoryContextReset(bs->tmpctx);
}

static void
sample_rows(GmmIvfBuildState *bs)
{
	BlockSamplerData bsamp;
	BlockNumber nblocks = RelationGetNumberOfBlocks(bs->heap);
	uint32		seed = (uint32) bs->opts->seed;

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, GMMIVF_PHASE_SAMPLE);
	bs->rowstoskip = -1;
	bs->samplerows = 0;
	BlockSampler_Init(&bsamp, nblocks, bs->targrows, seed);
	reservoir_init_selection_state(&bs->rstate, bs->targrows);
	/* reproducible: reseed the reservoir and redo its first draw */
	sampler_random_init_state(seed ^ 0x9E3779B9u, &bs->rstate.randstate);
	bs->rstate.W = exp(-log(sampler_random_fract(&bs->rstate.randstate)) / bs->targrows);

	{
		/* blocks: sampled / to sample; tuples: rows kept / sample size */
		const int	cols[] = {PROGRESS_SCAN_BLOCKS_TOTAL, PROGRESS_SCAN_BLOCKS_DONE,
		PROGRESS_CREATEIDX_TUPLES_TOTAL, PROGRESS_CREATEIDX_TUPLES_DONE};
		int64		vals[] = {Min(nblocks, (BlockNumber) bs->targrows), 0,
		bs->sample_auto_all ? (int64) bs->tuples_total : bs->targrows, 0};

		pgstat_progress_update_multi_param(4, cols, vals);
	}
	while (BlockSampler_HasMore(&bsamp))
	{
		BlockNumber blk = BlockSampler_Next(&bsamp);
		const int	cols[] = {PROGRESS_SCAN_BLOCKS_DONE, PROGRESS_CREATEIDX_TUPLES_DONE};
		int64		vals[2];

		table_index_build_range_scan(bs->heap, bs->index, bs->indexInfo,
									 false, false, false, blk, 1,
									 sample_callback, (void *) bs, NULL);
		vals[0] = bsamp.m;
		vals[1] = bs->nsamples;
		pgstat_progress_update_multi_param(2, cols, vals);
	}
}

static int
fit_progress(void *arg, const char *phase, int64_t done, int64_t total)
{
	const int	cols[] = {PROGRESS_CREATEIDX_TUPLES_TOTAL, PROGRESS_CREATEIDX_TUPLES_DONE};
	int64		vals[2];

	/* never longjmp through the engine: ask it to stop, check after */
	if (QueryCancelPending || ProcDiePending)
		return 1;
	/* the view shows EM iterations done / most iterations */
	if (strcmp(phase, "em") == 0)
	{
		vals[0] = total;
		vals[1] = done;
		pgstat_progress_update_multi_param(2, cols, vals);
	}
	return 0;
}

static void
train(GmmIvfBuildState *bs)
{
	gmm_fit_params p;
	gmm_fit_report report;
	gmm_error	err;
	gmm_status	st;
	gmm_model  *m = NULL;

	{
		const int	cols[] = {PROGRESS_CREATEIDX_SUBPHASE, PROGRESS_CREATEIDX_TUPLES_TOTAL,
		PROGRESS_CREATEIDX_TUPLES_DONE};
		int64		vals[] = {GMMIVF_PHASE_TRAIN, bs->opts->iterations, 0};

		pgstat_progress_update_multi_param(3, cols, vals);
	}
	gmm_fit_params_default(&p, bs->K);
	p.cov = gmmivf_option_cov(bs->opts);
	p.equal_weights = gmmivf_option_equal_weights(bs->opts) ? 1 : 0;
	p.max_iter = bs->opts->iterations;
	p.seed = (uint64_t) bs->opts->seed;
	p.deterministic = 1;
	p.progress = fit_progress;
	p.progress_arg = bs;
	memset(&err, 0, sizeof(err));
	memset(&report, 0, sizeof(report));

	st = gmmivf_engine_fit(bs->samples, bs->ntrain, bs->dims, &p, &m, &report, &err, &bs->use_gpu);
	if (st == GMM_ECANCELED)
	{
		if (m)
			gmm_model_free(m);
		CHECK_FOR_INTERRUPTS();
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("gmmivf: training canceled")));
	}
	if (st != GMM_OK)
	{
		if (m)
			gmm_model_free(m);
		if (st == GMM_EINVAL || st == GMM_ENONFINITE)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("gmmivf: training failed: %s", err.msg[0] ? err.msg : gmm_status_name(st)),
					 errhint("The engine computes in float32: elements larger than about 1e18 in magnitude overflow it; scale such vectors down.")));
		gmmivf_ereport_engine(st, &err, "training");
	}
	if (m == NULL)
		elog(ERROR, "gmmivf: engine returned no model");
	gmmivf_free_model_on_reset(CurrentMemoryContext, m);
	bs->model = m;
	elog(DEBUG1, "gmmivf: trained K=%d on %d rows: %d iterations, mean log-likelihood %g, %d reseeded, %s",
		 bs->K, bs->ntrain, report.iterations, report.mean_loglik, report.reseeded,
		 bs->use_gpu ? "GPU" : "CPU");
}

/*
 * With copies > 0 and a sample smaller than the table (most rows to be
 * indexed were never trained on), keep h sample rows (up to 4096, at most a
 * quarter of the sample, never leaving fewer training rows than components)
 * out of the training set for pick_temperature: rows picked at an even stride
 * through the sample (the reservoir keeps part of it in scan order) and moved
 * to its end.  When the sample is the whole table every indexed row is a
 * training row, so the training rows are the right ones to calibrate on.
 */
static void
hold_out_rows(GmmIvfBuildState *bs)
{
	int			h = Min(4096, bs->nsamples / 4);
	int			d = bs->dims;
	float4	   *tmp;

	bs->ntrain = bs->nsamples;
	if (bs->opts->copies <= 0 || bs->samplerows <= bs->nsamples || h < 256 || bs->nsamples - h < bs->K)
		return;
	tmp = palloc(sizeof(float4) * d);
	for (int i = 0; i < h; i++)
	{
		Size		a = (Size) ((int64) i * bs->nsamples / h),
					b = (Size) (bs->nsamples - h + i);

		if (a >= (Size) (bs->nsamples - h))
			continue;			/* already in the held-out tail */
		memcpy(tmp, bs->samples + a * d, sizeof(float4) * d);
		memcpy(bs->samples + a * d, bs->samples + b * d, sizeof(float4) * d);
		memcpy(bs->samples + b * d, tmp, sizeof(float4) * d);
	}
	pfree(tmp);
	bs->ntrain = bs->nsamples - h;
}

/*
 * copies > 0: choose the temperature that gives about that many lists per
 * vector, by bisection on log T in [0.01, 100]: a higher temperature
 * flattens the responsibilities, so more components pass tau (RESEARCH.md
 * round 2: tempered soft assignment is what makes soft assignment pay at high
 * dimension).  The mean is taken over sample rows the model was not trained
 * on (held out by hold_out_rows) when there are any: rows the model has seen
 * sit closer to their component, so calibrating on them undershot the
 * temperature and the table got more copies than asked (sift-opencv-100k,
 * lists 316: 2.59 for copies = 2, 3.70 for 3).
 */
static float
pick_temperature(GmmIvfBuildState *bs, double target)
{
	int			held = bs->nsamples - bs->ntrain;
	int			n = held > 0 ? held : Min(bs->nsamples, 4096);
	const float *rows = held > 0 ? bs->samples + (Size) bs->ntrain * bs->dims : bs->samples;
	int32	   *comp = palloc(sizeof(int32) * (Size) n * bs->max_assign);
	double		lo = log(0.01),
				hi = log(100.0);
	double		mean = 0;

	for (int it = 0; it < 24; it++)
	{
		double		mid = 0.5 * (lo + hi);
		int64		cnt = 0;
		gmm_error	err;
		gmm_status	st;

		CHECK_FOR_INTERRUPTS();
		memset(&err, 0, sizeof(err));
		st = gmmivf_engine_assign(bs->model, rows, n, bs->max_assign, bs->tau,
								  (float) exp(mid), comp, NULL, &err, bs->use_gpu);
		if (st != GMM_OK)
			gmmivf_ereport_engine(st, &err, "choosing the temperature");
		for (Size i = 0; i < (Size) n * bs->max_assign; i++)
			cnt += comp[i] >= 0;
		mean = (double) cnt / n;
		if (mean < target)
			lo = mid;
		else
			hi = mid;
	}
	pfree(comp);
	elog(DEBUG1, "gmmivf: temperature %g gives %.3f copies per vector on %d %s rows (target %g)",
		 exp(0.5 * (lo + hi)), mean, n, held > 0 ? "held-out" : "training", target);
	return (float) exp(0.5 * (lo + hi));
}

static void
fill_meta(GmmIvfBuildState *bs, GmmIvfMetaPage meta)
{
	gmm_cov_type cov = gmmivf_option_cov(bs->opts);

	MemSet(meta, 0, sizeof(GmmIvfMetaPageData));
	meta->magic = GMMIVF_MAGIC;
	meta->version = GMMIVF_VERSION;
	meta->dims = bs->dims;
	meta->nlists = bs->K;
	meta->metric = bs->metric;
	meta->cov = cov;
	meta->max_assign = bs->max_assign;
	meta->tau = bs->tau;
	meta->temperature = bs->temperature;
	meta->build_id = pg_prng_uint32(&pg_global_prng_state);
	meta->comp_start = GMMIVF_FIRST_COMP_BLKNO;
	gmmivf_comp_layout(bs->K, bs->dims, cov, &meta->rec_size, &meta->recs_per_page,
					   &meta->pages_per_rec, &meta->comp_npages);
	meta->metalist.head = InvalidBlockNumber;
	meta->metalist.insert = InvalidBlockNumber;
	meta->metalist.nitems = 0;
}

static void
set_meta_lower(Page page)
{
	((PageHeader) page)->pd_lower =
		((char *) GmmIvfPageGetMeta(page) + sizeof(GmmIvfMetaPageData)) - (char *) page;
}

/* Metapage and component pages (blocks 0..C), no WAL (logged at the end). */
static void
write_model_pages(GmmIvfBuildState *bs, GmmIvfMetaPageData *meta)
{
	Buffer		buf;
	Page		page;
	char	   *rec;
	int			D = bs->dims;
	int			vlen;

	buf = gmmivf_new_buffer(bs->index, MAIN_FORKNUM);
	if (BufferGetBlockNumber(buf) != GMMIVF_METAPAGE_BLKNO)
		elog(ERROR, "gmmivf: index \"%s\" is not empty", RelationGetRelationName(bs->index));
	page = BufferGetPage(buf);
	gmmivf_init_page(page, GMMIVF_PAGE_META);
	memcpy(GmmIvfPageGetMeta(page), meta, sizeof(GmmIvfMetaPageData));
	set_meta_lower(page);
	MarkBufferDirty(buf);
	UnlockReleaseBuffer(buf);

	for (BlockNumber i = 0; i < meta->comp_npages; i++)
	{
		buf = gmmivf_new_buffer(bs->index, MAIN_FORKNUM);
		page = BufferGetPage(buf);
		gmmivf_init_page(page, GMMIVF_PAGE_COMP);
		/* the whole contents area is data: no hole for full-page images */
		((PageHeader) page)->pd_lower = ((PageHeader) page)->pd_upper;
		MarkBufferDirty(buf);
		UnlockReleaseBuffer(buf);
	}

	if (bs->K == 0)
		return;
	vlen = gmm_var_len((gmm_cov_type) meta->cov, D);
	rec = palloc0(meta->rec_size);
	for (int k = 0; k < bs->K; k++)
	{
		GmmIvfCompHeader *h = (GmmIvfCompHeader *) rec;
		float4	   *f = (float4 *) (rec + sizeof(GmmIvfCompHeader));
		BlockNumber blk;
		uint32		off;
		uint32		left = meta->rec_size;
		char	   *src = rec;

		h->weight = bs->model->weights[k];
		h->list.head = InvalidBlockNumber;
		h->list.insert = InvalidBlockNumber;
		h->list.nitems = 0;
		memcpy(f, bs->model->vars + (Size) k * vlen, sizeof(float4) * vlen);
		memcpy(f + vlen, bs->model->means + (Size) k * D, sizeof(float4) * D);

		gmmivf_comp_locate(meta, k, &blk, &off);
		while (left > 0)
		{
			uint32		n = Min(left, GMMIVF_COMP_CAPACITY - off);

			buf = ReadBuffer(bs->index, blk);
			LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
			memcpy(PageGetContents(BufferGetPage(buf)) + off, src, n);
			MarkBufferDirty(buf);
			UnlockReleaseBuffer(buf);
			src += n;
			left -= n;
			off = 0;
			blk++;
		}
	}
	pfree(rec);
}

static void
add_to_sort(GmmIvfBuildState *bs, int32 list, ItemPointer tid, const float4 *x)
{
	bytea	   *v;
	Size		len = sizeof(float4) * bs->dims;

	v = (bytea *) palloc(VARHDRSZ + len);
	SET_VARSIZE(v, VARHDRSZ + len);
	memcpy(VARDATA(v), x, len);

	ExecClearTuple(bs->slot);
	bs->slot->tts_values[0] = Int32GetDatum(list);
	bs->slot->tts_isnull[0] = false;
	bs->slot->tts_values[1] = PointerGetDatum(tid);
	bs->slot->tts_isnull[1] = false;
	bs->slot->tts_values[2] = PointerGetDatum(v);
	bs->slot->tts_isnull[2] = false;
	ExecStoreVirtualTuple(bs->slot);
	tuplesort_puttupleslot(bs->sort, bs->slot);
	pfree(v);
	bs->copies += 1;
}

static void
flush_batch(GmmIvfBuildState *bs)
{
	int			D = bs->dims;
	int			n = 0;
	MemoryContext old;

	if (bs->nbatch == 0)
		return;
	old = MemoryContextSwitchTo(bs->tmpctx);

	if (bs->K == 0)
	{
		for (int i = 0; i < bs->nbatch; i++)
			add_to_sort(bs, bs->K, &bs->batch_tids[i], bs->batch + (Size) i * D);
	}
	else
	{
		gmm_status	st;
		gmm_error	err;

		/* rows given to the engine; cosine: normalised, zero vectors to the meta list */
		for (int i = 0; i < bs->nbatch; i++)
		{
			float4	   *dst = bs->batch_assign + (Size) n * D;

			memcpy(dst, bs->batch + (Size) i * D, sizeof(float4) * D);
			if (bs->metric == FLASHGMM_METRIC_COSINE && !gmmivf_normalize(dst, D))
				add_to_sort(bs, bs->K, &bs->batch_tids[i], bs->batch + (Size) i * D);
			else
				bs->batch_row[n++] = i;
		}
		if (n > 0)
		{
			memset(&err, 0, sizeof(err));
			st = gmmivf_engine_assign(bs->model, bs->batch_assign, n, bs->max_assign, bs->tau,
									  bs->temperature, bs->comp, NULL, &err, bs->use_gpu);
			if (st != GMM_OK)
				gmmivf_ereport_engine(st, &err, "assigning rows");
			for (int j = 0; j < n; j++)
			{
				int			i = bs->batch_row[j];

				for (int a = 0; a < bs->max_assign; a++)
				{
					int32		c = bs->comp[(Size) j * bs->max_assign + a];

					if (c < 0)
						continue;
					if (c >= bs->K)
						elog(ERROR, "gmmivf: engine assigned component %d of %d", c, bs->K);
					add_to_sort(bs, c, &bs->batch_tids[i], bs->batch + (Size) i * D);
				}
			}
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(bs->tmpctx);
	bs->nbatch = 0;
}

static void
assign_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
				bool tupleIsAlive, void *state)
{
	GmmIvfBuildState *bs = (GmmIvfBuildState *) state;
	MemoryContext old;
	ArrayType  *a;
	const float4 *x;

	if (isnull[0])
		return;

	old = MemoryContextSwitchTo(bs->tmpctx);
	x = get_vector(bs, values[0], &a);
	MemoryContextSwitchTo(old);

	if (bs->batch == NULL)
	{
		Size		row = (Size) bs->dims * sizeof(float4);

		bs->batch_cap = Max(1, (int) (ASSIGN_BATCH_BYTES / row));
		bs->batch = palloc_extended(row * bs->batch_cap, MCXT_ALLOC_HUGE);
		bs->batch_assign = palloc_extended(row * bs->batch_cap, MCXT_ALLOC_HUGE);
		bs->batch_row = palloc(sizeof(int) * bs->batch_cap);
		bs->batch_tids = palloc(sizeof(ItemPointerData) * bs->batch_cap);
		bs->comp = palloc(sizeof(int32) * bs->batch_cap * Max(1, bs->max_assign));
	}
	memcpy(bs->batch + (Size) bs->nbatch * bs->dims, x, sizeof(float4) * bs->dims);
	bs->batch_tids[bs->nbatch] = *tid;
	bs->nbatch++;
	bs->rows += 1;
	MemoryContextReset(bs->tmpctx);

	if (bs->nbatch == bs->batch_cap)
	{
		flush_batch(bs);
		pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) bs->rows);
	}
}

static void
assign_rows(GmmIvfBuildState *bs)
{
	AttrNumber	attNums[] = {1, 2};
	Oid			sortOperators[] = {Int4LessOperator, TIDLessOperator};
	Oid			sortCollations[] = {InvalidOid, InvalidOid};
	bool		nullsFirst[] = {false, false};

	{
		const int	cols[] = {PROGRESS_CREATEIDX_SUBPHASE, PROGRESS_CREATEIDX_TUPLES_TOTAL,
		PROGRESS_CREATEIDX_TUPLES_DONE};
		int64		vals[] = {GMMIVF_PHASE_ASSIGN, (int64) bs->tuples_total, 0};

		pgstat_progress_update_multi_param(3, cols, vals);
	}

	bs->sortdesc = CreateTemplateTupleDesc(3);
	TupleDescInitEntry(bs->sortdesc, (AttrNumber) 1, "list", INT4OID, -1, 0);
	TupleDescInitEntry(bs->sortdesc, (AttrNumber) 2, "tid", TIDOID, -1, 0);
	TupleDescInitEntry(bs->sortdesc, (AttrNumber) 3, "vector", BYTEAOID, -1, 0);
	bs->slot = MakeSingleTupleTableSlot(bs->sortdesc, &TTSOpsVirtual);
	bs->rslot = MakeSingleTupleTableSlot(bs->sortdesc, &TTSOpsMinimalTuple);
	bs->sort = tuplesort_begin_heap(bs->sortdesc, 2, attNums, sortOperators, sortCollations,
									nullsFirst, maintenance_work_mem, NULL, TUPLESORT_NONE);

	bs->reltuples = table_index_build_scan(bs->heap, bs->index, bs->indexInfo, true, true,
										   assign_callback, (void *) bs, NULL);
	flush_batch(bs);
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) bs->rows);
}

typedef struct ListWriter
{
	Relation	index;
	Buffer		buf;			/* current page, locked */
	GmmIvfListHead cur;
} ListWriter;

static void
writer_new_page(ListWriter *w)
{
	Buffer		nbuf = gmmivf_new_buffer(w->index, MAIN_FORKNUM);
	BlockNumber nblk = BufferGetBlockNumber(nbuf);

	gmmivf_init_page(BufferGetPage(nbuf), GMMIVF_PAGE_POSTING);
	MarkBufferDirty(nbuf);
	if (BufferIsValid(w->buf))
	{
		GmmIvfPageGetOpaque(BufferGetPage(w->buf))->nextblk = nblk;
		MarkBufferDirty(w->buf);
		UnlockReleaseBuffer(w->buf);
	}
	else
		w->cur.head = nblk;
	w->cur.insert = nblk;
	w->buf = nbuf;
}

static void
writer_add(ListWriter *w, ItemPointer tid, const float4 *x, int dim, char *item)
{
	int			done = 0;

	if (!BufferIsValid(w->buf))
		writer_new_page(w);
	while (done < dim)
	{
		Page		page = BufferGetPage(w->buf);
		int			n = gmmivf_fit_floats(page, dim - done);

		if (n == 0)
		{
			writer_new_page(w);
			continue;
		}
		if (PageAddItem(page, (Item) item, gmmivf_form_item(item, tid, done, n, x + done),
						InvalidOffsetNumber, false, false) == InvalidOffsetNumber)
			elog(ERROR, "gmmivf: failed to add item to \"%s\"", RelationGetRelationName(w->index));
		MarkBufferDirty(w->buf);
		done += n;
	}
	w->cur.nitems++;
}

static void
write_lists(GmmIvfBuildState *bs, GmmIvfMetaPageData *meta)
{
	GmmIvfListHead *heads = palloc(sizeof(GmmIvfListHead) * (bs->K + 1));
	ListWriter	w;
	int32		curlist = -1;
	char	   *item = palloc(GMMIVF_ITEM_HDRSZ + sizeof(float4) * Min(bs->dims, GMMIVF_PAGE_MAX_FLOATS) + 8);
	double		written = 0;

	{
		const int	cols[] = {PROGRESS_CREATEIDX_SUBPHASE, PROGRESS_CREATEIDX_TUPLES_TOTAL,
		PROGRESS_CREATEIDX_TUPLES_DONE};
		int64		vals[] = {GMMIVF_PHASE_WRITE, (int64) bs->copies, 0};

		pgstat_progress_update_multi_param(3, cols, vals);
	}

	for (int k = 0; k <= bs->K; k++)
	{
		heads[k].head = heads[k].insert = InvalidBlockNumber;
		heads[k].nitems = 0;
	}
	w.index = bs->index;
	w.buf = InvalidBuffer;

	tuplesort_performsort(bs->sort);
	while (tuplesort_gettupleslot(bs->sort, true, false, bs->rslot, NULL))
	{
		bool		isnull;
		int32		list = DatumGetInt32(slot_getattr(bs->rslot, 1, &isnull));
		ItemPointer tid = (ItemPointer) DatumGetPointer(slot_getattr(bs->rslot, 2, &isnull));
		bytea	   *v = DatumGetByteaPP(slot_getattr(bs->rslot, 3, &isnull));

		if (list != curlist)
		{
			if (curlist >= 0)
			{
				UnlockReleaseBuffer(w.buf);
				heads[curlist] = w.cur;
			}
			curlist = list;
			w.buf = InvalidBuffer;
			w.cur.head = w.cur.insert = InvalidBlockNumber;
			w.cur.nitems = 0;
		}
		writer_add(&w, tid, (const float4 *) VARDATA_ANY(v), bs->dims, item);
		written += 1;
		if (((int64) written) % 1024 == 0)
		{
			pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) written);
			CHECK_FOR_INTERRUPTS();
		}
	}
	if (curlist >= 0)
	{
		UnlockReleaseBuffer(w.buf);
		heads[curlist] = w.cur;
	}
	tuplesort_end(bs->sort);
	bs->sort = NULL;

	/* list heads into the component records and the metapage */
	for (int k = 0; k < bs->K; k++)
	{
		BlockNumber blk;
		uint32		off;
		Buffer		buf;

		gmmivf_comp_locate(meta, k, &blk, &off);
		buf = ReadBuffer(bs->index, blk);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		gmmivf_comp_header(BufferGetPage(buf), off)->list = heads[k];
		MarkBufferDirty(buf);
		UnlockReleaseBuffer(buf);
	}
	meta->metalist = heads[bs->K];
	meta->dims = bs->dims;
	meta->build_rows = bs->rows;
	meta->build_copies = bs->copies;
	{
		Buffer		buf = ReadBuffer(bs->index, GMMIVF_METAPAGE_BLKNO);

		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		memcpy(GmmIvfPageGetMeta(BufferGetPage(buf)), meta, sizeof(GmmIvfMetaPageData));
		MarkBufferDirty(buf);
		UnlockReleaseBuffer(buf);
	}
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) written);
}

IndexBuildResult *
gmmivfbuild(Relation heap, Relation index, IndexInfo *indexInfo)
{
	IndexBuildResult *result;
	GmmIvfBuildState bs;
	GmmIvfMetaPageData meta;
	MemoryContext buildctx,
				old;
	double		reltuples;
	instr_time	t0,
				t1,
				t2,
				t3,
				t4;

	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));

	buildctx = AllocSetContextCreate(CurrentMemoryContext, "gmmivf build", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(buildctx);

	MemSet(&bs, 0, sizeof(bs));
	bs.heap = heap;
	bs.index = index;
	bs.indexInfo = indexInfo;
	bs.metric = gmmivf_get_metric(index);
	bs.opts = gmmivf_get_options(index);
	bs.lists = bs.opts->lists;
	bs.max_assign = bs.opts->max_assign;
	bs.temperature = (float) bs.opts->temperature;
	bs.tmpctx = AllocSetContextCreate(buildctx, "gmmivf build tuple", ALLOCSET_DEFAULT_SIZES);

	reltuples = heap->rd_rel->reltuples;
	bs.tuples_total = reltuples > 0 ? reltuples : 0;
	if (bs.opts->sample_rows > 0)
		bs.targrows = Max(bs.opts->sample_rows, bs.lists);
	else if (gmmivf_engine_gpu_usable())
	{
		/* the GPU trains on the whole table when maintenance_work_mem holds it */
		bs.targrows = INT_MAX / 2;
		bs.sample_auto_all = true;
	}
	else
		bs.targrows = Max(10000, 64 * bs.lists);

	/* 1. sample */
	INSTR_TIME_SET_CURRENT(t0);
	sample_rows(&bs);
	INSTR_TIME_SET_CURRENT(t1);

	/* 2. train */
	if (bs.nsamples > 0)
	{
		bs.K = Min(bs.lists, bs.nsamples);
		if (bs.nsamples < bs.lists)
			ereport(NOTICE,
					(errmsg("gmmivf index \"%s\" created with %d lists instead of %d: only %d rows to train on",
							RelationGetRelationName(index), bs.K, bs.lists, bs.nsamples),
					 errdetail("Recall will be low."),
					 errhint("REINDEX when the table has more rows.")));
		hold_out_rows(&bs);
		train(&bs);
		bs.tau = bs.opts->tau > 0 ? (float) bs.opts->tau : 1.0f / bs.K;
		bs.max_assign = Min(bs.max_assign, bs.K);
		if (bs.opts->copies > 0 && bs.K > 1 && bs.max_assign > 1)
			bs.temperature = pick_temperature(&bs, bs.opts->copies);
	}
	else
	{
		bs.K = 0;
		bs.tau = 0;
	}
	if (bs.samples)
	{
		pfree(bs.samples);
		bs.samples = NULL;
	}

	INSTR_TIME_SET_CURRENT(t2);
	fill_meta(&bs, &meta);
	write_model_pages(&bs, &meta);

	/* 3. assign and 4. write */
	assign_rows(&bs);
	INSTR_TIME_SET_CURRENT(t3);
	write_lists(&bs, &meta);

	if (RelationNeedsWAL(index))
		log_newpage_range(index, MAIN_FORKNUM, 0, RelationGetNumberOfBlocks(index), true);
	INSTR_TIME_SET_CURRENT(t4);
	INSTR_TIME_SUBTRACT(t4, t3);
	INSTR_TIME_SUBTRACT(t3, t2);
	INSTR_TIME_SUBTRACT(t2, t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	elog(DEBUG1, "gmmivf build of \"%s\": %d lists, %.0f rows, %.0f copies; sampling %.0f ms (%d rows), training %.0f ms (%s), assigning %.0f ms, writing %.0f ms",
		 RelationGetRelationName(index), bs.K, bs.rows, bs.copies,
		 INSTR_TIME_GET_MILLISEC(t1), bs.nsamples, INSTR_TIME_GET_MILLISEC(t2),
		 bs.use_gpu ? "GPU" : "CPU", INSTR_TIME_GET_MILLISEC(t3), INSTR_TIME_GET_MILLISEC(t4));

	ExecDropSingleTupleTableSlot(bs.slot);
	ExecDropSingleTupleTableSlot(bs.rslot);
	MemoryContextSwitchTo(old);

	result = (IndexBuildResult *) palloc(sizeof(IndexBuildResult));
	result->heap_tuples = bs.reltuples;
	result->index_tuples = bs.copies;
	MemoryContextDelete(buildctx);	/* frees the engine model too */
	return result;
}

/* Init fork of an unlogged index: a metapage with no model (see gmmivf.h). */
void
gmmivfbuildempty(Relation index)
{
	Page		page = (Page) palloc(BLCKSZ);
	GmmIvfMetaPage meta;

	gmmivf_init_page(page, GMMIVF_PAGE_META);
	meta = GmmIvfPageGetMeta(page);
	MemSet(meta, 0, sizeof(GmmIvfMetaPageData));
	meta->magic = GMMIVF_MAGIC;
	meta->version = GMMIVF_VERSION;
	meta->metric = gmmivf_get_metric(index);
	meta->cov = gmmivf_option_cov(gmmivf_get_options(index));
	meta->comp_start = GMMIVF_FIRST_COMP_BLKNO;
	meta->metalist.head = meta->metalist.insert = InvalidBlockNumber;
	meta->build_id = pg_prng_uint32(&pg_global_prng_state);
	set_meta_lower(page);

	PageSetChecksumInplace(page, GMMIVF_METAPAGE_BLKNO);
	smgrwrite(RelationGetSmgr(index), INIT_FORKNUM, GMMIVF_METAPAGE_BLKNO, (char *) page, true);
	log_newpage(&(RelationGetSmgr(index))->smgr_rnode.node, INIT_FORKNUM,
				GMMIVF_METAPAGE_BLKNO, page, true);
	smgrimmedsync(RelationGetSmgr(index), INIT_FORKNUM);
	pfree(page);
}
