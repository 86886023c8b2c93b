# gmmivf on a streaming replica: every page change the primary makes (the
# build's log_newpage_range, GenericXLog inserts, vacuum deletes, vectors that
# span pages) replays on the standby, checked page by page with
# wal_consistency_checking = generic, and the standby answers queries exactly.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
wal_consistency_checking = 'generic'
flashgmm.device = cpu
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION flashgmm');

$primary->backup('bkp');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bkp', has_streaming => 1);
$standby->start;

# deterministic vectors
$primary->safe_psql('postgres', q{
CREATE FUNCTION tv(i int, d int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT array_agg(((i::bigint * 7919 + j * 104729 + (i::bigint * j * j) % 101) % 10007) / 10007.0
					 ORDER BY j)::real[]
	FROM generate_series(1, d) j $$;
CREATE TABLE t (id int PRIMARY KEY, v real[]);
INSERT INTO t SELECT i, tv(i, 16) FROM generate_series(1, 3000) i;
CREATE INDEX t_i ON t USING gmmivf (v) WITH (lists = 20);
INSERT INTO t SELECT i, tv(i, 16) FROM generate_series(3001, 3500) i;
DELETE FROM t WHERE id % 7 = 0;
VACUUM t;
INSERT INTO t SELECT i, tv(i, 16) FROM generate_series(3501, 3800) i;
CREATE TABLE big (id int PRIMARY KEY, v real[]);
INSERT INTO big SELECT i, tv(i, 4096) FROM generate_series(1, 40) i;
CREATE INDEX big_i ON big USING gmmivf (v) WITH (lists = 4, iterations = 3);
INSERT INTO big SELECT i, tv(i, 4096) FROM generate_series(41, 60) i;
DELETE FROM big WHERE id % 3 = 0;
VACUUM big;
INSERT INTO big SELECT i, tv(i, 4096) FROM generate_series(61, 70) i;
CREATE TABLE e (id int, v real[]);
CREATE INDEX e_i ON e USING gmmivf (v float4_cosine_ops);
INSERT INTO e SELECT i, tv(i, 8) FROM generate_series(1, 100) i;
INSERT INTO e VALUES (0, '{0,0,0,0,0,0,0,0}');
});

$primary->wait_for_catchup($standby);

# the index (all lists) and a sort agree, on both nodes
my $check = q{
SET enable_seqscan = off; SET flashgmm.probes = 32768;
SELECT (SELECT array_agg(id) FROM (SELECT id FROM %1$s ORDER BY v %3$s tv(%2$s) LIMIT 15) s)
	 = (SELECT array_agg(id) FROM (SELECT id FROM %1$s ORDER BY (v %3$s tv(%2$s)) + 0, id LIMIT 15) s);
};
for my $node ($primary, $standby)
{
	my $name = $node->name;
	is($node->safe_psql('postgres', sprintf($check, 't', '99999, 16', '<->')),
		't', "$name: exact results on t");
	is($node->safe_psql('postgres', sprintf($check, 'big', '99999, 4096', '<->')),
		't', "$name: exact results at D = 4096");
	is($node->safe_psql('postgres', sprintf($check, 'e', '99999, 8', '<=>')),
		't', "$name: exact results on an index built empty");
	is($node->safe_psql('postgres', q{
		SET enable_seqscan = off; SET flashgmm.probes = 32768;
		SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> tv(5, 16)) s}),
		$primary->safe_psql('postgres', 'SELECT count(*) FROM t'),
		"$name: every live row once");
}

# the standby refuses writes but reads the counters
is($standby->safe_psql('postgres', q{
	SET enable_seqscan = off; SET flashgmm.probes = 3;
	SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> tv(1, 16) LIMIT 5) s;
	SELECT lists_probed FROM flashgmm_last_scan()}), "5\n3", 'standby: scan counters');

# no consistency-check failure in the standby's log
my $log = slurp_file($standby->logfile);
unlike($log, qr/inconsistent page found/, 'standby: WAL replay produced identical pages');

$standby->stop;
$primary->stop;
done_testing();
