-- flashgmm 0.1.0: distances on real[] and the gmmivf index access method.
\echo Use "CREATE EXTENSION flashgmm" to load this file. \quit

-------------------------------------------------------------------------------
-- Distances on real[] (src/vector_ops.c).  All are IMMUTABLE STRICT and
-- raise an error on NaN/Infinity, NULL elements, empty or multi-dimensional
-- arrays, or arrays of different lengths.
-------------------------------------------------------------------------------
CREATE FUNCTION l2_distance(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'flashgmm_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION l2_squared_distance(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'flashgmm_l2_squared_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION inner_product(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'flashgmm_inner_product_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION negative_inner_product(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'flashgmm_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION cosine_distance(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'flashgmm_cosine_distance_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vector_norm(real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'flashgmm_vector_norm' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR <-> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = l2_distance, COMMUTATOR = '<->');
CREATE OPERATOR <#> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = negative_inner_product, COMMUTATOR = '<#>');
CREATE OPERATOR <=> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = cosine_distance, COMMUTATOR = '<=>');

-------------------------------------------------------------------------------
-- gmmivf access method (src/gmmivf_*.c)
-------------------------------------------------------------------------------
-- (the access-method part of this script is owned by the access-method work:
--  handler, access method, operator classes, flashgmm_last_scan(), ...)

CREATE FUNCTION gmmivfhandler(internal) RETURNS index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;

CREATE ACCESS METHOD gmmivf TYPE INDEX HANDLER gmmivfhandler;
COMMENT ON ACCESS METHOD gmmivf IS 'IVF vector index whose quantizer is a Gaussian mixture';

-- Support function 1 of a gmmivf operator class returns its metric.
CREATE FUNCTION gmmivf_l2_support(internal) RETURNS int4
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION gmmivf_ip_support(internal) RETURNS int4
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION gmmivf_cosine_support(internal) RETURNS int4
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE OPERATOR CLASS float4_l2_ops
	DEFAULT FOR TYPE real[] USING gmmivf AS
	OPERATOR 1 <-> (real[], real[]) FOR ORDER BY float_ops,
	FUNCTION 1 gmmivf_l2_support(internal);

CREATE OPERATOR CLASS float4_ip_ops
	FOR TYPE real[] USING gmmivf AS
	OPERATOR 1 <#> (real[], real[]) FOR ORDER BY float_ops,
	FUNCTION 1 gmmivf_ip_support(internal);

CREATE OPERATOR CLASS float4_cosine_ops
	FOR TYPE real[] USING gmmivf AS
	OPERATOR 1 <=> (real[], real[]) FOR ORDER BY float_ops,
	FUNCTION 1 gmmivf_cosine_support(internal);

-- Counters of the last gmmivf scan in this session: lists read, list entries
-- read (duplicates included), entries skipped because their row was already
-- seen, exact distances computed, rows returned, probe rounds (1 + iterative
-- extensions).
CREATE FUNCTION flashgmm_last_scan(
	OUT lists_probed bigint, OUT tuples_scanned bigint, OUT duplicates_skipped bigint,
	OUT distances bigint, OUT tuples_returned bigint, OUT probe_rounds bigint)
	RETURNS record AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE STRICT;

-- What the metapage of a gmmivf index says.
CREATE FUNCTION flashgmm_index_info(index regclass,
	OUT lists int, OUT dimensions int, OUT metric text, OUT covariance text,
	OUT max_assign int, OUT tau real, OUT build_rows float8, OUT build_copies float8,
	OUT temperature real)
	RETURNS record AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE STRICT;

-- 'available: <device>' or 'unavailable: <why>' for the CUDA engine.
CREATE FUNCTION flashgmm_gpu_status() RETURNS text
	AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE;

-- One row per list of a gmmivf index: component weight, vectors held (dead
-- ones not yet vacuumed included), pages.  List -1 is the meta list (rows with
-- no component: an index built on an empty table, cosine zero vectors).
CREATE FUNCTION flashgmm_lists(index regclass,
	OUT list int, OUT weight real, OUT entries bigint, OUT pages int)
	RETURNS SETOF record AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE STRICT;
