/*
 * gmmivf_scan.c - ORDER BY scans.
 *
 * On the first amgettuple the lists are ranked for the query (distance to the
 * component mean by default; inner product indexes: largest inner product
 * with the mean; flashgmm.probe_order = posterior: the query's
 * log-posterior).  The meta list and the best flashgmm.probes lists are read;
 * each entry's TID is looked up in the scan's seen-set before its distance is
 * computed, so a row stored in several lists costs one distance and is
 * returned once.  Candidates are kept in a min-heap by exact distance and returned in
 * that order (xs_orderbyvals hold the distances; no recheck).
 *
 * flashgmm.iterative_scan = on: when every candidate has been returned and
 * the executor still asks for rows (a filter rejected them), the next
 * flashgmm.probes lists are read, up to flashgmm.max_probes lists in all.
 * Rows found in those later rounds are returned in distance order among
 * themselves, after the rows of earlier rounds (pgvector's relaxed order).
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "access/relscan.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "gmmivf.h"

typedef struct Candidate
{
	ItemPointerData tid;
	double		dist;
} Candidate;

/* open-addressing set of TIDs (key 0 = empty slot) */
typedef struct TidSet
{
	uint64	   *keys;
	uint64		mask;
	uint64		n;
} TidSet;

typedef struct GmmIvfScanOpaqueData
{
	MemoryContext cxt;			/* lives across rescans; reset by each */
	bool		started;
	GmmIvfMetaPageData meta;
	FlashgmmMetric metric;

	bool		query_null;
	float4	   *query;			/* raw query (distances) */
	int			dim;

	int32	   *order;			/* ranked lists */
	int			norder;			/* lists that may be probed in all */
	int			next_list;		/* next of order[] to probe */
	int			probes;

	Candidate  *cands;
	int64		ncands;
	int64		capcands;

	TidSet		seen;

	/* reassembly of a vector split over pages */
	float4	   *vbuf;
	bool		assembling;
	ItemPointerData asm_tid;
	int			filled;
} GmmIvfScanOpaqueData;

typedef GmmIvfScanOpaqueData *GmmIvfScanOpaque;

static inline uint64
tid_key(ItemPointer tid)
{
	return (((uint64) ItemPointerGetBlockNumberNoCheck(tid)) << 16 |
			ItemPointerGetOffsetNumberNoCheck(tid)) + 1;
}

static inline uint64
tid_hash(uint64 k)
{
	k ^= k >> 33;
	k *= UINT64CONST(0xff51afd7ed558ccd);
	k ^= k >> 33;
	return k;
}

static void
tidset_init(TidSet *s, uint64 cap)
{
	uint64		size = 1024;

	while (size < cap * 2)
		size <<= 1;
	s->keys = palloc_extended(sizeof(uint64) * size, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	s->mask = size - 1;
	s->n = 0;
}

/* Add; false when already present. */
static bool
tidset_add(TidSet *s, ItemPointer tid)
{
	uint64		k = tid_key(tid);
	uint64		i;

	if ((s->n + 1) * 2 > s->mask + 1)
	{
		uint64	   *old = s->keys;
		uint64		oldsize = s->mask + 1;

		s->mask = oldsize * 2 - 1;
		s->keys = palloc_extended(sizeof(uint64) * (s->mask + 1), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
		for (uint64 j = 0; j < oldsize; j++)
		{
			if (old[j] == 0)
				continue;
			i = tid_hash(old[j]) & s->mask;
			while (s->keys[i] != 0)
				i = (i + 1) & s->mask;
			s->keys[i] = old[j];
		}
		pfree(old);
	}
	i = tid_hash(k) & s->mask;
	while (s->keys[i] != 0)
	{
		if (s->keys[i] == k)
			return false;
		i = (i + 1) & s->mask;
	}
	s->keys[i] = k;
	s->n++;
	return true;
}

static int
cmp_candidates(const void *a, const void *b)
{
	const Candidate *x = (const Candidate *) a;
	const Candidate *y = (const Candidate *) b;

	if (x->dist < y->dist)
		return -1;
	if (x->dist > y->dist)
		return 1;
	return ItemPointerCompare((ItemPointer) &x->tid, (ItemPointer) &y->tid);
}

/*
 * Candidates wait in a binary min-heap (by distance, then TID) and are popped
 * one per amgettuple: a query with LIMIT 10 pays O(n + 10 log n) instead of
 * sorting every candidate (the sort was a quarter of the scan's time at
 * probes = 8 on sift-opencv-100k).  The order is that of cmp_candidates, a
 * total order, so rows come out exactly as a full sort would return them.
 */
static inline bool
cand_less(const Candidate *x, const Candidate *y)
{
	return cmp_candidates(x, y) < 0;
}

static void
heap_sift_down(Candidate *h, int64 n, int64 i)
{
	Candidate	c = h[i];

	for (;;)
	{
		int64		l = 2 * i + 1;

		if (l >= n)
			break;
		if (l + 1 < n && cand_less(&h[l + 1], &h[l]))
			l++;
		if (!cand_less(&h[l], &c))
			break;
		h[i] = h[l];
		i = l;
	}
	h[i] = c;
}

static void
heapify_candidates(GmmIvfScanOpaque so)
{
	for (int64 i = so->ncands / 2 - 1; i >= 0; i--)
		heap_sift_down(so->cands, so->ncands, i);
}

/* Remove the nearest candidate into *out; the heap must not be empty. */
static void
pop_candidate(GmmIvfScanOpaque so, Candidate *out)
{
	*out = so->cands[0];
	so->ncands--;
	if (so->ncands > 0)
	{
		so->cands[0] = so->cands[so->ncands];
		heap_sift_down(so->cands, so->ncands, 0);
	}
}

static void
add_candidate(GmmIvfScanOpaque so, ItemPointer tid, const float4 *v)
{
	double		d = 0;

	if (!so->query_null)
	{
		d = flashgmm_distance(so->metric, so->query, v, so->dim);
		gmmivf_last_scan.distances++;
	}
	if (so->ncands == so->capcands)
	{
		so->capcands = Max(1024, so->capcands * 2);
		if (so->cands == NULL)
			so->cands = MemoryContextAllocHuge(so->cxt, sizeof(Candidate) * so->capcands);
		else
			so->cands = repalloc_huge(so->cands, sizeof(Candidate) * so->capcands);
	}
	so->cands[so->ncands].tid = *tid;
	so->cands[so->ncands].dist = d;
	so->ncands++;
}

/* Read one posting list. */
static void
scan_list(IndexScanDesc scan, BlockNumber blk)
{
	GmmIvfScanOpaque so = (GmmIvfScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	int			dim = so->dim;

	if (blk == InvalidBlockNumber)
		return;
	gmmivf_last_scan.lists_probed++;
	so->assembling = false;

	while (BlockNumberIsValid(blk))
	{
		Buffer		buf = ReadBuffer(index, blk);
		Page		page;
		OffsetNumber maxoff;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!(GmmIvfPageGetOpaque(page)->flags & GMMIVF_PAGE_POSTING))
			ereport(ERROR,
					(errcode(ERRCODE_INDEX_CORRUPTED),
					 errmsg("gmmivf index \"%s\": block %u is not a posting page",
							RelationGetRelationName(index), blk)));
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off = OffsetNumberNext(off))
		{
			GmmIvfItemHeader *ih = (GmmIvfItemHeader *) PageGetItem(page, PageGetItemId(page, off));
			const float4 *f = GMMIVF_ITEM_FLOATS(ih);
			int			n = ih->nfloats;

			if ((int64) ih->start + n > dim || n <= 0)
			{
				so->assembling = false;
				continue;		/* not of this dimension: cannot happen */
			}
			if (ih->start == 0)
			{
				so->assembling = false;
				gmmivf_last_scan.tuples_scanned++;
				if (!tidset_add(&so->seen, &ih->heaptid))
				{
					gmmivf_last_scan.duplicates_skipped++;
					continue;	/* later fragments are skipped: not assembling */
				}
				if (n == dim)
				{
					add_candidate(so, &ih->heaptid, f);
					continue;
				}
				memcpy(so->vbuf, f, sizeof(float4) * n);
				so->filled = n;
				so->asm_tid = ih->heaptid;
				so->assembling = true;
			}
			else
			{
				if (!so->assembling || ih->start != (uint32) so->filled ||
					!ItemPointerEquals(&so->asm_tid, &ih->heaptid))
				{
					so->assembling = false;
					continue;	/* rest of a skipped or incomplete vector */
				}
				memcpy(so->vbuf + so->filled, f, sizeof(float4) * n);
				so->filled += n;
				if (so->filled == dim)
				{
					add_candidate(so, &so->asm_tid, so->vbuf);
					so->assembling = false;
				}
			}
		}
		blk = GmmIvfPageGetOpaque(page)->nextblk;
		UnlockReleaseBuffer(buf);
		CHECK_FOR_INTERRUPTS();
	}
	so->assembling = false;
}

static BlockNumber
comp_list_head(Relation index, const GmmIvfMetaPageData *meta, int k)
{
	BlockNumber blk;
	uint32		off;
	Buffer		buf;
	BlockNumber head;

	gmmivf_comp_locate(meta, k, &blk, &off);
	buf = ReadBuffer(index, blk);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	head = gmmivf_comp_header(BufferGetPage(buf), off)->list.head;
	UnlockReleaseBuffer(buf);
	return head;
}

typedef struct RankKey
{
	float		key;
	int32		k;
} RankKey;

static int
cmp_rank_desc(const void *a, const void *b)
{
	const RankKey *x = a,
			   *y = b;

	if (x->key > y->key)
		return -1;
	if (x->key < y->key)
		return 1;
	return x->k - y->k;
}

/* Rank the lists for the query into so->order[0..norder-1]. */
static void
rank_lists(IndexScanDesc scan)
{
	GmmIvfScanOpaque so = (GmmIvfScanOpaque) scan->opaque;
	int			K = so->meta.nlists;
	int			want;

	want = gmmivf_iterative_scan ? Max(gmmivf_probes, gmmivf_max_probes) : gmmivf_probes;
	want = Min(want, K);
	so->norder = want;
	so->order = MemoryContextAlloc(so->cxt, sizeof(int32) * Max(1, want));
	if (want == 0)
		return;

	if (so->query_null)
	{
		for (int i = 0; i < want; i++)
			so->order[i] = i;
		return;
	}
	else
	{
		const gmm_model *m = gmmivf_get_model(scan->indexRelation, &so->meta);
		float4	   *q = palloc(sizeof(float4) * so->dim);

		memcpy(q, so->query, sizeof(float4) * so->dim);
		if (so->metric == FLASHGMM_METRIC_COSINE)
			gmmivf_normalize(q, so->dim);	/* a zero query stays zero */

		if (so->metric == FLASHGMM_METRIC_IP && gmmivf_probe_order == GMM_RANK_DISTANCE)
		{
			RankKey    *rk = palloc(sizeof(RankKey) * K);

			for (int k = 0; k < K; k++)
			{
				double		s = 0;
				const float *mu = m->means + (Size) k * so->dim;

				for (int d = 0; d < so->dim; d++)
					s += (double) q[d] * mu[d];
				rk[k].key = (float) s;
				rk[k].k = k;
			}
			qsort(rk, K, sizeof(RankKey), cmp_rank_desc);
			for (int i = 0; i < want; i++)
				so->order[i] = rk[i].k;
			pfree(rk);
		}
		else
		{
			gmm_error	err;
			gmm_status	st;

			memset(&err, 0, sizeof(err));
			st = gmm_rank(m, q, (gmm_rank_mode) gmmivf_probe_order, want, so->order, NULL, &err);
			if (st != GMM_OK)
				gmmivf_ereport_engine(st, &err, "ranking lists");
		}
		pfree(q);
	}
}

/* Probe the next round of lists; false when there is nothing left to probe. */
static bool
probe_round(IndexScanDesc scan)
{
	GmmIvfScanOpaque so = (GmmIvfScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	int			end;

	if (so->next_list >= so->norder)
		return false;
	end = Min(so->norder, so->next_list + so->probes);
	for (; so->next_list < end; so->next_list++)
	{
		int			k = so->order[so->next_list];

		if (k < 0 || k >= so->meta.nlists)
			continue;
		scan_list(scan, comp_list_head(index, &so->meta, k));
	}
	gmmivf_last_scan.probe_rounds++;
	/* the heap holds what is left of earlier rounds (the meta list) too */
	heapify_candidates(so);
	return true;
}

static void
start_scan(IndexScanDesc scan)
{
	GmmIvfScanOpaque so = (GmmIvfScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	MemoryContext old = MemoryContextSwitchTo(so->cxt);
	GmmIvfListHead metalist;

	gmmivf_read_meta(index, &so->meta);
	metalist = so->meta.metalist;
	so->metric = (FlashgmmMetric) so->meta.metric;
	so->probes = Max(1, gmmivf_probes);
	so->started = true;

	/* no vector was ever indexed: no rows */
	if (so->meta.dims == 0)
	{
		so->norder = 0;
		MemoryContextSwitchTo(old);
		return;
	}
	if (!so->query_null && so->dim != so->meta.dims)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("query vector has %d dimensions, gmmivf index \"%s\" has %d",
						so->dim, RelationGetRelationName(index), so->meta.dims)));
	so->dim = so->meta.dims;
	so->vbuf = palloc(sizeof(float4) * so->dim);
	tidset_init(&so->seen, (uint64) Max(1024.0, so->meta.build_rows * Min(1.0, (double) so->probes / Max(1, so->meta.nlists)) * 2));

	if (so->meta.nlists > 0)
		rank_lists(scan);
	else
		so->norder = 0;

	/* first round: the meta list, then the best `probes` lists, one heap */
	scan_list(scan, metalist.head);
	if (!probe_round(scan))
	{
		gmmivf_last_scan.probe_rounds++;
		heapify_candidates(so);
	}
	MemoryContextSwitchTo(old);
}

IndexScanDesc
gmmivfbeginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	GmmIvfScanOpaque so = palloc0(sizeof(GmmIvfScanOpaqueData));

	so->cxt = AllocSetContextCreate(CurrentMemoryContext, "gmmivf scan", ALLOCSET_DEFAULT_SIZES);
	scan->opaque = so;
	if (norderbys > 0)
	{
		scan->xs_orderbyvals = palloc0(sizeof(Datum) * norderbys);
		scan->xs_orderbynulls = palloc(sizeof(bool) * norderbys);
		memset(scan->xs_orderbynulls, true, sizeof(bool) * norderbys);
	}
	memset(&gmmivf_last_scan, 0, sizeof(gmmivf_last_scan));
	return scan;
}

void
gmmivfrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	GmmIvfScanOpaque so = (GmmIvfScanOpaque) scan->opaque;
	MemoryContext cxt = so->cxt;

	MemoryContextReset(cxt);
	memset(so, 0, sizeof(GmmIvfScanOpaqueData));
	so->cxt = cxt;
	memset(&gmmivf_last_scan, 0, sizeof(gmmivf_last_scan));

	if (keys && scan->numberOfKeys > 0)
		memmove(scan->keyData, keys, scan->numberOfKeys * sizeof(ScanKeyData));
	if (orderbys && scan->numberOfOrderBys > 0)
		memmove(scan->orderByData, orderbys, scan->numberOfOrderBys * sizeof(ScanKeyData));

	so->query_null = true;
	if (scan->numberOfOrderBys > 0 && !(scan->orderByData[0].sk_flags & SK_ISNULL))
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		ArrayType  *a = DatumGetArrayTypePCopy(scan->orderByData[0].sk_argument);
		const float4 *x = flashgmm_vector_check(a, &so->dim, "query vector");

		so->query = palloc(sizeof(float4) * so->dim);
		memcpy(so->query, x, sizeof(float4) * so->dim);
		so->query_null = false;
		MemoryContextSwitchTo(old);
	}
}

bool
gmmivfgettuple(IndexScanDesc scan, ScanDirection dir)
{
	GmmIvfScanOpaque so = (GmmIvfScanOpaque) scan->opaque;
	Candidate	next;

	if (scan->numberOfOrderBys == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("gmmivf indexes can only be scanned with ORDER BY a distance operator")));

	if (!so->started)
		start_scan(scan);

	/* a round's candidates are all returned before the next round is probed */
	while (so->ncands == 0)
	{
		bool		more;
		MemoryContext old;

		if (!gmmivf_iterative_scan)
			return false;
		old = MemoryContextSwitchTo(so->cxt);
		more = probe_round(scan);
		MemoryContextSwitchTo(old);
		if (!more)
			return false;
	}

	pop_candidate(so, &next);
	scan->xs_heaptid = next.tid;
	scan->xs_recheck = false;
	scan->xs_recheckorderby = false;
	if (scan->numberOfOrderBys > 0)
	{
		scan->xs_orderbyvals[0] = Float8GetDatum(next.dist);
		scan->xs_orderbynulls[0] = so->query_null;
	}
	gmmivf_last_scan.tuples_returned++;
	return true;
}

void
gmmivfendscan(IndexScanDesc scan)
{
	GmmIvfScanOpaque so = (GmmIvfScanOpaque) scan->opaque;

	MemoryContextDelete(so->cxt);
	pfree(so);
	scan->opaque = NULL;
}
