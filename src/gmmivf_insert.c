/*
 * gmmivf_insert.c - aminsert: assign the new row with the stored model (soft,
 * like the build) and append it to each chosen list.
 *
 * An index with no model (built on an empty table, or the init fork of an
 * unlogged index) keeps every row in the meta list; the first insert fixes
 * its dimension.  Cosine zero vectors also go to the meta list.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "gmmivf.h"

static void
dim_mismatch(Relation index, int got, int want)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("vector has %d dimensions, gmmivf index \"%s\" has %d", got,
					RelationGetRelationName(index), want)));
}

/* Append to the meta list, fixing the index dimension if it has none yet. */
static void
insert_meta_list(Relation index, ItemPointer tid, const float4 *x, int dim)
{
	Buffer		buf = ReadBuffer(index, GMMIVF_METAPAGE_BLKNO);
	GmmIvfMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	meta = GmmIvfPageGetMeta(BufferGetPage(buf));
	if (meta->dims == 0)
	{
		GenericXLogState *state = GenericXLogStart(index);
		Page		page = GenericXLogRegisterBuffer(state, buf, 0);

		if (dim > GMMIVF_MAX_DIM)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("gmmivf indexes vectors of at most %d dimensions, not %d",
							GMMIVF_MAX_DIM, dim)));
		GmmIvfPageGetMeta(page)->dims = dim;
		GenericXLogFinish(state);
	}
	else if (meta->dims != dim)
		dim_mismatch(index, dim, meta->dims);
	UnlockReleaseBuffer(buf);

	/* another backend may have set the same dimension meanwhile: harmless */
	gmmivf_append_vector(index, GMMIVF_METAPAGE_BLKNO, gmmivf_meta_list_offset(), tid, x, dim);
}

bool
gmmivfinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
			 Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
			 IndexInfo *indexInfo)
{
	MemoryContext cxt,
				old;
	ArrayType  *a;
	const float4 *x;
	int			dim;
	GmmIvfMetaPageData meta;

	if (isnull[0])
		return false;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "gmmivf insert", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);

	a = DatumGetArrayTypeP(values[0]);
	x = flashgmm_vector_check(a, &dim, "indexed vector");
	gmmivf_read_meta(index, &meta);

	if (meta.nlists == 0)
		insert_meta_list(index, heap_tid, x, dim);
	else
	{
		const gmm_model *m;
		float4	   *q = palloc(sizeof(float4) * dim);
		int32	   *comp;
		gmm_error	err;
		gmm_status	st;

		if (dim != meta.dims)
			dim_mismatch(index, dim, meta.dims);
		memcpy(q, x, sizeof(float4) * dim);
		if (meta.metric == FLASHGMM_METRIC_COSINE && !gmmivf_normalize(q, dim))
			insert_meta_list(index, heap_tid, x, dim);
		else
		{
			m = gmmivf_get_model(index, &meta);
			comp = palloc(sizeof(int32) * Max(1, meta.max_assign));
			memset(&err, 0, sizeof(err));
			st = gmm_assign(m, q, 1, meta.max_assign, meta.tau, meta.temperature, comp, NULL, &err);
			if (st != GMM_OK)
				gmmivf_ereport_engine(st, &err, "assigning a row");
			for (int i = 0; i < meta.max_assign; i++)
			{
				BlockNumber blk;
				uint32		off;

				if (comp[i] < 0)
					continue;
				if (comp[i] >= meta.nlists)
					elog(ERROR, "gmmivf: engine assigned component %d of %d", comp[i], meta.nlists);
				gmmivf_comp_locate(&meta, comp[i], &blk, &off);
				gmmivf_append_vector(index, blk, gmmivf_comp_list_offset(off), heap_tid, x, dim);
			}
		}
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return false;
}
