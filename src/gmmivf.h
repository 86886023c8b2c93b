/*
 * gmmivf.h - the gmmivf index access method: on-disk format, options, GUCs
 * and the functions shared by its files.
 *
 * This is the one header that owns the on-disk structs.  Layout of an index:
 *
 *   block 0            metapage (GmmIvfMetaPageData)
 *   blocks 1..C        component pages: K component records written as one
 *                      byte stream.  A record is a GmmIvfCompHeader (weight
 *                      and the head / insert page of the component's
 *                      posting list) followed by the variance floats (1 for
 *                      spherical, D for diag) and the D mean floats.  When a
 *                      record fits in a page, floor(capacity / size) records
 *                      are packed per page and none crosses a page; when it
 *                      does not (D = 4096: 16 kB of mean), every record starts
 *                      on a fresh page and spans ceil(size / capacity) pages.
 *                      Either way the place of record k is computed, not
 *                      stored, and its header never crosses a page.
 *   blocks C+1..       posting pages: chains (opaque->nextblk) of items, one
 *                      chain per list.  An item is a GmmIvfItemHeader (heap
 *                      TID, first float, number of floats) followed by
 *                      floats.  A vector that does not fit in one page is
 *                      split into fragments that carry the same TID and
 *                      follow each other in chain order (inserts into one
 *                      list are serialised by the lock on the page holding
 *                      its list head, so fragments never interleave).
 *
 * The metapage also holds one extra list, the "meta list", scanned by every
 * query: it keeps the rows that have no component - all rows of an index built
 * on an empty table (no model yet: REINDEX trains one), and zero vectors under
 * cosine distance (no direction, so no component can claim them).
 *
 * Vectors are stored as given (cosine: not normalised) so the distance the
 * scan orders by is exactly what the SQL operator returns.
 */
#ifndef FLASHGMM_GMMIVF_H
#define FLASHGMM_GMMIVF_H

#include "postgres.h"

#include "access/amapi.h"
#include "access/generic_xlog.h"
#include "access/itup.h"
#include "access/reloptions.h"
#include "nodes/execnodes.h"
#include "nodes/pathnodes.h"
#include "storage/bufmgr.h"
#include "utils/relcache.h"

#include "engine/gmm.h"
#include "vector_ops.h"

#define GMMIVF_MAGIC			0x474D4956	/* "GMIV" */
#define GMMIVF_VERSION			1
#define GMMIVF_METAPAGE_BLKNO	0
#define GMMIVF_FIRST_COMP_BLKNO	1

/* page kinds (opaque->flags) */
#define GMMIVF_PAGE_META		(1 << 0)
#define GMMIVF_PAGE_COMP		(1 << 1)
#define GMMIVF_PAGE_POSTING		(1 << 2)

#define GMMIVF_PAGE_ID			0xFF91	/* identifies gmmivf pages for tools */

/* bounds */
#define GMMIVF_MAX_LISTS		32768
#define GMMIVF_MAX_DIM			16000
#define GMMIVF_MAX_ASSIGN		32

/* support function 1 returns the FlashgmmMetric of the operator class */
#define GMMIVF_METRIC_PROC		1
#define GMMIVF_NPROCS			1
#define GMMIVF_NSTRATEGIES		1

/* build sub-phases shown in pg_stat_progress_create_index */
#define GMMIVF_PHASE_SAMPLE		2
#define GMMIVF_PHASE_TRAIN		3
#define GMMIVF_PHASE_ASSIGN		4
#define GMMIVF_PHASE_WRITE		5

typedef struct GmmIvfPageOpaqueData
{
	BlockNumber nextblk;		/* next page of the chain (posting pages) */
	uint16		flags;
	uint16		page_id;		/* GMMIVF_PAGE_ID */
} GmmIvfPageOpaqueData;

typedef GmmIvfPageOpaqueData *GmmIvfPageOpaque;

#define GmmIvfPageGetOpaque(page) ((GmmIvfPageOpaque) PageGetSpecialPointer(page))

/* Head of a posting list: in a component record or in the metapage. */
typedef struct GmmIvfListHead
{
	BlockNumber head;			/* first page, InvalidBlockNumber when empty */
	BlockNumber insert;			/* last page: where inserts append */
	uint32		nitems;			/* vectors written by the build (not kept current) */
} GmmIvfListHead;

typedef struct GmmIvfMetaPageData
{
	uint32		magic;
	uint32		version;
	int32		dims;			/* 0 until the first vector is seen */
	int32		nlists;			/* K components/lists; 0 = no model */
	int32		metric;			/* FlashgmmMetric */
	int32		cov;			/* gmm_cov_type */
	int32		max_assign;		/* assignment parameters used by the build */
	float4		tau;			/* effective threshold (1/K when the option is 0) */
	float4		temperature;
	uint32		build_id;		/* changes on every build: model caches key on it */
	BlockNumber comp_start;		/* first component page */
	BlockNumber comp_npages;	/* number of component pages */
	uint32		rec_size;		/* bytes of one component record */
	uint32		recs_per_page;	/* > 0: records packed per page */
	uint32		pages_per_rec;	/* > 0: each record spans this many pages */
	double		build_rows;		/* vectors indexed by the build */
	double		build_copies;	/* list entries written by the build */
	GmmIvfListHead metalist;	/* rows without a component (see above) */
} GmmIvfMetaPageData;

typedef GmmIvfMetaPageData *GmmIvfMetaPage;

#define GmmIvfPageGetMeta(page) ((GmmIvfMetaPage) PageGetContents(page))

typedef struct GmmIvfCompHeader
{
	float4		weight;
	uint32		pad;
	GmmIvfListHead list;
} GmmIvfCompHeader;

/* Posting item header; the floats follow at GMMIVF_ITEM_FLOATS(item). */
typedef struct GmmIvfItemHeader
{
	ItemPointerData heaptid;	/* 6 bytes */
	uint16		nfloats;		/* floats in this item */
	uint32		start;			/* index of the first float in the vector */
} GmmIvfItemHeader;

#define GMMIVF_ITEM_HDRSZ		MAXALIGN(sizeof(GmmIvfItemHeader))
#define GMMIVF_ITEM_FLOATS(item) ((float4 *) ((char *) (item) + GMMIVF_ITEM_HDRSZ))

/* Bytes of a page usable for component records (between header and special). */
#define GMMIVF_COMP_CAPACITY \
	(BLCKSZ - MAXALIGN(SizeOfPageHeaderData) - MAXALIGN(sizeof(GmmIvfPageOpaqueData)))

/* Floats of one item on an empty posting page. */
#define GMMIVF_PAGE_MAX_FLOATS \
	((int) ((MAXALIGN_DOWN(BLCKSZ - MAXALIGN(SizeOfPageHeaderData) - \
						   MAXALIGN(sizeof(GmmIvfPageOpaqueData)) - sizeof(ItemIdData)) - \
			 GMMIVF_ITEM_HDRSZ) / sizeof(float4)))

/* reloptions */
typedef struct GmmIvfOptions
{
	int32		vl_len_;		/* varlena header (do not touch directly!) */
	int			lists;
	int			max_assign;
	double		tau;
	double		temperature;
	double		copies;			/* > 0: pick the temperature for this many copies */
	int			sample_rows;
	int			iterations;
	int			seed;
	int			covarianceOffset;	/* 'spherical' | 'diag' */
	int			weightsOffset;	/* 'equal' | 'learned' */
} GmmIvfOptions;

#define GMMIVF_DEFAULT_LISTS		100
#define GMMIVF_DEFAULT_MAX_ASSIGN	8
#define GMMIVF_DEFAULT_TAU			0.0 /* 0 = 1 / lists */
#define GMMIVF_DEFAULT_TEMPERATURE	1.0
#define GMMIVF_DEFAULT_COPIES		0.0 /* 0 = use temperature as given */
#define GMMIVF_DEFAULT_SAMPLE_ROWS	0	/* 0 = max(10000, 64 * lists); GPU: the table within maintenance_work_mem */
#define GMMIVF_DEFAULT_ITERATIONS	20
/*
 * Mixing weights fixed at 1/lists: with learned weights a broad component near
 * the data centre grows until it holds a large share of the rows on weakly
 * clustered data (docs/benchmarks.md, "List balance").
 */
#define GMMIVF_DEFAULT_WEIGHTS		"equal"
#define GMMIVF_DEFAULT_SEED			42

/* GUCs */
typedef enum GmmIvfDevice
{
	GMMIVF_DEVICE_AUTO,
	GMMIVF_DEVICE_CPU,
	GMMIVF_DEVICE_GPU
} GmmIvfDevice;

extern int	gmmivf_probes;
extern bool gmmivf_iterative_scan;
extern int	gmmivf_max_probes;
extern int	gmmivf_device;
extern int	gmmivf_probe_order;

/* per-backend counters of the last scan (flashgmm_last_scan()) */
typedef struct GmmIvfScanCounters
{
	int64		lists_probed;
	int64		tuples_scanned;		/* list entries read, duplicates included */
	int64		duplicates_skipped; /* entries whose TID was already seen */
	int64		distances;			/* exact distances computed */
	int64		tuples_returned;
	int64		probe_rounds;		/* 1 + iterative extensions */
} GmmIvfScanCounters;

extern GmmIvfScanCounters gmmivf_last_scan;

/* gmmivf_build.c */
extern IndexBuildResult *gmmivfbuild(Relation heap, Relation index, IndexInfo *indexInfo);
extern void gmmivfbuildempty(Relation index);

/* gmmivf_insert.c */
extern bool gmmivfinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
						 Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
						 IndexInfo *indexInfo);

/* gmmivf_scan.c */
extern IndexScanDesc gmmivfbeginscan(Relation index, int nkeys, int norderbys);
extern void gmmivfrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys);
extern bool gmmivfgettuple(IndexScanDesc scan, ScanDirection dir);
extern void gmmivfendscan(IndexScanDesc scan);

/* gmmivf_vacuum.c */
extern IndexBulkDeleteResult *gmmivfbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
											   IndexBulkDeleteCallback callback, void *callback_state);
extern IndexBulkDeleteResult *gmmivfvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats);

/* gmmivf_cost.c */
extern void gmmivfcostestimate(PlannerInfo *root, IndexPath *path, double loop_count,
							   Cost *indexStartupCost, Cost *indexTotalCost,
							   Selectivity *indexSelectivity, double *indexCorrelation,
							   double *indexPages);

/* gmmivf_validate.c */
extern bool gmmivfvalidate(Oid opclassoid);

/* gmmivf_utils.c: pages, metapage, component records, lists */
extern void gmmivf_init_page(Page page, uint16 flags);
extern Buffer gmmivf_new_buffer(Relation index, ForkNumber forknum);
extern void gmmivf_read_meta(Relation index, GmmIvfMetaPageData *meta);
extern FlashgmmMetric gmmivf_get_metric(Relation index);
extern GmmIvfOptions *gmmivf_get_options(Relation index);
extern gmm_cov_type gmmivf_option_cov(GmmIvfOptions *opts);
extern bool gmmivf_option_equal_weights(GmmIvfOptions *opts);
extern void gmmivf_comp_layout(int K, int D, gmm_cov_type cov, uint32 *rec_size,
							   uint32 *recs_per_page, uint32 *pages_per_rec,
							   BlockNumber *npages);
extern void gmmivf_comp_locate(const GmmIvfMetaPageData *meta, int k, BlockNumber *blk,
							   uint32 *off);
extern GmmIvfCompHeader *gmmivf_comp_header(Page page, uint32 off);
extern const gmm_model *gmmivf_get_model(Relation index, const GmmIvfMetaPageData *meta);
extern void gmmivf_append_vector(Relation index, BlockNumber headblk, uint32 headoff,
								 ItemPointer tid, const float4 *vec, int dim);
extern uint32 gmmivf_meta_list_offset(void);
extern int	gmmivf_fit_floats(Page page, int remaining);
extern Size gmmivf_form_item(char *item, ItemPointer tid, int start, int n, const float4 *floats);
extern uint32 gmmivf_comp_list_offset(uint32 off);
extern bool gmmivf_normalize(float4 *x, int dim);
extern void gmmivf_ereport_engine(gmm_status st, const gmm_error *err, const char *what);
extern void gmmivf_free_model_on_reset(MemoryContext cxt, gmm_model *m);

/* gmmivf_engine.c: CPU / GPU dispatch */
extern bool gmmivf_engine_gpu_usable(void);
extern gmm_status gmmivf_engine_fit(const float *X, int64_t N, int D, const gmm_fit_params *p,
									gmm_model **out, gmm_fit_report *report, gmm_error *err,
									bool *used_gpu);
extern gmm_status gmmivf_engine_assign(const gmm_model *m, const float *X, int64_t N,
									   int max_assign, float tau, float temperature,
									   int32_t *comp, float *resp, gmm_error *err,
									   bool allow_gpu);

#endif							/* FLASHGMM_GMMIVF_H */
