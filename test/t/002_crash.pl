# gmmivf after a crash (immediate shutdown): WAL recovery restores the index
# built and changed before the crash; an unlogged table's index comes back
# empty (from its init fork) and works.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
flashgmm.device = cpu
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION flashgmm;
CREATE FUNCTION tv(i int, d int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT array_agg(((i::bigint * 7919 + j * 104729 + (i::bigint * j * j) % 101) % 10007) / 10007.0
					 ORDER BY j)::real[]
	FROM generate_series(1, d) j $$;
CREATE TABLE t (id int PRIMARY KEY, v real[]);
INSERT INTO t SELECT i, tv(i, 16) FROM generate_series(1, 2000) i;
CHECKPOINT;
CREATE INDEX t_i ON t USING gmmivf (v) WITH (lists = 16);
INSERT INTO t SELECT i, tv(i, 16) FROM generate_series(2001, 2500) i;
DELETE FROM t WHERE id % 5 = 0;
VACUUM t;
INSERT INTO t SELECT i, tv(i, 16) FROM generate_series(2501, 2600) i;
CREATE TABLE big (id int PRIMARY KEY, v real[]);
INSERT INTO big SELECT i, tv(i, 4096) FROM generate_series(1, 30) i;
CREATE INDEX big_i ON big USING gmmivf (v) WITH (lists = 3, iterations = 3);
INSERT INTO big SELECT i, tv(i, 4096) FROM generate_series(31, 40) i;
CREATE UNLOGGED TABLE u (id int PRIMARY KEY, v real[]);
INSERT INTO u SELECT i, tv(i, 16) FROM generate_series(1, 500) i;
CREATE INDEX u_i ON u USING gmmivf (v) WITH (lists = 8);
});
# an aborted insert leaves index entries (some vectors spanning pages) for dead rows: scans skip them
$node->safe_psql('postgres', q{
BEGIN; INSERT INTO t SELECT i, tv(i, 16) FROM generate_series(5001, 5100) i;
INSERT INTO big SELECT i, tv(i, 4096) FROM generate_series(5001, 5005) i;
});

$node->stop('immediate');
$node->start;

my $check = q{
SET enable_seqscan = off; SET flashgmm.probes = 32768;
SELECT (SELECT array_agg(id) FROM (SELECT id FROM %1$s ORDER BY v <-> tv(%2$s) LIMIT 15) s)
	 = (SELECT array_agg(id) FROM (SELECT id FROM %1$s ORDER BY (v <-> tv(%2$s)) + 0, id LIMIT 15) s);
};
is($node->safe_psql('postgres', sprintf($check, 't', '77777, 16')), 't', 'exact after crash recovery');
is($node->safe_psql('postgres', sprintf($check, 'big', '77777, 4096')), 't', 'exact after crash recovery at D = 4096');
is($node->safe_psql('postgres', q{
	SET enable_seqscan = off; SET flashgmm.probes = 32768;
	SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> tv(3, 16)) s}),
	$node->safe_psql('postgres', 'SELECT count(*) FROM t'), 'every row once after recovery');

# unlogged: empty after the crash, index from the init fork (no model), works after inserts
is($node->safe_psql('postgres', 'SELECT count(*) FROM u'), '0', 'unlogged table emptied by the crash');
is($node->safe_psql('postgres', q{SELECT lists FROM flashgmm_index_info('u_i')}), '0',
	'unlogged index reset to its init fork');
$node->safe_psql('postgres', 'INSERT INTO u SELECT i, tv(i, 16) FROM generate_series(1, 300) i');
is($node->safe_psql('postgres', sprintf($check, 'u', '4242, 16')), 't', 'unlogged index works after the crash');
$node->safe_psql('postgres', 'REINDEX INDEX u_i');
is($node->safe_psql('postgres', q{SELECT lists FROM flashgmm_index_info('u_i')}), '8',
	'REINDEX trains the unlogged index again');
is($node->safe_psql('postgres', sprintf($check, 'u', '4243, 16')), 't', 'unlogged index exact after REINDEX');

# inserts and vacuum keep working after recovery
$node->safe_psql('postgres', q{
INSERT INTO t SELECT i, tv(i, 16) FROM generate_series(6001, 6200) i;
DELETE FROM t WHERE id % 3 = 0; VACUUM t;});
is($node->safe_psql('postgres', sprintf($check, 't', '77778, 16')), 't', 'exact after more DML');

$node->stop;
done_testing();
