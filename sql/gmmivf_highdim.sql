-- High dimension: at D = 4096 a vector (16 kB) and a component record do not
-- fit in one 8 kB page; both span pages.  Also diag covariance.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
RESET client_min_messages;
SET flashgmm.device = cpu;
CREATE FUNCTION hv(i int, d int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT array_agg((((i % 7) * 1000 + (i::bigint * 7919 + j * 104729) % 997) % 10007) / 10007.0
					 ORDER BY j)::real[]
	FROM generate_series(1, d) j $$;
CREATE FUNCTION hd_exact(q real[], k int) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE a float8[]; b float8[];
BEGIN
	SET LOCAL enable_seqscan = off;
	SET LOCAL flashgmm.probes = 32768;
	SELECT array_agg(d) INTO a FROM (SELECT v <-> q AS d FROM hd ORDER BY v <-> q LIMIT k) s;
	SELECT array_agg(d) INTO b FROM (SELECT v <-> q AS d FROM hd ORDER BY (v <-> q) + 0 LIMIT k) s;
	RETURN a IS NOT DISTINCT FROM b;
END $$;
CREATE TABLE hd (id int PRIMARY KEY, v real[]);
ALTER TABLE hd ALTER COLUMN v SET STORAGE EXTERNAL;
INSERT INTO hd SELECT i, hv(i, 4096) FROM generate_series(1, 120) i;
SET maintenance_work_mem = '64MB';
CREATE INDEX hd_i ON hd USING gmmivf (v) WITH (lists = 6, iterations = 5);
SELECT lists, dimensions, covariance, build_rows FROM flashgmm_index_info('hd_i');
-- 120 vectors of 16 kB: at least 3 pages each
SELECT pg_relation_size('hd_i') / 8192 >= 120 * 2 AS spans_pages;
SELECT hd_exact(hv(1000, 4096), 10) AS exact_4096;
SET enable_seqscan = off;
SELECT id FROM hd ORDER BY v <-> hv(33, 4096) LIMIT 1;
SELECT distances < 120 AS fewer_than_all FROM flashgmm_last_scan();
RESET enable_seqscan;
INSERT INTO hd SELECT i, hv(i, 4096) FROM generate_series(121, 140) i;
SELECT hd_exact(hv(1001, 4096), 10) AS exact_4096_after_insert;
DELETE FROM hd WHERE id % 2 = 0;
VACUUM hd;
SELECT hd_exact(hv(1002, 4096), 10) AS exact_4096_after_vacuum;
DROP INDEX hd_i;

-- diag covariance at D = 4096: a component record is 32 kB
CREATE INDEX hd_d ON hd USING gmmivf (v) WITH (lists = 3, covariance = 'diag', iterations = 3);
SELECT lists, dimensions, covariance FROM flashgmm_index_info('hd_d');
SELECT hd_exact(hv(1003, 4096), 10) AS exact_4096_diag;
DROP INDEX hd_d;

-- cosine at D = 4096
CREATE INDEX hd_c ON hd USING gmmivf (v float4_cosine_ops) WITH (lists = 4, iterations = 3);
SET enable_seqscan = off;
SET flashgmm.probes = 4;
SELECT (SELECT array_agg(d) FROM (SELECT v <=> hv(7, 4096) AS d FROM hd ORDER BY v <=> hv(7, 4096) LIMIT 5) s)
	 = (SELECT array_agg(d) FROM (SELECT v <=> hv(7, 4096) AS d FROM hd ORDER BY (v <=> hv(7, 4096)) + 0 LIMIT 5) s)
	   AS exact_4096_cosine;
RESET flashgmm.probes;
RESET enable_seqscan;

-- too many dimensions
CREATE TABLE hd2 (v real[]);
INSERT INTO hd2 SELECT array_fill(1, ARRAY[16001])::real[];
CREATE INDEX ON hd2 USING gmmivf (v);
DROP TABLE hd, hd2;
DROP FUNCTION hd_exact(real[], int);
DROP FUNCTION hv(int, int);
