-- gmmivf reloptions, their bounds, the GUCs, the operator classes.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
RESET client_min_messages;
SET flashgmm.device = cpu;
SET client_min_messages = notice;
CREATE TABLE opt_t (id int, v real[]);
INSERT INTO opt_t SELECT i, ARRAY[(i * 7919 % 1009) / 1009.0, (i * 104729 % 1013) / 1013.0,
	(i * 31337 % 997) / 997.0, (i * 65537 % 1019) / 1019.0]::real[]
FROM generate_series(1, 2000) i;

-- defaults
CREATE INDEX opt_i ON opt_t USING gmmivf (v);
SELECT lists, dimensions, metric, covariance, max_assign, tau, build_rows FROM flashgmm_index_info('opt_i');
DROP INDEX opt_i;

-- every option at a valid value
CREATE INDEX opt_i ON opt_t USING gmmivf (v float4_l2_ops)
	WITH (lists = 10, max_assign = 2, tau = 0.2, temperature = 2, copies = 0, sample_rows = 500,
		  iterations = 5, seed = 7, covariance = 'diag');
SELECT lists, dimensions, metric, covariance, max_assign, tau, build_rows FROM flashgmm_index_info('opt_i');
SELECT build_copies BETWEEN build_rows AND 2 * build_rows AS copies_within_max_assign
FROM flashgmm_index_info('opt_i');
SELECT reloptions FROM pg_class WHERE relname = 'opt_i';
DROP INDEX opt_i;

-- max_assign = 1 is hard assignment: one copy per row
CREATE INDEX opt_i ON opt_t USING gmmivf (v) WITH (lists = 10, max_assign = 1);
SELECT build_copies = build_rows AS hard FROM flashgmm_index_info('opt_i');
DROP INDEX opt_i;

-- copies: the build picks the temperature that stores about that many copies per row
CREATE INDEX opt_i ON opt_t USING gmmivf (v) WITH (lists = 10, copies = 2);
SELECT build_copies / build_rows BETWEEN 1.7 AND 2.3 AS about_two_copies, temperature <> 1 AS tempered
FROM flashgmm_index_info('opt_i');
DROP INDEX opt_i;
-- ... also on a table larger than the training sample: the temperature is calibrated on sample
-- rows held out of training (the training rows sit closer to their components: 2.37 copies before)
CREATE TABLE opt_big AS SELECT i AS id,
	ARRAY(SELECT ((i % 40) * ((j * 37 % 11) / 10.0 - 0.5) + ((i::bigint * (7919 + j * 104729)) % 1009) / 400.0)::real
		  FROM generate_series(1, 64) j) AS v
FROM generate_series(1, 20000) i;
CREATE INDEX opt_big_i ON opt_big USING gmmivf (v) WITH (lists = 40, copies = 2, sample_rows = 1200);
SELECT build_copies / build_rows BETWEEN 1.9 AND 2.1 AS about_two_copies FROM flashgmm_index_info('opt_big_i');
DROP TABLE opt_big;

-- bounds
CREATE INDEX ON opt_t USING gmmivf (v) WITH (copies = -1);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (copies = 33);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (lists = 0);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (lists = 32769);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (max_assign = 0);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (max_assign = 33);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (tau = -0.1);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (tau = 1.5);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (temperature = 0);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (sample_rows = -1);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (iterations = 0);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (iterations = 1001);
CREATE INDEX ON opt_t USING gmmivf (v) WITH (covariance = 'full');
CREATE INDEX ON opt_t USING gmmivf (v) WITH (colour = 'blue');
-- a multi-column gmmivf index is not supported
CREATE INDEX ON opt_t USING gmmivf (v, v);
-- sample_rows below lists is raised to lists
CREATE INDEX opt_i ON opt_t USING gmmivf (v) WITH (lists = 20, sample_rows = 5);
SELECT lists FROM flashgmm_index_info('opt_i');
DROP INDEX opt_i;

-- GUCs: defaults, bounds, reserved prefix
SHOW flashgmm.probes;
SHOW flashgmm.iterative_scan;
SHOW flashgmm.max_probes;
SHOW flashgmm.probe_order;
SET flashgmm.probes = 0;
SET flashgmm.probes = 32769;
SET flashgmm.max_probes = 0;
SET flashgmm.iterative_scan = maybe;
SET flashgmm.device = tpu;
SET flashgmm.probe_order = random;
SET flashgmm.no_such_setting = 1;
SET flashgmm.probes = 5;
SHOW flashgmm.probes;
RESET flashgmm.probes;

-- operator classes validate
SELECT opcname, amvalidate(c.oid)
FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
WHERE a.amname = 'gmmivf' ORDER BY opcname;
SELECT amname, amtype FROM pg_am WHERE amname = 'gmmivf';

-- flashgmm_index_info on something else
CREATE INDEX opt_btree ON opt_t (id);
SELECT * FROM flashgmm_index_info('opt_btree');
DROP TABLE opt_t;
