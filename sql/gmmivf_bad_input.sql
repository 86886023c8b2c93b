-- Bad input at CREATE INDEX: errors with an errcode and a message naming the
-- problem; NULL rows are skipped; memory limits are explained.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
RESET client_min_messages;
SET flashgmm.device = cpu;
\set VERBOSITY default
CREATE TABLE bad (id int, v real[]);
INSERT INTO bad SELECT i, ARRAY[i % 7, i % 11, i % 13]::real[] FROM generate_series(1, 200) i;
INSERT INTO bad VALUES (0, NULL), (-1, NULL);
-- NULL rows are skipped
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
SELECT build_rows FROM flashgmm_index_info('bad_i');
DROP INDEX bad_i;

-- each bad row makes the build fail, naming the problem
INSERT INTO bad VALUES (1000, '{1,NaN,3}');
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
UPDATE bad SET v = '{1,Infinity,3}' WHERE id = 1000;
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
UPDATE bad SET v = '{}' WHERE id = 1000;
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
UPDATE bad SET v = '{{1,2,3},{4,5,6}}' WHERE id = 1000;
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
UPDATE bad SET v = '{1,NULL,3}' WHERE id = 1000;
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
UPDATE bad SET v = '{1,2,3,4}' WHERE id = 1000;
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
-- with errcodes
\set VERBOSITY sqlstate
UPDATE bad SET v = '{1,NaN,3}' WHERE id = 1000;
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
UPDATE bad SET v = '{1,2,3,4}' WHERE id = 1000;
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
\set VERBOSITY default
DELETE FROM bad WHERE id = 1000;
-- a column of another type has no operator class
CREATE TABLE bad2 (v float8[]);
CREATE INDEX ON bad2 USING gmmivf (v);
DROP TABLE bad2;

-- maintenance_work_mem too small for the lists asked for
SET maintenance_work_mem = '1MB';
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 20000);
RESET maintenance_work_mem;

-- the build still works after all that
CREATE INDEX bad_i ON bad USING gmmivf (v) WITH (lists = 4);
SELECT lists, build_rows FROM flashgmm_index_info('bad_i');
DROP TABLE bad;

-- flashgmm.device: gpu fails clearly where the CUDA engine is unavailable, works where it is
CREATE TABLE dev (v real[]);
INSERT INTO dev SELECT ARRAY[i % 7, i % 11]::real[] FROM generate_series(1, 100) i;
SET flashgmm.device = gpu;
DO $$
BEGIN
	CREATE INDEX dev_i ON dev USING gmmivf (v) WITH (lists = 2);
	-- a machine with a usable GPU builds (and drops it: the CPU build below reuses the name)
	RAISE NOTICE 'device = gpu behaves: %', flashgmm_gpu_status() LIKE 'available:%';
	DROP INDEX dev_i;
EXCEPTION WHEN feature_not_supported THEN
	-- elsewhere: ERROR 0A000 'flashgmm.device is "gpu" but the GPU engine is not available'
	RAISE NOTICE 'device = gpu behaves: %',
		flashgmm_gpu_status() LIKE 'unavailable:%'
		AND SQLERRM = 'flashgmm.device is "gpu" but the GPU engine is not available';
END $$;
-- auto: the GPU when usable, else the CPU (with a NOTICE saying why)
SET flashgmm.device = auto;
SET client_min_messages = warning;
CREATE INDEX dev_a ON dev USING gmmivf (v) WITH (lists = 2);
RESET client_min_messages;
SELECT lists FROM flashgmm_index_info('dev_a');
DROP INDEX dev_a;
SET flashgmm.device = cpu;
CREATE INDEX dev_i ON dev USING gmmivf (v) WITH (lists = 2);
SELECT lists FROM flashgmm_index_info('dev_i');
DROP TABLE dev;

-- a long build can be canceled (here by statement_timeout, most likely during
-- training: the engine's progress callback asks it to stop), and the session goes on
CREATE TABLE cancel_t (v real[]);
SELECT setseed(0.5);
INSERT INTO cancel_t SELECT (SELECT array_agg(random()::real) FROM generate_series(1, 64) WHERE g > 0)
FROM generate_series(1, 20000) g;
SET flashgmm.device = cpu;
SET statement_timeout = '400ms';
CREATE INDEX cancel_i ON cancel_t USING gmmivf (v) WITH (lists = 2000, iterations = 1000);
RESET statement_timeout;
SELECT count(*) FROM pg_class WHERE relname = 'cancel_i';
CREATE INDEX cancel_i ON cancel_t USING gmmivf (v) WITH (lists = 10, iterations = 2);
SELECT lists, build_rows FROM flashgmm_index_info('cancel_i');
DROP TABLE cancel_t;
