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
