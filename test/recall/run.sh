#!/bin/bash
# test/recall/run.sh - recall of gmmivf on real data (../shared/data), against groundtruth.ivecs.
#
# For each data set: load base/query/groundtruth with COPY (vecs2copy), build a gmmivf index
# with lists = 100 (about sqrt(N)), then check
#   - the planner uses the index for ORDER BY ... LIMIT 10 (a LATERAL join over the queries);
#   - recall@10 >= 0.90 at flashgmm.probes = lists / 8 (= 12);
#   - exact results at flashgmm.probes = lists: every query gets its true 10 nearest.
# Recall is tie-aware: a returned row counts when its distance is <= the distance of the 10th true
# neighbour (plus 1e-6 relative), so two base vectors at the same distance cannot fail the test.
# The strict id-set recall is printed too.
#
#   sift-10k          L2,     float4_l2_ops,     ORDER BY v <-> q
#   glove-twitter-25  cosine, float4_cosine_ops, ORDER BY v <=> q  (SOURCE.md: angular; the vectors
#                     are unit-normalised, so cosine order = the L2 order of groundtruth.ivecs)
#
# Needs a running server with flashgmm installed: PGHOST/PGPORT/PGUSER (test/run-all.sh sets them).
# Ends with "N passed, N failed".  Env: FLASHGMM_DATA, RECALL_SETS="sift-10k glove-twitter-25",
# RECALL_LISTS=100.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib.sh
. "$here/../../scripts/lib.sh"

SETS=${RECALL_SETS:-"sift-10k glove-twitter-25"}
LISTS=${RECALL_LISTS:-100}
PROBES_LOW=$((LISTS / 8))
DB=flashgmm_recall
PASSN=0 FAILN=0

check() {   # name ok(0/1) detail
	if [ "$2" = 1 ]; then
		PASSN=$((PASSN + 1)); echo "ok     $1${3:+  ($3)}"
	else
		FAILN=$((FAILN + 1)); echo "FAILED $1${3:+  ($3)}"
	fi
}

fg_build_tools >/dev/null || { echo "cannot compile test/recall/vecs2copy.c"; echo "0 passed, 1 failed"; exit 1; }
V2C=$FG_BUILD/vecs2copy

calc() { awk "BEGIN { printf \"%.${2:-3}f\", ($1) }"; }   # expr decimals
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
psql_db() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

if ! psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null; then
	echo "no server (PGHOST=${PGHOST:-} PGPORT=${PGPORT:-})"; echo "0 passed, 1 failed"; exit 1
fi
if psql_db -c "CREATE EXTENSION flashgmm" >/dev/null; then
	check "CREATE EXTENSION flashgmm" 1
else
	check "CREATE EXTENSION flashgmm" 0
	echo "$PASSN passed, $FAILN failed"; exit 1
fi

for set in $SETS; do
	dir=$FLASHGMM_DATA/$set
	if [ ! -f "$dir/base.fvecs" ]; then
		check "$set: data in $dir" 0 "missing"
		continue
	fi
	case $set in
		glove*|*angular*|lex-cohere*) opclass=float4_cosine_ops op='<=>' metric=cosine ;;
		*) opclass=float4_l2_ops op='<->' metric=L2 ;;
	esac
	t=$(echo "$set" | tr -c 'a-z0-9\n' '_')
	echo "== $set ($metric, $opclass, lists = $LISTS)"
	dim=$(od -An -t d4 -N4 "$dir/base.fvecs" | tr -d ' ')
	nbase=$(( $(stat -c %s "$dir/base.fvecs") / (4 * (dim + 1)) ))
	tl=$(date +%s.%N)
	psql_db <<-SQL >/dev/null
		DROP TABLE IF EXISTS ${t}_base, ${t}_query, ${t}_gt;
		CREATE TABLE ${t}_base (id int PRIMARY KEY, v real[] NOT NULL);
		CREATE TABLE ${t}_query (id int PRIMARY KEY, v real[] NOT NULL);
		CREATE TABLE ${t}_gt (id int PRIMARY KEY, ids int[] NOT NULL);
		\copy ${t}_base (id, v) FROM PROGRAM '$V2C $dir/base.fvecs'
		\copy ${t}_query (id, v) FROM PROGRAM '$V2C $dir/query.fvecs'
		\copy ${t}_gt (id, ids) FROM PROGRAM '$V2C $dir/groundtruth.ivecs'
		VACUUM ANALYZE ${t}_base;
		ANALYZE ${t}_query; ANALYZE ${t}_gt;
	SQL
	n=$(psql_db -At -c "SELECT count(*) FROM ${t}_base" 2>/dev/null)
	nq=$(psql_db -At -c "SELECT count(*) FROM ${t}_query" 2>/dev/null)
	check "$set: load $nbase x $dim base vectors with COPY" "$([ "$n" = "$nbase" ] && echo 1 || echo 0)" \
		"$n rows, $nq queries, $(calc "$(date +%s.%N) - $tl" 1)s"

	tb=$(date +%s.%N)
	if out=$(psql_db -c "CREATE INDEX ${t}_idx ON ${t}_base USING gmmivf (v $opclass) WITH (lists = $LISTS)" 2>&1); then
		check "$set: CREATE INDEX USING gmmivf (v $opclass) WITH (lists = $LISTS)" 1 \
			"$(calc "$(date +%s.%N) - $tb" 1)s, $(psql_db -At -c "SELECT pg_size_pretty(pg_relation_size('${t}_idx'))")"
	else
		check "$set: CREATE INDEX USING gmmivf" 0 "$(echo "$out" | head -3 | tr '\n' ' ')"
		continue
	fi

	# one row per query: tie-aware hits and strict id hits among the index's top 10
	q="SELECT q.id, r.hits, r.strict
	   FROM ${t}_query q JOIN ${t}_gt g USING (id)
	   CROSS JOIN LATERAL (SELECT l2_distance(b.v, q.v) AS d FROM ${t}_base b WHERE b.id = g.ids[10]) k
	   CROSS JOIN LATERAL (
	     SELECT count(*) FILTER (WHERE l2_distance(x.v, q.v) <= k.d * (1 + 1e-6) + 1e-9) AS hits,
	            count(*) FILTER (WHERE x.id = ANY (g.ids[1:10])) AS strict
	     FROM (SELECT b.id, b.v FROM ${t}_base b ORDER BY b.v $op q.v LIMIT 10) x) r"
	plan=$(psql_db -At -c "SET enable_seqscan = off" -c "EXPLAIN (COSTS OFF) $q" 2>&1)
	plan2=$(psql_db -At -c "EXPLAIN (COSTS OFF) SELECT id FROM ${t}_base ORDER BY v $op (SELECT v FROM ${t}_query WHERE id = 0) LIMIT 10" 2>&1)
	check "$set: planner uses the gmmivf index for ORDER BY v $op q LIMIT 10 (enable_seqscan on)" \
		"$(echo "$plan2" | grep -q "${t}_idx" && echo 1 || echo 0)" "$(echo "$plan2" | grep -m1 -E "${t}_idx|Scan on ${t}_base" | sed 's/^ *//')"

	for probes in $PROBES_LOW $LISTS; do
		ts=$(date +%s.%N)
		res=$(psql_db -At -F ' ' -c "SET enable_seqscan = off" -c "SET flashgmm.probes = $probes" \
			-c "SELECT round(avg(hits) / 10.0, 4), min(hits), round(avg(strict) / 10.0, 4), count(*) FROM ($q) s" 2>&1)
		el=$(calc "$(date +%s.%N) - $ts" 3)
		read -r recall minhits strict cnt <<<"$(echo "$res" | tail -1)"
		if ! [[ "${recall:-}" =~ ^[0-9.]+$ ]]; then
			check "$set: queries at probes = $probes" 0 "$(echo "$res" | head -3 | tr '\n' ' ')"
			continue
		fi
		detail="recall@10 $recall (strict id recall $strict), min hits $minhits/10, $cnt queries, $(calc "$el * 1000 / $cnt" 2) ms/query"
		if [ "$probes" = "$LISTS" ]; then
			check "$set: exact results at probes = lists = $probes" "$([ "$minhits" = 10 ] && echo 1 || echo 0)" "$detail"
		else
			check "$set: recall@10 >= 0.90 at probes = lists/8 = $probes" \
				"$(calc "$recall >= 0.90" 0)" "$detail"
		fi
	done
	# keep the plan in the log: it shows which index and operator were used
	echo "$plan" | sed 's/^/    plan: /' | head -12
done

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
echo "$PASSN passed, $FAILN failed"
[ "$FAILN" -eq 0 ]
