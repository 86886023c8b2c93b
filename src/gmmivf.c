/*
 * gmmivf.c - the gmmivf access method handler, its reloptions and GUCs, the
 * operator-class support functions and flashgmm_last_scan().
 */
#include "postgres.h"

#include <float.h>

#include "access/amapi.h"
#include "access/reloptions.h"
#include "access/genam.h"
#include "commands/progress.h"
#include "commands/vacuum.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "gmmivf.h"

PG_MODULE_MAGIC;

int			gmmivf_probes = 1;
bool		gmmivf_iterative_scan = false;
int			gmmivf_max_probes = GMMIVF_MAX_LISTS;
int			gmmivf_device = GMMIVF_DEVICE_AUTO;
int			gmmivf_probe_order = GMM_RANK_DISTANCE;

GmmIvfScanCounters gmmivf_last_scan;

static relopt_kind gmmivf_relopt_kind;

static const struct config_enum_entry device_options[] = {
	{"auto", GMMIVF_DEVICE_AUTO, false},
	{"cpu", GMMIVF_DEVICE_CPU, false},
	{"gpu", GMMIVF_DEVICE_GPU, false},
	{NULL, 0, false}
};

static const struct config_enum_entry probe_order_options[] = {
	{"distance", GMM_RANK_DISTANCE, false},
	{"posterior", GMM_RANK_POSTERIOR, false},
	{NULL, 0, false}
};

static void
validate_covariance(const char *value)
{
	if (value == NULL)
		return;
	if (strcmp(value, "spherical") != 0 && strcmp(value, "diag") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for gmmivf option \"covariance\": \"%s\"", value),
				 errdetail("Valid values are \"spherical\" and \"diag\".")));
}

static void
validate_weights(const char *value)
{
	if (value == NULL)
		return;
	if (strcmp(value, "equal") != 0 && strcmp(value, "learned") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for gmmivf option \"weights\": \"%s\"", value),
				 errdetail("Valid values are \"equal\" and \"learned\".")));
}

void		_PG_init(void);

void
_PG_init(void)
{
	gmmivf_relopt_kind = add_reloption_kind();
	add_int_reloption(gmmivf_relopt_kind, "lists",
					  "Number of Gaussian components (posting lists)",
					  GMMIVF_DEFAULT_LISTS, 1, GMMIVF_MAX_LISTS, AccessExclusiveLock);
	add_int_reloption(gmmivf_relopt_kind, "max_assign",
					  "Most lists one vector is stored in",
					  GMMIVF_DEFAULT_MAX_ASSIGN, 1, GMMIVF_MAX_ASSIGN, AccessExclusiveLock);
	add_real_reloption(gmmivf_relopt_kind, "tau",
					   "Responsibility a list needs to receive a copy (0 = 1/lists)",
					   GMMIVF_DEFAULT_TAU, 0.0, 1.0, AccessExclusiveLock);
	add_real_reloption(gmmivf_relopt_kind, "temperature",
					   "Temperature of the responsibilities used for assignment",
					   GMMIVF_DEFAULT_TEMPERATURE, 0.01, 100.0, AccessExclusiveLock);
	add_real_reloption(gmmivf_relopt_kind, "copies",
					   "Mean lists per vector the build aims at by choosing the temperature (0 = use temperature)",
					   GMMIVF_DEFAULT_COPIES, 0.0, GMMIVF_MAX_ASSIGN, AccessExclusiveLock);
	add_int_reloption(gmmivf_relopt_kind, "sample_rows",
					  "Rows sampled for training (0 = max(10000, 64 * lists) on the CPU; on the GPU, the whole table as far as maintenance_work_mem holds it)",
					  GMMIVF_DEFAULT_SAMPLE_ROWS, 0, 100000000, AccessExclusiveLock);
	add_int_reloption(gmmivf_relopt_kind, "iterations",
					  "Most EM iterations",
					  GMMIVF_DEFAULT_ITERATIONS, 1, 1000, AccessExclusiveLock);
	add_int_reloption(gmmivf_relopt_kind, "seed",
					  "Seed of sampling and k-means++ initialisation",
					  GMMIVF_DEFAULT_SEED, 0, INT_MAX, AccessExclusiveLock);
	add_string_reloption(gmmivf_relopt_kind, "covariance",
						 "Covariance of the components: spherical or diag",
						 "spherical", validate_covariance, AccessExclusiveLock);
	add_string_reloption(gmmivf_relopt_kind, "weights",
						 "Mixing weights of the components: equal (fixed at 1/lists) or learned by EM",
						 GMMIVF_DEFAULT_WEIGHTS, validate_weights, AccessExclusiveLock);

	DefineCustomIntVariable("flashgmm.probes",
							"Number of lists a gmmivf scan probes.",
							"Lists are ranked by distance from the query to the component mean "
							"(see flashgmm.probe_order).",
							&gmmivf_probes, 1, 1, GMMIVF_MAX_LISTS,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("flashgmm.iterative_scan",
							 "Probe more lists when a gmmivf scan runs out of rows.",
							 "When on, a scan that has returned every row of its probed lists "
							 "probes flashgmm.probes more lists, up to flashgmm.max_probes; rows "
							 "found later may be closer than rows already returned.",
							 &gmmivf_iterative_scan, false,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("flashgmm.max_probes",
							"Most lists an iterative gmmivf scan probes.",
							NULL,
							&gmmivf_max_probes, GMMIVF_MAX_LISTS, 1, GMMIVF_MAX_LISTS,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("flashgmm.device",
							 "Where gmmivf trains and assigns: auto, cpu or gpu.",
							 "auto uses the CUDA engine when it loads and falls back to the CPU "
							 "with a NOTICE; gpu raises an error when the CUDA engine is not usable.",
							 &gmmivf_device, GMMIVF_DEVICE_AUTO, device_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("flashgmm.probe_order",
							 "How a gmmivf scan ranks lists: distance or posterior.",
							 "distance: ascending distance from the query to the component mean "
							 "(inner product indexes: descending inner product); posterior: "
							 "descending log-posterior of the query.",
							 &gmmivf_probe_order, GMM_RANK_DISTANCE, probe_order_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("flashgmm");
}

static bytea *
gmmivfoptions(Datum reloptions, bool validate)
{
	static const relopt_parse_elt tab[] = {
		{"lists", RELOPT_TYPE_INT, offsetof(GmmIvfOptions, lists)},
		{"max_assign", RELOPT_TYPE_INT, offsetof(GmmIvfOptions, max_assign)},
		{"tau", RELOPT_TYPE_REAL, offsetof(GmmIvfOptions, tau)},
		{"temperature", RELOPT_TYPE_REAL, offsetof(GmmIvfOptions, temperature)},
		{"copies", RELOPT_TYPE_REAL, offsetof(GmmIvfOptions, copies)},
		{"sample_rows", RELOPT_TYPE_INT, offsetof(GmmIvfOptions, sample_rows)},
		{"iterations", RELOPT_TYPE_INT, offsetof(GmmIvfOptions, iterations)},
		{"seed", RELOPT_TYPE_INT, offsetof(GmmIvfOptions, seed)},
		{"covariance", RELOPT_TYPE_STRING, offsetof(GmmIvfOptions, covarianceOffset)},
		{"weights", RELOPT_TYPE_STRING, offsetof(GmmIvfOptions, weightsOffset)},
	};

	return (bytea *) build_reloptions(reloptions, validate, gmmivf_relopt_kind,
									  sizeof(GmmIvfOptions), tab, lengthof(tab));
}

static char *
gmmivfbuildphasename(int64 phasenum)
{
	switch (phasenum)
	{
		case PROGRESS_CREATEIDX_SUBPHASE_INITIALIZE:
			return "initializing";
		case GMMIVF_PHASE_SAMPLE:
			return "sampling rows";
		case GMMIVF_PHASE_TRAIN:
			return "training mixture";
		case GMMIVF_PHASE_ASSIGN:
			return "assigning rows";
		case GMMIVF_PHASE_WRITE:
			return "writing lists";
		default:
			return NULL;
	}
}

PG_FUNCTION_INFO_V1(gmmivfhandler);
Datum
gmmivfhandler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine = makeNode(IndexAmRoutine);

	amroutine->amstrategies = GMMIVF_NSTRATEGIES;
	amroutine->amsupport = GMMIVF_NPROCS;
	amroutine->amoptsprocnum = 0;
	amroutine->amcanorder = false;
	amroutine->amcanorderbyop = true;
	amroutine->amcanbackward = false;
	amroutine->amcanunique = false;
	amroutine->amcanmulticol = false;
	amroutine->amoptionalkey = true;
	amroutine->amsearcharray = false;
	amroutine->amsearchnulls = false;
	amroutine->amstorage = false;
	amroutine->amclusterable = false;
	amroutine->ampredlocks = false;
	amroutine->amcanparallel = false;
	amroutine->amcaninclude = false;
	amroutine->amusemaintenanceworkmem = false;
	amroutine->amparallelvacuumoptions = VACUUM_OPTION_PARALLEL_BULKDEL;
	amroutine->amkeytype = InvalidOid;

	amroutine->ambuild = gmmivfbuild;
	amroutine->ambuildempty = gmmivfbuildempty;
	amroutine->aminsert = gmmivfinsert;
	amroutine->ambulkdelete = gmmivfbulkdelete;
	amroutine->amvacuumcleanup = gmmivfvacuumcleanup;
	amroutine->amcanreturn = NULL;
	amroutine->amcostestimate = gmmivfcostestimate;
	amroutine->amoptions = gmmivfoptions;
	amroutine->amproperty = NULL;
	amroutine->ambuildphasename = gmmivfbuildphasename;
	amroutine->amvalidate = gmmivfvalidate;
	amroutine->amadjustmembers = NULL;
	amroutine->ambeginscan = gmmivfbeginscan;
	amroutine->amrescan = gmmivfrescan;
	amroutine->amgettuple = gmmivfgettuple;
	amroutine->amgetbitmap = NULL;
	amroutine->amendscan = gmmivfendscan;
	amroutine->ammarkpos = NULL;
	amroutine->amrestrpos = NULL;
	amroutine->amestimateparallelscan = NULL;
	amroutine->aminitparallelscan = NULL;
	amroutine->amparallelrescan = NULL;

	PG_RETURN_POINTER(amroutine);
}

/* Operator-class support function 1: the metric of the class. */
PG_FUNCTION_INFO_V1(gmmivf_l2_support);
Datum
gmmivf_l2_support(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(FLASHGMM_METRIC_L2);
}

PG_FUNCTION_INFO_V1(gmmivf_ip_support);
Datum
gmmivf_ip_support(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(FLASHGMM_METRIC_IP);
}

PG_FUNCTION_INFO_V1(gmmivf_cosine_support);
Datum
gmmivf_cosine_support(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(FLASHGMM_METRIC_COSINE);
}

/*
 * flashgmm_last_scan(): counters of the last gmmivf scan in this backend.
 */
PG_FUNCTION_INFO_V1(flashgmm_last_scan);
Datum
flashgmm_last_scan(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6] = {0};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	values[0] = Int64GetDatum(gmmivf_last_scan.lists_probed);
	values[1] = Int64GetDatum(gmmivf_last_scan.tuples_scanned);
	values[2] = Int64GetDatum(gmmivf_last_scan.duplicates_skipped);
	values[3] = Int64GetDatum(gmmivf_last_scan.distances);
	values[4] = Int64GetDatum(gmmivf_last_scan.tuples_returned);
	values[5] = Int64GetDatum(gmmivf_last_scan.probe_rounds);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * flashgmm_index_info(regclass): what the metapage says, for tests and
 * benchmarks (K, dimensions, metric, covariance, rows, copies).
 */
PG_FUNCTION_INFO_V1(flashgmm_index_info);
Datum
flashgmm_index_info(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	index;
	GmmIvfMetaPageData meta;
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9] = {0};
	static const char *metric_names[] = {"?", "l2", "ip", "cosine"};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	index = index_open(relid, AccessShareLock);
	if (index->rd_rel->relam == InvalidOid || index->rd_indam->ambuild != gmmivfbuild)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a gmmivf index", RelationGetRelationName(index))));
	gmmivf_read_meta(index, &meta);
	index_close(index, AccessShareLock);

	values[0] = Int32GetDatum(meta.nlists);
	values[1] = Int32GetDatum(meta.dims);
	values[2] = CStringGetTextDatum(meta.metric >= 1 && meta.metric <= 3 ? metric_names[meta.metric] : "?");
	values[3] = CStringGetTextDatum(meta.cov == GMM_COV_DIAG ? "diag" : "spherical");
	values[4] = Int32GetDatum(meta.max_assign);
	values[5] = Float4GetDatum(meta.tau);
	values[6] = Float8GetDatum(meta.build_rows);
	values[7] = Float8GetDatum(meta.build_copies);
	values[8] = Float4GetDatum(meta.temperature);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
