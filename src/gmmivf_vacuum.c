/*
 * gmmivf_vacuum.c - remove dead heap TIDs from every list they stand in.
 *
 * Every fragment carries its TID, so each page is cleaned on its own with
 * PageIndexMultiDelete under GenericXLog.  Pages stay in their chain; when a
 * pass frees room, the list's insert page is pointed back at the first page
 * with room for a whole vector, and inserts fill the freed space from there
 * on (vectors split over pages only at the tail).  REINDEX compacts lists.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "access/genam.h"
#include "commands/vacuum.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/tuplestore.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/indexfsm.h"
#include "utils/rel.h"

#include "gmmivf.h"

typedef struct ListRef
{
	BlockNumber head;			/* first page of the list */
	BlockNumber headblk;		/* page holding its GmmIvfListHead */
	uint32		headoff;		/* byte offset of the GmmIvfListHead in that page */
} ListRef;

/* All lists: the meta list and every component's list. */
static ListRef *
list_refs(Relation index, int *nlists, int *dims)
{
	GmmIvfMetaPageData meta;
	ListRef    *refs;
	int			n = 0;

	gmmivf_read_meta(index, &meta);
	*dims = meta.dims;
	refs = palloc(sizeof(ListRef) * (meta.nlists + 1));
	refs[n].head = meta.metalist.head;
	refs[n].headblk = GMMIVF_METAPAGE_BLKNO;
	refs[n].headoff = gmmivf_meta_list_offset();
	n++;
	for (int k = 0; k < meta.nlists; k++)
	{
		BlockNumber blk;
		uint32		off;
		Buffer		buf;

		gmmivf_comp_locate(&meta, k, &blk, &off);
		buf = ReadBuffer(index, blk);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		refs[n].head = gmmivf_comp_header(BufferGetPage(buf), off)->list.head;
		refs[n].headblk = blk;
		refs[n].headoff = gmmivf_comp_list_offset(off);
		UnlockReleaseBuffer(buf);
		n++;
	}
	*nlists = n;
	return refs;
}

/*
 * Point the list's insert page back at the first page where VACUUM freed room
 * for a whole vector; inserts walk on from there to the tail (see
 * gmmivf_append_vector), so an earlier page is always a valid insert page.
 */
static void
set_insert_page(Relation index, const ListRef *ref, BlockNumber blk)
{
	Buffer		buf = ReadBuffer(index, ref->headblk);
	GmmIvfListHead *lh;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	lh = (GmmIvfListHead *) ((char *) BufferGetPage(buf) + ref->headoff);
	if (lh->insert != blk && lh->head == ref->head)
	{
		GenericXLogState *state = GenericXLogStart(index);
		Page		page = GenericXLogRegisterBuffer(state, buf, 0);

		((GmmIvfListHead *) ((char *) page + ref->headoff))->insert = blk;
		GenericXLogFinish(state);
	}
	UnlockReleaseBuffer(buf);
}

/*
 * Walk every list; with a callback, delete the entries it reports dead.
 * Counts vectors (first fragments), not fragments.
 */
static void
walk_lists(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
		   IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation	index = info->index;
	int			nlists,
				dims;
	ListRef    *refs = list_refs(index, &nlists, &dims);
	OffsetNumber *dead = palloc(sizeof(OffsetNumber) * MaxOffsetNumber);
	BufferAccessStrategy bas = info->strategy;
	/* room a whole vector (or its largest fragment) needs */
	Size		room = MAXALIGN(GMMIVF_ITEM_HDRSZ + sizeof(float4) * Min(Max(dims, 1), GMMIVF_PAGE_MAX_FLOATS));

	for (int l = 0; l < nlists; l++)
	{
		BlockNumber blk = refs[l].head;
		BlockNumber first_free = InvalidBlockNumber;
		bool		freed = false;

		while (BlockNumberIsValid(blk))
		{
			Buffer		buf;
			Page		page;
			int			ndead = 0;
			OffsetNumber maxoff;

			vacuum_delay_point();
			buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, bas);
			LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
			page = BufferGetPage(buf);
			maxoff = PageGetMaxOffsetNumber(page);
			for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off = OffsetNumberNext(off))
			{
				GmmIvfItemHeader *ih = (GmmIvfItemHeader *) PageGetItem(page, PageGetItemId(page, off));

				if (callback && callback(&ih->heaptid, callback_state))
				{
					dead[ndead++] = off;
					if (ih->start == 0)
						stats->tuples_removed += 1;
				}
				else if (ih->start == 0)
					stats->num_index_tuples += 1;
			}
			if (ndead > 0)
			{
				GenericXLogState *state = GenericXLogStart(index);

				page = GenericXLogRegisterBuffer(state, buf, 0);
				PageIndexMultiDelete(page, dead, ndead);
				GenericXLogFinish(state);
				freed = true;
			}
			if (!BlockNumberIsValid(first_free) && PageGetFreeSpace(page) >= room)
				first_free = blk;
			blk = GmmIvfPageGetOpaque(page)->nextblk;
			UnlockReleaseBuffer(buf);
		}
		if (freed && BlockNumberIsValid(first_free))
			set_insert_page(index, &refs[l], first_free);
	}
	pfree(dead);
	pfree(refs);
}

IndexBulkDeleteResult *
gmmivfbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
				 IndexBulkDeleteCallback callback, void *callback_state)
{
	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
	stats->num_index_tuples = 0;
	walk_lists(info, stats, callback, callback_state);
	stats->num_pages = RelationGetNumberOfBlocks(info->index);
	return stats;
}

IndexBulkDeleteResult *
gmmivfvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	if (info->analyze_only)
		return stats;
	if (stats == NULL)
	{
		/* no bulkdelete pass: count the entries */
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
		walk_lists(info, stats, NULL, NULL);
	}
	stats->num_pages = RelationGetNumberOfBlocks(info->index);
	/* a row stands in several lists: the count is of list entries */
	stats->estimated_count = false;
	return stats;
}

/*
 * flashgmm_lists(regclass): one row per list - the component's weight, the
 * vectors the list holds (dead ones not yet vacuumed included) and its pages.
 * List -1 is the meta list.  For tests and benchmarks (list balance).
 */
PG_FUNCTION_INFO_V1(flashgmm_lists);
Datum
flashgmm_lists(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Relation	index;
	GmmIvfMetaPageData meta;
	ListRef    *refs;
	int			nlists,
				dims;

	InitMaterializedSRF(fcinfo, 0);
	index = index_open(relid, AccessShareLock);
	if (index->rd_indam->ambuild != gmmivfbuild)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a gmmivf index", RelationGetRelationName(index))));
	gmmivf_read_meta(index, &meta);
	refs = list_refs(index, &nlists, &dims);

	for (int l = 0; l < nlists; l++)
	{
		Datum		values[4];
		bool		nulls[4] = {0};
		BlockNumber blk = refs[l].head;
		int64		entries = 0;
		int32		pages = 0;

		values[0] = Int32GetDatum(l - 1);
		if (l == 0)
			nulls[1] = true;
		else
		{
			BlockNumber cblk;
			uint32		off;
			Buffer		buf;

			gmmivf_comp_locate(&meta, l - 1, &cblk, &off);
			buf = ReadBuffer(index, cblk);
			LockBuffer(buf, BUFFER_LOCK_SHARE);
			values[1] = Float4GetDatum(gmmivf_comp_header(BufferGetPage(buf), off)->weight);
			UnlockReleaseBuffer(buf);
		}
		while (BlockNumberIsValid(blk))
		{
			Buffer		buf = ReadBuffer(index, blk);
			Page		page;
			OffsetNumber maxoff;

			LockBuffer(buf, BUFFER_LOCK_SHARE);
			page = BufferGetPage(buf);
			maxoff = PageGetMaxOffsetNumber(page);
			for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off = OffsetNumberNext(off))
			{
				GmmIvfItemHeader *ih = (GmmIvfItemHeader *) PageGetItem(page, PageGetItemId(page, off));

				entries += ih->start == 0;
			}
			pages++;
			blk = GmmIvfPageGetOpaque(page)->nextblk;
			UnlockReleaseBuffer(buf);
			CHECK_FOR_INTERRUPTS();
		}
		values[2] = Int64GetDatum(entries);
		values[3] = Int32GetDatum(pages);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	index_close(index, AccessShareLock);
	return (Datum) 0;
}
