-- List balance on weakly clustered data: many overlapping Gaussian clusters,
-- close to one blob at the scale of the lists (scripts/demo.sh --clusters 1000).
-- With mixing weights learned by EM, a broad component near the centre grows
-- until it holds a large share of the rows; weights = 'equal' (the default)
-- fixes them at 1/lists and keeps the lists balanced.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
RESET client_min_messages;
SET flashgmm.device = cpu;
SELECT setseed(0.25);
CREATE TABLE bal_c AS
	SELECT c, (SELECT array_agg((random() * 10 - 5)::real) FROM generate_series(1, 32) WHERE c >= 0) AS mu
	FROM generate_series(0, 199) c;
CREATE TABLE bal (id int, v real[]);
INSERT INTO bal
	SELECT i, (SELECT array_agg((mu[d] + 3 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY d)
			   FROM generate_series(1, 32) d)
	FROM generate_series(1, 4000) i JOIN bal_c ON c = i % 200;

-- bad values
CREATE INDEX ON bal USING gmmivf (v) WITH (weights = 'uniform');
CREATE INDEX ON bal USING gmmivf (v) WITH (weights = '');

CREATE INDEX bal_default ON bal USING gmmivf (v) WITH (lists = 32);
CREATE INDEX bal_equal ON bal USING gmmivf (v) WITH (lists = 32, weights = 'equal');
CREATE INDEX bal_learned ON bal USING gmmivf (v) WITH (lists = 32, weights = learned);
SELECT relname, reloptions FROM pg_class WHERE relname LIKE 'bal\_%' AND relkind = 'i' ORDER BY relname;

-- equal weights are stored as 1/lists (inserts assign with them too); learned ones differ
SELECT i, count(DISTINCT weight) AS distinct_weights, bool_and(weight = 1 / 32::real) AS all_one_over_lists
FROM unnest(ARRAY['bal_default', 'bal_equal', 'bal_learned']) i, flashgmm_lists(i::regclass) l
WHERE l.list >= 0 GROUP BY i ORDER BY i;
-- the default is 'equal': the same lists
SELECT (SELECT array_agg(entries ORDER BY list) FROM flashgmm_lists('bal_default')) =
	   (SELECT array_agg(entries ORDER BY list) FROM flashgmm_lists('bal_equal')) AS default_is_equal;

-- balance: the largest list against the mean list, and copies per row
CREATE TEMP TABLE bal_stats AS
SELECT i AS idx, max(entries)::float8 / avg(entries) AS max_over_mean,
	   (SELECT build_copies / build_rows FROM flashgmm_index_info(i::regclass)) AS copies
FROM unnest(ARRAY['bal_equal', 'bal_learned']) i, flashgmm_lists(i::regclass) l
WHERE l.list >= 0 GROUP BY i;
SELECT e.max_over_mean < 4 AS equal_balanced, l.max_over_mean > 2 * e.max_over_mean AS learned_twice_as_unbalanced,
	   e.copies <= l.copies AS equal_no_more_copies
FROM bal_stats e, bal_stats l WHERE e.idx = 'bal_equal' AND l.idx = 'bal_learned';

-- both answer exactly with every list probed
CREATE FUNCTION pg_temp.bal_exact(q real[]) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE a int[]; b int[];
BEGIN
	SET LOCAL enable_seqscan = off;
	SET LOCAL flashgmm.probes = 32;
	SELECT array_agg(id) INTO a FROM (SELECT id FROM bal ORDER BY v <-> q LIMIT 10) s;
	SET LOCAL enable_indexscan = off;
	SET LOCAL enable_seqscan = on;
	SELECT array_agg(id) INTO b FROM (SELECT id FROM bal ORDER BY v <-> q LIMIT 10) s;
	RETURN a = b;
END $$;
DROP INDEX bal_default, bal_equal;
SELECT bool_and(pg_temp.bal_exact(v)) AS learned_exact FROM bal WHERE id % 400 = 7;
DROP INDEX bal_learned;
CREATE INDEX bal_equal ON bal USING gmmivf (v) WITH (lists = 32);
SELECT bool_and(pg_temp.bal_exact(v)) AS equal_exact FROM bal WHERE id % 400 = 7;
-- a row inserted later is assigned with the stored (equal) weights and found
INSERT INTO bal SELECT 5000, array_agg(100::real) FROM generate_series(1, 32);
SELECT pg_temp.bal_exact((SELECT array_agg(99::real) FROM generate_series(1, 32))) AS inserted_exact;
SELECT count(DISTINCT weight) AS distinct_weights FROM flashgmm_lists('bal_equal') WHERE list >= 0;
DROP TABLE bal, bal_c;
