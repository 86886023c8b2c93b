-- gmmivf scans: planner choice, exact order, each row once, counters, the
-- three operator classes, probe order.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
RESET client_min_messages;
SET flashgmm.device = cpu;
CREATE FUNCTION sv(i int, d int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT array_agg(((i::bigint * 7919 + j * 104729 + (i::bigint * j * j) % 101) % 10007) / 10007.0
					 ORDER BY j)::real[]
	FROM generate_series(1, d) j $$;
CREATE TABLE sc (id int PRIMARY KEY, v real[]);
INSERT INTO sc SELECT i, sv(i, 8) FROM generate_series(1, 5000) i;
ANALYZE sc;
CREATE INDEX sc_l2 ON sc USING gmmivf (v) WITH (lists = 25);

-- the planner uses the index for ORDER BY ... LIMIT
EXPLAIN (COSTS OFF) SELECT id FROM sc ORDER BY v <-> sv(1, 8) LIMIT 10;
-- ... not for a query without ORDER BY, nor for another operator than the opclass's
EXPLAIN (COSTS OFF) SELECT id FROM sc WHERE id < 10;
EXPLAIN (COSTS OFF) SELECT id FROM sc ORDER BY v <#> sv(1, 8) LIMIT 10;
-- ... nor for ORDER BY DESC
EXPLAIN (COSTS OFF) SELECT id FROM sc ORDER BY v <-> sv(1, 8) DESC LIMIT 10;

-- exact order: with probes = lists the index returns what a sort returns
SET flashgmm.probes = 25;
SELECT (SELECT array_agg(d) FROM (SELECT v <-> sv(q, 8) AS d FROM sc ORDER BY v <-> sv(q, 8) LIMIT 20) s)
	 = (SELECT array_agg(d) FROM (SELECT v <-> sv(q, 8) AS d FROM sc ORDER BY (v <-> sv(q, 8)) + 0 LIMIT 20) s)
	   AS exact, count(*)
FROM generate_series(10001, 10020) q GROUP BY 1;
-- distances come out non-decreasing, and every row exactly once
SELECT count(*) AS n, count(DISTINCT id) AS distinct_ids,
	   bool_and(d >= prev) AS ordered
FROM (SELECT id, d, lag(d, 1, 0::float8) OVER () AS prev
	  FROM (SELECT id, v <-> sv(12345, 8) AS d FROM sc ORDER BY v <-> sv(12345, 8)) s) s2;
-- counters: a soft index holds duplicates, skipped before a distance is computed
SELECT lists_probed, tuples_returned, probe_rounds,
	   distances = tuples_scanned - duplicates_skipped AS one_distance_per_row,
	   distances = 5000 AS every_row_once, duplicates_skipped > 0 AS has_duplicates
FROM flashgmm_last_scan();

-- fewer probes: approximate, still ordered, still distinct
SET flashgmm.probes = 3;
SELECT count(*) <= 10 AS at_most_limit, count(DISTINCT id) = count(*) AS distinct_ids
FROM (SELECT id FROM sc ORDER BY v <-> sv(777, 8) LIMIT 10) s;
SELECT lists_probed, tuples_returned, distances < 5000 AS fewer_distances FROM flashgmm_last_scan();
-- recall at 3 of 25 lists on this data
SELECT avg(hits) >= 0.5 AS recall_ok FROM (
	SELECT q, (SELECT count(*) FROM
		(SELECT id FROM sc ORDER BY v <-> sv(q, 8) LIMIT 10) a
		JOIN (SELECT id FROM sc ORDER BY (v <-> sv(q, 8)) + 0 LIMIT 10) b USING (id)) / 10.0 AS hits
	FROM generate_series(20001, 20020) q) r;

-- probe by posterior
SET flashgmm.probe_order = posterior;
SELECT count(*) FROM (SELECT id FROM sc ORDER BY v <-> sv(777, 8) LIMIT 10) s;
SELECT lists_probed FROM flashgmm_last_scan();
SET flashgmm.probes = 25;
SELECT (SELECT array_agg(d) FROM (SELECT v <-> sv(5, 8) AS d FROM sc ORDER BY v <-> sv(5, 8) LIMIT 20) s)
	 = (SELECT array_agg(d) FROM (SELECT v <-> sv(5, 8) AS d FROM sc ORDER BY (v <-> sv(5, 8)) + 0 LIMIT 20) s)
	   AS exact_posterior;
RESET flashgmm.probe_order;

-- NULL query: every row once, in no particular order
SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM sc ORDER BY v <-> NULL::real[]) s;
-- bad query vectors (through the index)
SET enable_seqscan = off;
SELECT id FROM sc ORDER BY v <-> '{1,2,3}' LIMIT 1;
SELECT id FROM sc ORDER BY v <-> '{1,2,3,4,5,6,7,NaN}' LIMIT 1;
SELECT id FROM sc ORDER BY v <-> '{}' LIMIT 1;
SELECT id FROM sc ORDER BY v <-> '{{1,2,3,4},{5,6,7,8}}' LIMIT 1;
SELECT id FROM sc ORDER BY v <-> '{1,2,3,4,5,6,7,NULL}' LIMIT 1;
RESET enable_seqscan;

-- inner product
DROP INDEX sc_l2;
CREATE INDEX sc_ip ON sc USING gmmivf (v float4_ip_ops) WITH (lists = 25);
SELECT metric FROM flashgmm_index_info('sc_ip');
EXPLAIN (COSTS OFF) SELECT id FROM sc ORDER BY v <#> sv(1, 8) LIMIT 10;
SELECT (SELECT array_agg(d) FROM (SELECT v <#> sv(q, 8) AS d FROM sc ORDER BY v <#> sv(q, 8) LIMIT 20) s)
	 = (SELECT array_agg(d) FROM (SELECT v <#> sv(q, 8) AS d FROM sc ORDER BY (v <#> sv(q, 8)) + 0 LIMIT 20) s)
	   AS exact, count(*)
FROM generate_series(10001, 10010) q GROUP BY 1;
SET flashgmm.probes = 5;
SELECT count(*) FROM (SELECT id FROM sc ORDER BY v <#> sv(3, 8) LIMIT 10) s;
SELECT lists_probed FROM flashgmm_last_scan();
SET flashgmm.probes = 25;

-- cosine, with zero vectors (no direction: kept in the meta list, read by every scan)
DROP INDEX sc_ip;
INSERT INTO sc SELECT i, array_fill(0, ARRAY[8])::real[] FROM generate_series(5001, 5003) i;
CREATE INDEX sc_cos ON sc USING gmmivf (v float4_cosine_ops) WITH (lists = 25);
SELECT metric, build_rows FROM flashgmm_index_info('sc_cos');
INSERT INTO sc VALUES (5004, array_fill(0, ARRAY[8])::real[]);
EXPLAIN (COSTS OFF) SELECT id FROM sc ORDER BY v <=> sv(1, 8) LIMIT 10;
SELECT (SELECT array_agg(d) FROM (SELECT v <=> sv(q, 8) AS d FROM sc ORDER BY v <=> sv(q, 8) LIMIT 20) s)
	 = (SELECT array_agg(d) FROM (SELECT v <=> sv(q, 8) AS d FROM sc ORDER BY (v <=> sv(q, 8)) + 0 LIMIT 20) s)
	   AS exact, count(*)
FROM generate_series(10001, 10010) q GROUP BY 1;
-- zero vectors are found by a one-probe scan: distance 1 sorts them after closer rows
SET flashgmm.probes = 1;
SELECT count(*) FILTER (WHERE id > 5000) AS zero_vectors
FROM (SELECT id FROM sc ORDER BY v <=> '{-1,-1,-1,-1,-1,-1,-1,-1}' LIMIT 5000) s;
-- a zero query: every distance is 1
SELECT count(*), min(v <=> '{0,0,0,0,0,0,0,0}'), max(v <=> '{0,0,0,0,0,0,0,0}')
FROM (SELECT v FROM sc ORDER BY v <=> '{0,0,0,0,0,0,0,0}' LIMIT 7) s;
RESET flashgmm.probes;
DROP TABLE sc;
DROP FUNCTION sv(int, int);
