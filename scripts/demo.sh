#!/bin/bash
# scripts/demo.sh - the main job, end to end, on a fresh Debian 12 machine (as root):
#   installs PostgreSQL 15 and build tools when missing, builds and installs flashgmm, starts a
#   scratch cluster (port 5442, socket in /tmp), generates clustered vectors in SQL, builds a
#   gmmivf index, queries it over a probes grid and prints recall@10 against exact search and
#   per-query latency.  The cluster is stopped at the end unless --keep is given.
#
#   scripts/demo.sh [--keep] [--rows N] [--dim D] [--lists L] [--clusters C]
#
# More clusters (--clusters 1000) make the data less clustered at the scale of the lists: the
# mixture's posteriors get broad, each row is stored in more lists (copies_per_row) and a scan at
# small probes costs more; fewer (--clusters 100) make it easy.
#
# Environment: FLASHGMM_DEMO_PORT (5442), FLASHGMM_NO_APT=1, NO_CUDA=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

KEEP=0 ROWS=20000 DIM=64 LISTS=128 NQ=100 CLUSTERS=200
while [ $# -gt 0 ]; do
	case $1 in
		--keep) KEEP=1 ;;
		--rows) ROWS=$2; shift ;;
		--dim) DIM=$2; shift ;;
		--lists) LISTS=$2; shift ;;
		--clusters) CLUSTERS=$2; shift ;;
		-h|--help) sed -n '2,10p' "$0"; exit 0 ;;
		*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
PORT=${FLASHGMM_DEMO_PORT:-5442}
export FG_LOGDIR=${FG_LOGDIR:-/tmp/flashgmm-demo}
mkdir -p "$FG_LOGDIR"

fg_install_deps
fg_build_install
fg_cluster_start "$PORT"
[ $KEEP = 1 ] || trap 'fg_cluster_stop "$PORT"' EXIT

PSQL="psql -X -v ON_ERROR_STOP=1 -q"
fg_log "generating $ROWS vectors of dimension $DIM ($CLUSTERS overlapping Gaussian clusters) and $NQ queries"
$PSQL <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
DROP TABLE IF EXISTS items, demo_centers, demo_queries;
SELECT setseed(0.42) AS seed \gset
-- $CLUSTERS cluster centres in [-5, 5]^D: with the noise below, neighbouring clusters overlap
CREATE TABLE demo_centers AS
  SELECT c, (SELECT array_agg((random() * 10 - 5)::real) FROM generate_series(1, $DIM) WHERE c >= 0) AS mu
  FROM generate_series(0, $CLUSTERS - 1) c;
CREATE TABLE items (id bigserial PRIMARY KEY, embedding real[]);
-- each row: its centre plus N(0, 3^2) noise per coordinate (Box-Muller)
INSERT INTO items (embedding)
  SELECT (SELECT array_agg((mu[d] + 3 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY d)
          FROM generate_series(1, $DIM) d)
  FROM generate_series(1, $ROWS) i JOIN demo_centers ON c = i % $CLUSTERS;
-- queries: random rows moved a little, with their exact top 10 from a sequential scan
CREATE TABLE demo_queries AS
  SELECT row_number() OVER () AS qid,
         (SELECT array_agg((e + random() - 0.5)::real) FROM unnest(embedding) e) AS q
  FROM (SELECT embedding FROM items ORDER BY random() LIMIT $NQ) s;
ALTER TABLE demo_queries ADD COLUMN truth bigint[];
SET enable_indexscan = off;
UPDATE demo_queries SET truth = (SELECT array_agg(id) FROM
  (SELECT id FROM items ORDER BY embedding <-> q LIMIT 10) t);
VACUUM ANALYZE items;
SQL

fg_log "CREATE INDEX ON items USING gmmivf (embedding float4_l2_ops) WITH (lists = $LISTS)"
$PSQL <<SQL
\timing on
CREATE INDEX items_embedding_idx ON items USING gmmivf (embedding float4_l2_ops) WITH (lists = $LISTS);
\timing off
SELECT pg_size_pretty(pg_relation_size('items')) AS table_size,
       pg_size_pretty(pg_relation_size('items_embedding_idx')) AS index_size,
       round((build_copies / build_rows)::numeric, 2) AS copies_per_row
FROM flashgmm_index_info('items_embedding_idx');
SQL

$PSQL <<'SQL'
-- runs every query with flashgmm.probes = p; returns recall@10 against the exact top 10, latency
CREATE OR REPLACE FUNCTION pg_temp.demo_run(p int, use_index bool)
RETURNS TABLE (recall numeric, avg_ms numeric, p50_ms numeric, p99_ms numeric) LANGUAGE plpgsql AS $$
DECLARE
  r record; t0 timestamptz; got bigint[]; hits int := 0; lat float8[] := '{}'; n int := 0;
BEGIN
  PERFORM set_config('flashgmm.probes', p::text, true);
  FOR r IN SELECT q, truth FROM demo_queries ORDER BY qid LOOP
    t0 := clock_timestamp();
    IF use_index THEN
      SELECT array_agg(id) INTO got FROM (SELECT id FROM items ORDER BY embedding <-> r.q LIMIT 10) s;
    ELSE  -- l2_distance() is the same distance as <->, but no index can serve it: a sequential scan
      SELECT array_agg(id) INTO got FROM (SELECT id FROM items ORDER BY l2_distance(embedding, r.q) LIMIT 10) s;
    END IF;
    lat := lat || (extract(epoch FROM clock_timestamp() - t0) * 1000)::float8;
    hits := hits + (SELECT count(*) FROM unnest(got) g WHERE g = ANY (r.truth));
    n := n + 1;
  END LOOP;
  RETURN QUERY SELECT round(hits / (10.0 * n), 3),
    (SELECT round(avg(x)::numeric, 3) FROM unnest(lat) x),
    (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3) FROM unnest(lat) x),
    (SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::numeric, 3) FROM unnest(lat) x);
END $$;

\echo
\echo 'One query (flashgmm.probes = 8):'
SET flashgmm.probes = 8;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY embedding <-> (SELECT q FROM demo_queries WHERE qid = 1) LIMIT 5;
SELECT id, round((embedding <-> (SELECT q FROM demo_queries WHERE qid = 1))::numeric, 3) AS distance
FROM items ORDER BY embedding <-> (SELECT q FROM demo_queries WHERE qid = 1) LIMIT 5;

\echo 'recall@10 and latency per query over the probes grid (exact = sequential scan):'
SELECT 'gmmivf' AS search, p AS probes, r.* FROM generate_series(0, 6) e, LATERAL (SELECT (2 ^ e)::int AS p) pp,
       LATERAL pg_temp.demo_run(p, true) r
UNION ALL
SELECT 'exact', NULL, r.* FROM pg_temp.demo_run(1, false) r
ORDER BY 1 DESC, 2;
SQL

if [ $KEEP = 1 ]; then
	echo "The cluster keeps running: psql -h /tmp -p $PORT -U $PGUSER postgres"
	echo "Stop it with: $(fg_pguser_prefix) $PG_BIN/pg_ctl -D $(fg_cluster_dir "$PORT")/data stop"
fi
