-- gmmivf after the build: inserts, updates, deletes + vacuum, an empty table,
-- fewer rows than lists, unlogged tables, REINDEX, CONCURRENTLY.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
RESET client_min_messages;
SET flashgmm.device = cpu;
CREATE FUNCTION dv(i int, d int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT array_agg(((i::bigint * 7919 + j * 104729 + (i::bigint * j * j) % 101) % 10007) / 10007.0
					 ORDER BY j)::real[]
	FROM generate_series(1, d) j $$;
-- true when the index (all lists probed) returns exactly what a sort returns
CREATE FUNCTION dml_exact(q real[], k int) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE a float8[]; b float8[];
BEGIN
	SET LOCAL enable_seqscan = off;
	SET LOCAL flashgmm.probes = 32768;
	SELECT array_agg(d) INTO a FROM (SELECT v <-> q AS d FROM dml ORDER BY v <-> q LIMIT k) s;
	SELECT array_agg(d) INTO b FROM (SELECT v <-> q AS d FROM dml ORDER BY (v <-> q) + 0 LIMIT k) s;
	RETURN a IS NOT DISTINCT FROM b;
END $$;

-- an empty table: the index has no model; rows inserted later are found
CREATE TABLE dml (id int PRIMARY KEY, v real[]);
CREATE INDEX dml_i ON dml USING gmmivf (v) WITH (lists = 10);
SELECT lists, dimensions FROM flashgmm_index_info('dml_i');
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM dml ORDER BY v <-> '{1,2,3,4}' LIMIT 3;
SELECT id FROM dml ORDER BY v <-> '{1,2,3,4}' LIMIT 3;
INSERT INTO dml SELECT i, dv(i, 4) FROM generate_series(1, 300) i;
INSERT INTO dml VALUES (0, NULL);	-- NULL rows are not indexed
SELECT lists, dimensions FROM flashgmm_index_info('dml_i');
SELECT dml_exact(dv(1000, 4), 10) AS exact_without_model;
SELECT lists_probed, distances FROM flashgmm_last_scan();
-- the dimension is fixed by the first row
INSERT INTO dml VALUES (1001, '{1,2,3}');
RESET enable_seqscan;

-- REINDEX trains a model
REINDEX INDEX dml_i;
SELECT lists, dimensions, build_rows FROM flashgmm_index_info('dml_i');
-- flashgmm_lists: the meta list (-1) and one row per component; entries add up to the copies
SELECT count(*) AS lists, min(list), max(list), sum(entries) = (SELECT build_copies FROM flashgmm_index_info('dml_i')) AS entries_match,
	   abs(sum(weight) - 1) < 1e-4 AS weights_sum_to_one
FROM flashgmm_lists('dml_i');
SELECT dml_exact(dv(1000, 4), 10) AS exact_after_reindex;

-- inserts after the build are assigned with the stored model
INSERT INTO dml SELECT i, dv(i, 4) FROM generate_series(301, 600) i;
SELECT dml_exact(dv(2000, 4), 20) AS exact_after_insert;
SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM dml ORDER BY v <-> dv(5, 4)) s;
-- an inserted row is its own nearest neighbour
INSERT INTO dml VALUES (9999, '{0.5,0.5,0.5,0.5}');
SET flashgmm.probes = 3;
SELECT id FROM dml ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 1;
RESET flashgmm.probes;
-- bad rows are refused, the index is unharmed
INSERT INTO dml VALUES (10000, '{1,2,3}');
INSERT INTO dml VALUES (10000, '{1,2,3,NaN}');
INSERT INTO dml VALUES (10000, '{1,2,3,-Infinity}');
INSERT INTO dml VALUES (10000, '{}');
INSERT INTO dml VALUES (10000, '{{1,2},{3,4}}');
INSERT INTO dml VALUES (10000, '{1,2,NULL,4}');
SELECT dml_exact(dv(3000, 4), 20) AS exact_after_bad_inserts;

-- updates and deletes, then VACUUM removes dead rows from every list
UPDATE dml SET v = dv(id + 5000, 4) WHERE id % 3 = 0;
DELETE FROM dml WHERE id % 5 = 0;
SELECT dml_exact(dv(4000, 4), 30) AS exact_after_update_delete;
VACUUM dml;
SELECT dml_exact(dv(4001, 4), 30) AS exact_after_vacuum;
SET enable_seqscan = off;
SET flashgmm.probes = 32768;
SELECT count(*) = (SELECT count(*) FROM dml WHERE v IS NOT NULL) AS all_live_rows,
	   count(DISTINCT id) = count(*) AS distinct_ids
FROM (SELECT id FROM dml ORDER BY v <-> dv(1, 4)) s;
-- after VACUUM the lists hold only live rows: each is read once per copy
SELECT tuples_scanned - duplicates_skipped = (SELECT count(*) FROM dml WHERE v IS NOT NULL) AS no_dead_entries
FROM flashgmm_last_scan();
DELETE FROM dml;
VACUUM dml;
SELECT count(*) FROM (SELECT id FROM dml ORDER BY v <-> dv(1, 4)) s;
SELECT tuples_scanned FROM flashgmm_last_scan();
RESET flashgmm.probes;
RESET enable_seqscan;

-- space freed by VACUUM is reused by later inserts (the index does not grow)
CREATE TABLE ru (id int, v real[]);
INSERT INTO ru SELECT i, dv(i, 4) FROM generate_series(1, 4000) i;
CREATE INDEX ru_i ON ru USING gmmivf (v) WITH (lists = 2, max_assign = 1);
CREATE TEMP TABLE sz AS SELECT pg_relation_size('ru_i') AS before;
DELETE FROM ru WHERE id % 2 = 0;
VACUUM ru;
INSERT INTO ru SELECT i, dv(i, 4) FROM generate_series(4001, 5900) i;
SELECT pg_relation_size('ru_i') <= before AS space_reused FROM sz;
SET enable_seqscan = off;
SET flashgmm.probes = 2;
SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM ru ORDER BY v <-> dv(1, 4)) s;
SELECT (SELECT array_agg(d) FROM (SELECT v <-> dv(9, 4) AS d FROM ru ORDER BY v <-> dv(9, 4) LIMIT 30) s)
	 = (SELECT array_agg(d) FROM (SELECT v <-> dv(9, 4) AS d FROM ru ORDER BY (v <-> dv(9, 4)) + 0 LIMIT 30) s)
	   AS exact_after_reuse;
RESET flashgmm.probes;
RESET enable_seqscan;
DROP TABLE ru, sz;

-- fewer rows than lists: K is reduced, with a NOTICE
TRUNCATE dml;
INSERT INTO dml SELECT i, dv(i, 4) FROM generate_series(1, 5) i;
CREATE INDEX dml_small ON dml USING gmmivf (v) WITH (lists = 10);
SELECT lists, build_rows FROM flashgmm_index_info('dml_small');
SELECT dml_exact(dv(1, 4), 5) AS exact_small;
DROP INDEX dml_small;

-- TRUNCATE keeps a working (empty, model-less) index
TRUNCATE dml;
SELECT lists, dimensions FROM flashgmm_index_info('dml_i');
INSERT INTO dml SELECT i, dv(i, 4) FROM generate_series(1, 100) i;
SELECT dml_exact(dv(77, 4), 10) AS exact_after_truncate;

-- CREATE INDEX CONCURRENTLY and REINDEX CONCURRENTLY
DROP INDEX dml_i;
INSERT INTO dml SELECT i, dv(i, 4) FROM generate_series(101, 1000) i;
CREATE INDEX CONCURRENTLY dml_c ON dml USING gmmivf (v) WITH (lists = 8);
SELECT indisvalid FROM pg_index WHERE indexrelid = 'dml_c'::regclass;
SELECT dml_exact(dv(5000, 4), 20) AS exact_concurrently;
REINDEX INDEX CONCURRENTLY dml_c;
SELECT lists, build_rows FROM flashgmm_index_info('dml_c');
SELECT dml_exact(dv(5001, 4), 20) AS exact_reindex_concurrently;
REINDEX TABLE dml;
SELECT dml_exact(dv(5002, 4), 20) AS exact_reindex_table;
DROP TABLE dml;

-- unlogged tables
CREATE UNLOGGED TABLE dml (id int PRIMARY KEY, v real[]);
INSERT INTO dml SELECT i, dv(i, 4) FROM generate_series(1, 500) i;
CREATE INDEX dml_u ON dml USING gmmivf (v) WITH (lists = 8);
SELECT relpersistence FROM pg_class WHERE relname = 'dml_u';
INSERT INTO dml SELECT i, dv(i, 4) FROM generate_series(501, 600) i;
SELECT dml_exact(dv(6000, 4), 20) AS exact_unlogged;
DELETE FROM dml WHERE id < 100;
VACUUM dml;
SELECT dml_exact(dv(6001, 4), 20) AS exact_unlogged_vacuum;
DROP TABLE dml;
DROP FUNCTION dml_exact(real[], int);
DROP FUNCTION dv(int, int);
