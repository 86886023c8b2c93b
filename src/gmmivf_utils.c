/*
 * gmmivf_utils.c - page utilities: page init, metapage, component records,
 * the model cache, appending a vector to a posting list.
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/generic_xlog.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "gmmivf.h"

void
gmmivf_init_page(Page page, uint16 flags)
{
	GmmIvfPageOpaque opaque;

	PageInit(page, BLCKSZ, sizeof(GmmIvfPageOpaqueData));
	opaque = GmmIvfPageGetOpaque(page);
	opaque->nextblk = InvalidBlockNumber;
	opaque->flags = flags;
	opaque->page_id = GMMIVF_PAGE_ID;
}

/* A new page at the end of the relation, returned exclusively locked. */
Buffer
gmmivf_new_buffer(Relation index, ForkNumber forknum)
{
	Buffer		buf;
	bool		needlock = !RELATION_IS_LOCAL(index);

	if (needlock)
		LockRelationForExtension(index, ExclusiveLock);
	buf = ReadBufferExtended(index, forknum, P_NEW, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	if (needlock)
		UnlockRelationForExtension(index, ExclusiveLock);
	return buf;
}

void
gmmivf_read_meta(Relation index, GmmIvfMetaPageData *meta)
{
	Buffer		buf;
	Page		page;
	GmmIvfMetaPage m;

	buf = ReadBuffer(index, GMMIVF_METAPAGE_BLKNO);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	m = GmmIvfPageGetMeta(page);
	if (PageIsNew(page) || m->magic != GMMIVF_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" is not a valid gmmivf index", RelationGetRelationName(index))));
	if (m->version != GMMIVF_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("gmmivf index \"%s\" has format version %u, this build reads version %d",
						RelationGetRelationName(index), m->version, GMMIVF_VERSION),
				 errhint("REINDEX the index.")));
	memcpy(meta, m, sizeof(GmmIvfMetaPageData));
	UnlockReleaseBuffer(buf);
}

FlashgmmMetric
gmmivf_get_metric(Relation index)
{
	FmgrInfo   *proc = index_getprocinfo(index, 1, GMMIVF_METRIC_PROC);
	int32		m = DatumGetInt32(FunctionCall1(proc, PointerGetDatum(NULL)));

	if (m < FLASHGMM_METRIC_L2 || m > FLASHGMM_METRIC_COSINE)
		elog(ERROR, "gmmivf: support function 1 returned unknown metric %d", m);
	return (FlashgmmMetric) m;
}

GmmIvfOptions *
gmmivf_get_options(Relation index)
{
	static GmmIvfOptions defaults;

	if (index->rd_options)
		return (GmmIvfOptions *) index->rd_options;
	defaults.lists = GMMIVF_DEFAULT_LISTS;
	defaults.max_assign = GMMIVF_DEFAULT_MAX_ASSIGN;
	defaults.tau = GMMIVF_DEFAULT_TAU;
	defaults.temperature = GMMIVF_DEFAULT_TEMPERATURE;
	defaults.copies = GMMIVF_DEFAULT_COPIES;
	defaults.sample_rows = GMMIVF_DEFAULT_SAMPLE_ROWS;
	defaults.iterations = GMMIVF_DEFAULT_ITERATIONS;
	defaults.seed = GMMIVF_DEFAULT_SEED;
	defaults.covarianceOffset = 0;
	defaults.weightsOffset = 0;
	return &defaults;
}

bool
gmmivf_option_equal_weights(GmmIvfOptions *opts)
{
	const char *w = opts->weightsOffset != 0 ? (char *) opts + opts->weightsOffset : GMMIVF_DEFAULT_WEIGHTS;

	return strcmp(w, "equal") == 0;
}

gmm_cov_type
gmmivf_option_cov(GmmIvfOptions *opts)
{
	if (opts->covarianceOffset != 0 &&
		strcmp((char *) opts + opts->covarianceOffset, "diag") == 0)
		return GMM_COV_DIAG;
	return GMM_COV_SPHERICAL;
}

/*
 * Component record layout (see gmmivf.h).
 */
void
gmmivf_comp_layout(int K, int D, gmm_cov_type cov, uint32 *rec_size,
				   uint32 *recs_per_page, uint32 *pages_per_rec, BlockNumber *npages)
{
	uint32		size = sizeof(GmmIvfCompHeader) +
		sizeof(float4) * (uint32) (gmm_var_len(cov, D) + D);
	uint32		cap = GMMIVF_COMP_CAPACITY;

	*rec_size = size;
	if (size <= cap)
	{
		*recs_per_page = cap / size;
		*pages_per_rec = 0;
		*npages = K == 0 ? 0 : (K + *recs_per_page - 1) / *recs_per_page;
	}
	else
	{
		*recs_per_page = 0;
		*pages_per_rec = (size + cap - 1) / cap;
		*npages = (BlockNumber) K * *pages_per_rec;
	}
}

void
gmmivf_comp_locate(const GmmIvfMetaPageData *meta, int k, BlockNumber *blk, uint32 *off)
{
	if (meta->recs_per_page > 0)
	{
		*blk = meta->comp_start + k / meta->recs_per_page;
		*off = (k % meta->recs_per_page) * meta->rec_size;
	}
	else
	{
		*blk = meta->comp_start + (BlockNumber) k * meta->pages_per_rec;
		*off = 0;
	}
}

GmmIvfCompHeader *
gmmivf_comp_header(Page page, uint32 off)
{
	return (GmmIvfCompHeader *) (PageGetContents(page) + off);
}

uint32
gmmivf_meta_list_offset(void)
{
	return MAXALIGN(SizeOfPageHeaderData) + offsetof(GmmIvfMetaPageData, metalist);
}

uint32
gmmivf_comp_list_offset(uint32 off)
{
	return MAXALIGN(SizeOfPageHeaderData) + off + offsetof(GmmIvfCompHeader, list);
}

/* Read rec_size bytes of component k into dst (records may span pages). */
static void
read_comp_record(Relation index, const GmmIvfMetaPageData *meta, int k, char *dst)
{
	BlockNumber blk;
	uint32		off;
	uint32		left = meta->rec_size;

	gmmivf_comp_locate(meta, k, &blk, &off);
	while (left > 0)
	{
		Buffer		buf = ReadBuffer(index, blk);
		Page		page;
		uint32		n = Min(left, GMMIVF_COMP_CAPACITY - off);

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!(GmmIvfPageGetOpaque(page)->flags & GMMIVF_PAGE_COMP))
			ereport(ERROR,
					(errcode(ERRCODE_INDEX_CORRUPTED),
					 errmsg("gmmivf index \"%s\": block %u is not a component page",
							RelationGetRelationName(index), blk)));
		memcpy(dst, PageGetContents(page) + off, n);
		UnlockReleaseBuffer(buf);
		dst += n;
		left -= n;
		off = 0;
		blk++;
	}
}

/*
 * Model cache.  Models are allocated by the engine (malloc); we keep a few
 * per backend, keyed by index OID, relfilenode and build id (a rebuild in
 * place - TRUNCATE in the creating transaction - keeps the relfilenode).
 */
#define MODEL_CACHE_SIZE 8

typedef struct ModelCacheEntry
{
	Oid			relid;
	RelFileNode node;
	uint32		build_id;
	gmm_model  *model;
} ModelCacheEntry;

static ModelCacheEntry model_cache[MODEL_CACHE_SIZE];
static int	model_cache_next = 0;

const gmm_model *
gmmivf_get_model(Relation index, const GmmIvfMetaPageData *meta)
{
	ModelCacheEntry *e;
	gmm_model  *m;
	gmm_error	err;
	gmm_status	st;
	char	   *rec;
	int			K = meta->nlists,
				D = meta->dims;
	int			vlen = gmm_var_len((gmm_cov_type) meta->cov, D);

	Assert(K > 0);
	for (int i = 0; i < MODEL_CACHE_SIZE; i++)
	{
		e = &model_cache[i];
		if (e->model && e->relid == RelationGetRelid(index) &&
			RelFileNodeEquals(e->node, index->rd_node) && e->build_id == meta->build_id)
			return e->model;
	}

	m = gmm_model_alloc(K, D, (gmm_cov_type) meta->cov, &err);
	if (m == NULL)
		gmmivf_ereport_engine(err.code ? err.code : GMM_ENOMEM, &err, "loading the model");
	rec = palloc(meta->rec_size);
	PG_TRY();
	{
		for (int k = 0; k < K; k++)
		{
			GmmIvfCompHeader *h = (GmmIvfCompHeader *) rec;
			float4	   *f = (float4 *) (rec + sizeof(GmmIvfCompHeader));

			read_comp_record(index, meta, k, rec);
			m->weights[k] = h->weight;
			memcpy(m->vars + (size_t) k * vlen, f, sizeof(float4) * vlen);
			memcpy(m->means + (size_t) k * D, f + vlen, sizeof(float4) * D);
		}
	}
	PG_CATCH();
	{
		gmm_model_free(m);
		PG_RE_THROW();
	}
	PG_END_TRY();
	pfree(rec);
	st = gmm_model_prepare(m, &err);
	if (st != GMM_OK)
	{
		gmm_model_free(m);
		gmmivf_ereport_engine(st, &err, "loading the model");
	}

	e = &model_cache[model_cache_next];
	model_cache_next = (model_cache_next + 1) % MODEL_CACHE_SIZE;
	if (e->model)
		gmm_model_free(e->model);
	e->relid = RelationGetRelid(index);
	e->node = index->rd_node;
	e->build_id = meta->build_id;
	e->model = m;
	return m;
}

/*
 * Floats of a vector with `remaining` floats left to write that go on this
 * page now: all of them when they fit; when the rest is longer than any page
 * holds, as many as fit (at least 64, to avoid slivers); else 0 (start a new
 * page).
 */
int
gmmivf_fit_floats(Page page, int remaining)
{
	Size		freespace = PageGetFreeSpace(page);
	int			nfit = 0;

	if (MAXALIGN_DOWN(freespace) > GMMIVF_ITEM_HDRSZ)
		nfit = (MAXALIGN_DOWN(freespace) - GMMIVF_ITEM_HDRSZ) / sizeof(float4);
	if (remaining <= nfit)
		return remaining;
	if (remaining > GMMIVF_PAGE_MAX_FLOATS && nfit >= 64)
		return nfit;
	return 0;
}

/* Fill item (GMMIVF_ITEM_HDRSZ + 4n bytes) and return its size. */
Size
gmmivf_form_item(char *item, ItemPointer tid, int start, int n, const float4 *floats)
{
	GmmIvfItemHeader *ih = (GmmIvfItemHeader *) item;

	MemSet(item, 0, GMMIVF_ITEM_HDRSZ);
	ih->heaptid = *tid;
	ih->nfloats = (uint16) n;
	ih->start = (uint32) start;
	memcpy(GMMIVF_ITEM_FLOATS(item), floats, sizeof(float4) * n);
	return GMMIVF_ITEM_HDRSZ + sizeof(float4) * n;
}

/*
 * Append (tid, vec) to the list whose head lives at byte headoff of block
 * headblk.  The head page stays exclusively locked for the whole append, so
 * appends to one list are serialised and the fragments of a vector that
 * spans pages follow each other.  Every page change is WAL-logged with
 * GenericXLog.
 */
void
gmmivf_append_vector(Relation index, BlockNumber headblk, uint32 headoff,
					 ItemPointer tid, const float4 *vec, int dim)
{
	Buffer		hbuf,
				buf;
	GenericXLogState *state;
	GmmIvfListHead *lh;
	Page		page,
				hpage;
	int			done = 0;
	char	   *item;

	item = palloc(GMMIVF_ITEM_HDRSZ + sizeof(float4) * (Size) Min(dim, GMMIVF_PAGE_MAX_FLOATS));

	hbuf = ReadBuffer(index, headblk);
	LockBuffer(hbuf, BUFFER_LOCK_EXCLUSIVE);
	lh = (GmmIvfListHead *) ((char *) BufferGetPage(hbuf) + headoff);

	if (lh->insert == InvalidBlockNumber)
	{
		buf = gmmivf_new_buffer(index, MAIN_FORKNUM);
		state = GenericXLogStart(index);
		hpage = GenericXLogRegisterBuffer(state, hbuf, 0);
		page = GenericXLogRegisterBuffer(state, buf, GENERIC_XLOG_FULL_IMAGE);
		gmmivf_init_page(page, GMMIVF_PAGE_POSTING);
		lh = (GmmIvfListHead *) ((char *) hpage + headoff);
		lh->head = lh->insert = BufferGetBlockNumber(buf);
		GenericXLogFinish(state);
	}
	else
	{
		buf = ReadBuffer(index, lh->insert);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	}

	for (;;)
	{
		Page		cur = BufferGetPage(buf);
		BlockNumber next = GmmIvfPageGetOpaque(cur)->nextblk;
		int			n = gmmivf_fit_floats(cur, dim - done);
		Buffer		newbuf;
		Page		npage;

		/*
		 * Not at the tail (VACUUM pointed the insert page back at space it
		 * freed): only a whole vector goes here, so fragments of a split
		 * vector always follow each other at the tail.  Else move on.
		 */
		if (BlockNumberIsValid(next) && (done > 0 || n != dim))
		{
			newbuf = ReadBuffer(index, next);
			LockBuffer(newbuf, BUFFER_LOCK_EXCLUSIVE);
			UnlockReleaseBuffer(buf);
			buf = newbuf;
			state = GenericXLogStart(index);
			hpage = GenericXLogRegisterBuffer(state, hbuf, 0);
			((GmmIvfListHead *) ((char *) hpage + headoff))->insert = next;
			GenericXLogFinish(state);
			continue;
		}

		if (n > 0)
		{
			Size		sz = gmmivf_form_item(item, tid, done, n, vec + done);

			state = GenericXLogStart(index);
			page = GenericXLogRegisterBuffer(state, buf, 0);
			if (PageAddItem(page, (Item) item, sz, InvalidOffsetNumber, false, false) == InvalidOffsetNumber)
				elog(ERROR, "gmmivf: failed to add item to \"%s\"", RelationGetRelationName(index));
			GenericXLogFinish(state);
			done += n;
			if (done == dim)
				break;
		}

		/* chain a new page */
		newbuf = gmmivf_new_buffer(index, MAIN_FORKNUM);
		state = GenericXLogStart(index);
		page = GenericXLogRegisterBuffer(state, buf, 0);
		npage = GenericXLogRegisterBuffer(state, newbuf, GENERIC_XLOG_FULL_IMAGE);
		hpage = GenericXLogRegisterBuffer(state, hbuf, 0);
		gmmivf_init_page(npage, GMMIVF_PAGE_POSTING);
		GmmIvfPageGetOpaque(page)->nextblk = BufferGetBlockNumber(newbuf);
		((GmmIvfListHead *) ((char *) hpage + headoff))->insert = BufferGetBlockNumber(newbuf);
		GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
		buf = newbuf;
	}

	UnlockReleaseBuffer(buf);
	UnlockReleaseBuffer(hbuf);
	pfree(item);
}

/* Scale x to unit length; false (x untouched) for the zero vector. */
bool
gmmivf_normalize(float4 *x, int dim)
{
	double		s = 0;

	for (int i = 0; i < dim; i++)
		s += (double) x[i] * x[i];
	if (s <= 0 || !isfinite(s))
		return false;
	s = 1.0 / sqrt(s);
	for (int i = 0; i < dim; i++)
		x[i] = (float4) (x[i] * s);
	return true;
}

void
gmmivf_ereport_engine(gmm_status st, const gmm_error *err, const char *what)
{
	int			code;
	const char *msg = (err && err->msg[0]) ? err->msg : gmm_status_name(st);

	switch (st)
	{
		case GMM_EINVAL:
			code = ERRCODE_INVALID_PARAMETER_VALUE;
			break;
		case GMM_ENONFINITE:
			code = ERRCODE_DATA_EXCEPTION;
			break;
		case GMM_ENOMEM:
			code = ERRCODE_OUT_OF_MEMORY;
			break;
		case GMM_EDEVICE:
			code = ERRCODE_FEATURE_NOT_SUPPORTED;
			break;
		case GMM_ECANCELED:
			CHECK_FOR_INTERRUPTS();
			code = ERRCODE_QUERY_CANCELED;
			break;
		default:
			code = ERRCODE_INTERNAL_ERROR;
			break;
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg("gmmivf: %s failed: %s", what, msg),
			 errdetail("Engine status: %s.", gmm_status_name(st))));
}

static void
free_model_callback(void *arg)
{
	gmm_model_free((gmm_model *) arg);
}

/* Free an engine-allocated model when cxt is reset or deleted (errors included). */
void
gmmivf_free_model_on_reset(MemoryContext cxt, gmm_model *m)
{
	MemoryContextCallback *cb = MemoryContextAlloc(cxt, sizeof(MemoryContextCallback));

	cb->func = free_model_callback;
	cb->arg = m;
	MemoryContextRegisterResetCallback(cxt, cb);
}
