-- flashgmm.iterative_scan: a filtered query still returns its LIMIT when
-- enough rows match, by probing more lists (up to flashgmm.max_probes).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
RESET client_min_messages;
SET flashgmm.device = cpu;
CREATE TABLE it (id int PRIMARY KEY, cat int, v real[]);
INSERT INTO it SELECT i, i % 50,
	ARRAY[(i * 7919 % 1009) / 1009.0, (i * 104729 % 1013) / 1013.0,
		  (i * 31337 % 997) / 997.0, (i * 65537 % 1019) / 1019.0]::real[]
FROM generate_series(1, 5000) i;
ANALYZE it;
CREATE INDEX it_i ON it USING gmmivf (v) WITH (lists = 20, max_assign = 1);
SET enable_seqscan = off;
SET flashgmm.probes = 1;

-- 100 rows have cat = 7; one list holds about 250 rows, 5 of them cat = 7
EXPLAIN (COSTS OFF) SELECT id FROM it WHERE cat = 7 ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 20;
SELECT count(*) < 20 AS short_without_iterative
FROM (SELECT id FROM it WHERE cat = 7 ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 20) s;
SELECT lists_probed, probe_rounds FROM flashgmm_last_scan();

SET flashgmm.iterative_scan = on;
SELECT count(*) AS n, count(DISTINCT id) AS distinct_ids, bool_and(cat = 7) AS filtered
FROM (SELECT id, cat FROM it WHERE cat = 7 ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 20) s;
SELECT lists_probed > 1 AS probed_more, probe_rounds > 1 AS more_rounds,
	   lists_probed = probe_rounds AS one_list_per_round, tuples_returned >= 20 AS enough
FROM flashgmm_last_scan();

-- every matching row once when the filter needs all lists
SELECT count(*) AS n, count(DISTINCT id) AS distinct_ids
FROM (SELECT id FROM it WHERE cat = 7 ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 1000) s;
SELECT lists_probed FROM flashgmm_last_scan();

-- max_probes caps the lists
SET flashgmm.max_probes = 3;
SELECT count(*) <= 20 AS capped
FROM (SELECT id FROM it WHERE cat = 7 ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 20) s;
SELECT lists_probed FROM flashgmm_last_scan();
-- probes larger than max_probes: probes wins
SET flashgmm.probes = 5;
SELECT count(*) > 0 AS found FROM (SELECT id FROM it WHERE cat = 7 ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 20) s;
SELECT lists_probed FROM flashgmm_last_scan();
RESET flashgmm.max_probes;

-- rounds of `probes` lists each
SET flashgmm.probes = 4;
SELECT count(*) AS n FROM (SELECT id FROM it WHERE cat = 7 ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 100) s;
SELECT lists_probed, probe_rounds FROM flashgmm_last_scan();

-- without a filter, iterative mode changes nothing for a LIMIT the first round fills
SET flashgmm.probes = 1;
SELECT count(*) FROM (SELECT id FROM it ORDER BY v <-> '{0.5,0.5,0.5,0.5}' LIMIT 10) s;
SELECT lists_probed, probe_rounds FROM flashgmm_last_scan();
RESET flashgmm.iterative_scan;
RESET flashgmm.probes;
RESET enable_seqscan;
DROP TABLE it;
