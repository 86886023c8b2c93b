/*
 * gmmivf_cost.c - cost estimate.
 *
 * The index only serves ORDER BY <distance operator>: without ORDER BY its
 * cost is infinite so the planner never picks it for a plain scan.  With
 * ORDER BY, a scan reads the meta list and flashgmm.probes of the K lists
 * before it returns its first row, so that share of the index is startup
 * cost (list pages are read mostly sequentially); see below for the total.
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "optimizer/optimizer.h"
#include "utils/float.h"
#include "utils/rel.h"
#include "utils/selfuncs.h"
#include "utils/spccache.h"

#include "gmmivf.h"

void
gmmivfcostestimate(PlannerInfo *root, IndexPath *path, double loop_count,
				   Cost *indexStartupCost, Cost *indexTotalCost,
				   Selectivity *indexSelectivity, double *indexCorrelation,
				   double *indexPages)
{
	GenericCosts costs;
	Relation	index;
	GmmIvfMetaPageData meta;
	double		ratio;
	double		spc_seq_page_cost;
	double		cpu,
				pages,
				heap_pages,
				total;

	if (path->indexorderbys == NIL)
	{
		*indexStartupCost = get_float8_infinity();
		*indexTotalCost = get_float8_infinity();
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}

	index = index_open(path->indexinfo->indexoid, NoLock);
	gmmivf_read_meta(index, &meta);
	index_close(index, NoLock);

	if (meta.nlists > 0)
		ratio = Min(1.0, (double) gmmivf_probes / meta.nlists);
	else
		ratio = 1.0;			/* no model: every row is in the meta list */

	/*
	 * Total cost: reading every list, what returning every row takes (with
	 * flashgmm.iterative_scan).  Startup cost: the probed share, read before
	 * the first row comes out.  ORDER BY ... LIMIT k costs about the startup
	 * cost; ORDER BY without LIMIT costs a full read, so the planner prefers
	 * an exact sort there.
	 */
	MemSet(&costs, 0, sizeof(costs));
	costs.numIndexTuples = path->indexinfo->tuples;
	genericcostestimate(root, path, loop_count, &costs);
	get_tablespace_page_costs(path->indexinfo->reltablespace, NULL, &spc_seq_page_cost);

	/* what genericcostestimate charged besides page reads: tuples and operators */
	cpu = costs.indexTotalCost - costs.numIndexPages * costs.spc_random_page_cost;
	if (cpu < 0)
		cpu = 0;

	/*
	 * Pages: list pages are chained and mostly consecutive (half random,
	 * half sequential).  The index stores every vector inline, while the
	 * heap usually keeps large ones in TOAST, which a sequential scan's cost
	 * does not count: charge no more pages than the heap's main fork has, so
	 * the comparison with a sequential scan stays fair.
	 */
	pages = costs.numIndexPages;
	heap_pages = path->indexinfo->rel->pages;
	if (heap_pages > 0 && pages > heap_pages)
		pages = heap_pages;
	total = pages * (0.5 * costs.spc_random_page_cost + 0.5 * spc_seq_page_cost) + cpu;

	*indexStartupCost = total * ratio;
	*indexTotalCost = total;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}
