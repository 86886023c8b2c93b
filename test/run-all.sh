#!/bin/bash
# test/run-all.sh - runs every flashgmm test suite and ends with one line "N passed, N failed".
#
# On a fresh Debian 12 machine, as root:   test/run-all.sh
#   1. installs what is missing (PostgreSQL 15 + headers, libpq, openblas, IPC::Run,
#      numpy/sklearn, gnuplot, build tools) with apt-get;
#   2. builds and installs the extension (make && make install; CUDA library when nvcc exists);
#   3. starts a scratch cluster as user postgres on a private port (socket in /tmp);
#   4. runs the suites, each counted as tests passed / failed:
#        engine   make -C test/engine check        (C engine tests under ASan/UBSan)
#        regress  make installcheck                (pg_regress: sql/, expected/)
#        tap      prove test/t/*.pl                (PostgreSQL::Test::Cluster: crash, replica, ...)
#        recall   test/recall/run.sh               (recall@10 on sift-10k and glove-twitter-25)
#        bench    bench/run.sh --quick             (benchmark smoke test on sift-10k, no timings)
#        gpu      test/gpu/run_tests.sh            (CUDA engine vs CPU; prints SKIP without a GPU,
#                                                  skipped without nvcc)
#   5. stops the cluster, prints a per-suite summary and, as its last line, "N passed, N failed".
#      The exit status is non-zero when anything failed.
#
# Environment:
#   FLASHGMM_SUITES="engine regress"   run only these suites (default: all)
#   FLASHGMM_PORT=5444                 scratch cluster port
#   FLASHGMM_DATA=<repo>/../shared/data  where the fvecs data sets are
#   FLASHGMM_LOGDIR=/tmp/flashgmm-test-PORT  per-suite logs
#   FLASHGMM_NO_APT=1                  never call apt-get;  NO_CUDA=1: skip the CUDA library
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../scripts/lib.sh
. "$here/../scripts/lib.sh"
cd "$FG_ROOT"
# Debian's packages (python3-sklearn, prove, pg_config) come first, before any pyenv/venv shims
export PATH="$PG_BIN:/usr/bin:$PATH"

PORT=${FLASHGMM_PORT:-5444}
SUITES=${FLASHGMM_SUITES:-"engine regress tap recall bench gpu"}
FG_LOGDIR=${FLASHGMM_LOGDIR:-/tmp/flashgmm-test-$PORT}
export FG_LOGDIR
rm -rf "$FG_LOGDIR"
mkdir -p "$FG_LOGDIR"
chmod 755 "$FG_LOGDIR"
T0=$(date +%s)

ORDER=()
declare -A PASS FAIL NOTE
record() {   # suite passed failed note
	ORDER+=("$1")
	PASS[$1]=$2
	FAIL[$1]=$3
	NOTE[$1]=${4:-}
	fg_log "suite $1: $2 passed, $3 failed${4:+ ($4)}"
}

want() { [[ " $SUITES " == *" $1 "* ]]; }

# Reads "N passed, N failed" (last such line) from a log; a non-zero exit status without a
# counted failure counts as one failure.
record_from_log() {   # suite log rc
	local suite=$1 log=$2 rc=$3 line p f note=""
	line=$(grep -aE '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
	if [ -n "$line" ]; then
		p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
		f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
	else
		p=0 f=0 note="no summary line"
	fi
	local s
	s=$(grep -acE '^(SKIP|skip)\b|: SKIP' "$log")
	[ "$s" -gt 0 ] && note="${note:+$note, }$s skipped"
	if [ "$rc" -ne 0 ]; then
		[ "$rc" -eq 124 ] && note="${note:+$note, }timed out"
		[ "$f" -eq 0 ] && f=1
		note="${note:+$note, }exit $rc"
	fi
	record "$suite" "$p" "$f" "$note"
}

run_logged() {   # seconds log cmd...
	local secs=$1 log=$2; shift 2
	timeout --kill-after=30 "$secs" "$@" >"$log" 2>&1
}

show_failure() {   # log
	echo "---- last lines of $1 ----" >&2
	tail -${2:-25} "$1" >&2
	echo "----" >&2
}

# ---------------------------------------------------------------- setup
fg_install_deps tests
BUILD_OK=1
if ! fg_build_install; then
	BUILD_OK=0
	record build 0 1 "make && make install failed, log $FG_LOGDIR/build.log"
fi
CLUSTER_OK=0
if [ $BUILD_OK = 1 ]; then
	if fg_cluster_start "$PORT" fsync=off synchronous_commit=off full_page_writes=off; then
		CLUSTER_OK=1
		trap 'fg_cluster_stop "$PORT"' EXIT
	else
		record cluster 0 1 "scratch cluster did not start"
	fi
fi
MAKE_FLAGS=$(fg_make_flags)

# ---------------------------------------------------------------- engine
if want engine; then
	if [ -f test/engine/Makefile ]; then
		log=$FG_LOGDIR/engine.log
		# (1800 s: under ASan the float64 reference fits dominate; on a slow 2-core machine the
		# suite took 887-898 s, where a whole CI run had taken about 6 minutes in earlier stops)
		# shellcheck disable=SC2086
		run_logged 1800 "$log" make -C test/engine check
		rc=$?
		record_from_log engine "$log" $rc
		[ "${FAIL[engine]}" -gt 0 ] && show_failure "$log"
	else
		record engine 0 0 "absent: no test/engine/Makefile yet"
	fi
fi

# ---------------------------------------------------------------- regress
if want regress; then
	if [ $CLUSTER_OK = 1 ] && grep -qE '^REGRESS' Makefile; then
		log=$FG_LOGDIR/regress.log
		# shellcheck disable=SC2086
		run_logged 900 "$log" make $MAKE_FLAGS installcheck PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER="$PGUSER"
		rc=$?
		# pg_regress 15 prints "test NAME ... ok" / "... FAILED" (also inside parallel groups)
		p=$(grep -acE '\.\.\. ok( |$)|\.\.\. ok +[0-9]+ ms' "$log")
		f=$(grep -acE '\.\.\. FAILED' "$log")
		note=""
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note="exit $rc"; fi
		[ "$rc" -eq 124 ] && note="timed out"
		[ "$f" -gt 0 ] && [ -f regression.diffs ] && cp regression.diffs "$FG_LOGDIR/" && note="${note:+$note, }diffs in $FG_LOGDIR/regression.diffs"
		record regress "$p" "$f" "$note"
		[ "$f" -gt 0 ] && { show_failure "$log"; [ -f regression.diffs ] && head -60 regression.diffs >&2; }
	elif [ $CLUSTER_OK = 1 ]; then
		record regress 0 0 "absent: no REGRESS in Makefile"
	else
		record regress 0 0 "not run: no cluster"
	fi
fi

# ---------------------------------------------------------------- tap
if want tap; then
	if ls test/t/*.pl >/dev/null 2>&1 && [ $BUILD_OK = 1 ]; then
		log=$FG_LOGDIR/tap.log
		tapdir=$FG_LOGDIR/tap
		mkdir -p "$tapdir"
		chown "$(fg_cluster_user)" "$tapdir"
		pgxs_dir=$(dirname "$("$PG_CONFIG" --pgxs)")/..
		srcdir=$FG_ROOT
		# the tests run as the cluster user (initdb refuses root): make sure it can read them
		if ! fg_as_pguser test -r "$FG_ROOT/test/t" || ! fg_as_pguser test -x "$FG_ROOT/test/t"; then
			srcdir=$tapdir/src
			mkdir -p "$srcdir" && cp -r "$FG_ROOT/test" "$srcdir/test"
			chown -R "$(fg_cluster_user)" "$srcdir"
		fi
		# every node the tests create gets this appended to its postgresql.conf
		: >"$tapdir/temp.conf"
		fg_jit_ok || echo "jit = off" >>"$tapdir/temp.conf"
		chmod 644 "$tapdir/temp.conf"
		# shellcheck disable=SC2046
		(cd "$srcdir" && run_logged 1200 "$log" $(fg_pguser_prefix) env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE \
			TESTDIR="$tapdir" PATH="$PG_BIN:$PATH" PG_REGRESS="$pgxs_dir/test/regress/pg_regress" \
			TEMP_CONFIG="$tapdir/temp.conf" \
			prove -v -I "$pgxs_dir/test/perl" -I test/t test/t/*.pl)
		rc=$?
		p=$(grep -acE '^ *ok [0-9]+' "$log")
		f=$(grep -aE '^ *not ok [0-9]+' "$log" | grep -vc '# TODO')
		# scripts that died (non-zero exit, missing plan) without a failed assertion count once each
		died=$(grep -aE '^test/t/\S+ +\(Wstat: [1-9][0-9]* .*Failed: 0\)' "$log" | wc -l)
		f=$((f + died))
		note=""
		[ "$died" -gt 0 ] && note="$died script(s) died"
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note="exit $rc (a script died or planned tests were not run)"; fi
		[ "$rc" -eq 124 ] && note="timed out"
		record tap "$p" "$f" "$note${note:+, }logs $tapdir/tmp_check/log"
		[ "$f" -gt 0 ] && show_failure "$log" 40
	else
		record tap 0 0 "absent: no test/t/*.pl yet"
	fi
fi

# ---------------------------------------------------------------- recall
if want recall; then
	if [ $CLUSTER_OK = 1 ]; then
		log=$FG_LOGDIR/recall.log
		run_logged 1200 "$log" bash test/recall/run.sh
		record_from_log recall "$log" $?
		[ "${FAIL[recall]}" -gt 0 ] && show_failure "$log" 40
	else
		record recall 0 0 "not run: no cluster"
	fi
fi

# ---------------------------------------------------------------- bench (smoke)
if want bench; then
	if [ $CLUSTER_OK = 1 ] && [ -f bench/run.sh ]; then
		log=$FG_LOGDIR/bench.log
		run_logged 600 "$log" bash bench/run.sh --quick --out "$FG_LOGDIR/bench-quick"
		record_from_log bench "$log" $?
		[ "${FAIL[bench]}" -gt 0 ] && show_failure "$log" 40
	elif [ $CLUSTER_OK = 1 ]; then
		record bench 0 0 "absent: no bench/run.sh yet"
	else
		record bench 0 0 "not run: no cluster"
	fi
fi

# ---------------------------------------------------------------- gpu
# test/gpu/run_tests.sh prints PASS / FAIL / SKIP lines (SKIP without a GPU); it builds the CUDA
# library with nvcc, so without a CUDA toolkit the suite is skipped.
if want gpu; then
	log=$FG_LOGDIR/gpu.log
	if [ -f test/gpu/run_tests.sh ]; then
		if command -v nvcc >/dev/null 2>&1; then
			run_logged 900 "$log" bash test/gpu/run_tests.sh
			rc=$?
			p=$(grep -acE '^PASS' "$log")
			f=$(grep -acE '^FAIL' "$log")
			sk=$(grep -aE '^SKIP' "$log" | head -1 | cut -c1-90)
			note=${sk:+$sk}
			if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note="${note:+$note, }exit $rc"; fi
			record gpu "$p" "$f" "$note"
			[ "$f" -gt 0 ] && show_failure "$log"
		else
			record gpu 0 0 "SKIP: no CUDA toolkit (nvcc) on this machine"
		fi
	elif [ -f test/gpu/Makefile ]; then
		# shellcheck disable=SC2086
		run_logged 900 "$log" make -C test/gpu check $MAKE_FLAGS
		record_from_log gpu "$log" $?
	else
		record gpu 0 0 "absent: no test/gpu/run_tests.sh yet"
	fi
fi

# ---------------------------------------------------------------- summary
[ $CLUSTER_OK = 1 ] && { fg_cluster_stop "$PORT"; trap - EXIT; }
TP=0 TF=0
echo
echo "== flashgmm test summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(( $(date +%s) - T0 ))s, logs in $FG_LOGDIR)"
printf '%-9s %7s %7s  %s\n' suite passed failed note
for s in "${ORDER[@]}"; do
	printf '%-9s %7d %7d  %s\n' "$s" "${PASS[$s]}" "${FAIL[$s]}" "${NOTE[$s]}"
	TP=$((TP + PASS[$s]))
	TF=$((TF + FAIL[$s]))
done
echo "$TP passed, $TF failed"
[ "$TF" -eq 0 ]
