# gmmivf under concurrent inserts, deletes, VACUUM and scans (pgbench): rows
# whose vectors span several pages (D = 3000, 12 kB) are appended by several
# backends to the same few lists at once; afterwards every live row is found
# exactly once and the index agrees with a sort.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('conc');
$node->init;
$node->append_conf('postgresql.conf', qq{
flashgmm.device = cpu
max_connections = 30
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION flashgmm;
CREATE FUNCTION tv(i int, d int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT array_agg(((i::bigint * 7919 + j * 104729 + (i::bigint * j * j) % 101) % 10007) / 10007.0
					 ORDER BY j)::real[]
	FROM generate_series(1, d) j $$;
CREATE TABLE t (id bigserial PRIMARY KEY, v real[]);
INSERT INTO t (v) SELECT tv(i, 3000) FROM generate_series(1, 40) i;
CREATE INDEX t_i ON t USING gmmivf (v) WITH (lists = 3, iterations = 3);
CREATE TABLE s (id bigserial PRIMARY KEY, v real[]);
INSERT INTO s (v) SELECT tv(i, 8) FROM generate_series(1, 500) i;
CREATE INDEX s_i ON s USING gmmivf (v) WITH (lists = 4, max_assign = 4, tau = 0.01);
});

$node->pgbench(
	'--no-vacuum --client=6 --transactions=50',
	0,
	[qr{processed: 300/300}],
	[qr{^$}],
	'concurrent inserts, deletes and scans',
	{
		'insert_big' => q{
\set i random(1, 1000000)
INSERT INTO t (v) SELECT tv(:i, 3000);
},
		'insert_small' => q{
\set i random(1, 1000000)
INSERT INTO s (v) SELECT tv(:i + g, 8) FROM generate_series(1, 10) g;
},
		'delete' => q{
\set i random(1, 2000)
DELETE FROM s WHERE id BETWEEN :i AND :i + 5;
DELETE FROM t WHERE id = :i % 100;
},
		'vacuum' => q{
VACUUM s;
VACUUM t;
},
		'scan' => q{
\set i random(1, 1000000)
SET enable_seqscan = off;
SET flashgmm.probes = 2;
SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> tv(:i, 3000) LIMIT 5) x;
SELECT count(*) FROM (SELECT id FROM s ORDER BY v <-> tv(:i, 8) LIMIT 5) x;
}
	});

$node->safe_psql('postgres', 'VACUUM s; VACUUM t;');

for my $tab (['t', 3000], ['s', 8])
{
	my ($name, $dim) = @$tab;
	is($node->safe_psql('postgres', qq{
		SET enable_seqscan = off; SET flashgmm.probes = 32768;
		SELECT count(*) = count(DISTINCT id) AND count(*) = (SELECT count(*) FROM $name)
		FROM (SELECT id FROM $name ORDER BY v <-> tv(123456, $dim)) x}),
		't', "$name: every row exactly once");
	is($node->safe_psql('postgres', qq{
		SET enable_seqscan = off; SET flashgmm.probes = 32768;
		SELECT (SELECT array_agg(id) FROM (SELECT id FROM $name ORDER BY v <-> tv(654321, $dim) LIMIT 10) a)
			 = (SELECT array_agg(id) FROM (SELECT id FROM $name ORDER BY (v <-> tv(654321, $dim)) + 0, id LIMIT 10) b)}),
		't', "$name: index agrees with a sort");
	is($node->safe_psql('postgres', qq{
		SET enable_seqscan = off; SET flashgmm.probes = 32768;
		SELECT count(*) FROM (SELECT id FROM $name ORDER BY v <-> tv(1, $dim)) x;
		SELECT tuples_scanned - duplicates_skipped = distances FROM flashgmm_last_scan()}),
		$node->safe_psql('postgres', "SELECT count(*) FROM $name") . "\nt",
		"$name: no torn vectors (one distance per live row)");
}

# vacuum removed the dead entries of s from every list
my $live = $node->safe_psql('postgres', 'SELECT count(*) FROM s');
is($node->safe_psql('postgres', q{
	SET enable_seqscan = off; SET flashgmm.probes = 32768;
	SELECT count(*) FROM (SELECT id FROM s ORDER BY v <-> tv(1, 8)) x;
	SELECT tuples_scanned - duplicates_skipped FROM flashgmm_last_scan()}),
	"$live\n$live", 's: after VACUUM the lists hold only live rows');

$node->stop;
done_testing();
