/*
 * gmmivf_vacuum.c - remove dead heap TIDs from every list they stand in.
 *
 * Every fragment carries its TID, so each page is cleaned on its own with
 * PageIndexMultiDelete under GenericXLog.  Pages emptied this way stay in
 * their chain; their space is reused when they are the list's insert page,
 * and REINDEX compacts the lists.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/indexfsm.h"
#include "utils/rel.h"

#include "gmmivf.h"

/* All list heads: the meta list and every component's list. */
static BlockNumber *
list_heads(Relation index, int *nheads)
{
	GmmIvfMetaPageData meta;
	BlockNumber *heads;
	int			n = 0;

	gmmivf_read_meta(index, &meta);
	heads = palloc(sizeof(BlockNumber) * (meta.nlists + 1));
	heads[n++] = meta.metalist.head;
	for (int k = 0; k < meta.nlists; k++)
	{
		BlockNumber blk;
		uint32		off;
		Buffer		buf;

		gmmivf_comp_locate(&meta, k, &blk, &off);
		buf = ReadBuffer(index, blk);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		heads[n++] = gmmivf_comp_header(BufferGetPage(buf), off)->list.head;
		UnlockReleaseBuffer(buf);
	}
	*nheads = n;
	return heads;
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
	int			nheads;
	BlockNumber *heads = list_heads(index, &nheads);
	OffsetNumber *dead = palloc(sizeof(OffsetNumber) * MaxOffsetNumber);
	BufferAccessStrategy bas = info->strategy;

	for (int l = 0; l < nheads; l++)
	{
		BlockNumber blk = heads[l];

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
			}
			blk = GmmIvfPageGetOpaque(page)->nextblk;
			UnlockReleaseBuffer(buf);
		}
	}
	pfree(dead);
	pfree(heads);
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
