#!/bin/bash
# test/am/gpu_e2e.sh - gmmivf end to end on a GPU machine: builds the extension with the CUDA
# library, starts a throwaway PostgreSQL 15, and builds the same index with flashgmm.device =
# cpu, gpu and auto on synthetic clustered data; prints build times and recall@10 of each
# against an exact sort.  Needs (carried): .gpu/debs .gpu/rt .gpu/blas .gpu/start-pg.sh.
#   ROWS=100000 DIM=128 LISTS=316 test/am/gpu_e2e.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${ROWS:-100000} DIM=${DIM:-128} LISTS=${LISTS:-316} NQ=${NQ:-50} PROBES=${PROBES:-16}
bash test/gpu/setup_device.sh
bash .gpu/start-pg.sh .gpu/debs
export PATH=/usr/lib/postgresql/15/bin:$PATH
make with_llvm=no -j8 >/tmp/make.log 2>&1 || { tail -30 /tmp/make.log; exit 1; }
make with_llvm=no install >/tmp/install.log 2>&1 || { tail -30 /tmp/install.log; exit 1; }
ls -la /usr/lib/postgresql/15/lib/flashgmm*.so
nvidia-smi -L || true
psql -X -h /tmp -U pgu -d postgres -v ON_ERROR_STOP=1 <<SQL
SET jit = off;
CREATE EXTENSION flashgmm;
SELECT flashgmm_gpu_status();
SELECT setseed(0.42);
-- $ROWS rows around 400 centres
CREATE TABLE c AS SELECT k, (SELECT array_agg((random() * 10)::real) FROM generate_series(1, $DIM) WHERE k > 0) AS mu
	FROM generate_series(1, 400) k;
CREATE TABLE t (id int, v real[]);
INSERT INTO t SELECT i, (SELECT array_agg(m + ((random() - 0.5) * 8)::real) FROM unnest(c.mu) m)
	FROM generate_series(1, $ROWS) i JOIN c ON c.k = 1 + i % 400;
CREATE TABLE q AS SELECT id, v FROM t WHERE id % ($ROWS / $NQ) = 7;
VACUUM ANALYZE t;
SET maintenance_work_mem = '4GB';
CREATE FUNCTION recall(p int) RETURNS numeric LANGUAGE plpgsql AS \$\$
DECLARE r record; hits int := 0; n int := 0;
BEGIN
	PERFORM set_config('flashgmm.probes', p::text, true);
	PERFORM set_config('enable_seqscan', 'off', true);
	FOR r IN SELECT * FROM q LOOP
		hits := hits + (SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> r.v LIMIT 10) a
			JOIN (SELECT id FROM t ORDER BY (v <-> r.v) + 0 LIMIT 10) b USING (id));
		n := n + 1;
	END LOOP;
	RETURN round(hits / (10.0 * n), 4);
END \$\$;
\timing on
SET flashgmm.device = cpu;
CREATE INDEX t_cpu ON t USING gmmivf (v) WITH (lists = $LISTS, sample_rows = $ROWS);
\timing off
SELECT 'cpu' AS device, lists, build_copies, recall($PROBES) FROM flashgmm_index_info('t_cpu');
DROP INDEX t_cpu;
\timing on
SET flashgmm.device = gpu;
CREATE INDEX t_gpu ON t USING gmmivf (v) WITH (lists = $LISTS, sample_rows = $ROWS);
\timing off
SELECT 'gpu' AS device, lists, build_copies, recall($PROBES) FROM flashgmm_index_info('t_gpu');
DROP INDEX t_gpu;
-- default sample_rows on the GPU: the whole table, as far as maintenance_work_mem holds it
SET client_min_messages = debug1;
\timing on
CREATE INDEX t_gpu ON t USING gmmivf (v) WITH (lists = $LISTS);
\timing off
RESET client_min_messages;
SELECT 'gpu, whole table' AS device, lists, build_copies, recall($PROBES) FROM flashgmm_index_info('t_gpu');
-- inserts after a GPU build use the CPU engine with the stored model
INSERT INTO t SELECT $ROWS + id, v FROM t WHERE id <= 100;
SELECT recall($PROBES) AS recall_after_insert;
DROP INDEX t_gpu;
\timing on
SET flashgmm.device = auto;
CREATE INDEX t_auto ON t USING gmmivf (v float4_cosine_ops) WITH (lists = $LISTS, sample_rows = $ROWS, covariance = 'diag');
\timing off
SELECT 'auto/cosine/diag' AS device, lists, covariance, build_copies FROM flashgmm_index_info('t_auto');
SQL
