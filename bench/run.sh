#!/bin/bash
# bench/run.sh - runs bench/flashgmm_bench on one data set of ../shared/data.
#
#   bench/run.sh --quick                       smoke test on sift-10k (< 2 minutes): gmmivf, the
#                                              max_assign = 1 ablation and exact search, short grid;
#                                              ends with "N passed, N failed" (recall sanity, no timings)
#   bench/run.sh --dataset sift-opencv-100k    the full comparison (see bench/flashgmm_bench.c)
#   bench/run.sh --dataset glove-twitter-25 -- --clients 4 --probes 1,2,4,8
#                                              arguments after -- go to flashgmm_bench
#
# Uses the server in PGHOST/PGPORT when one answers there (test/run-all.sh starts one); otherwise
# installs what is missing, builds and installs flashgmm and starts a scratch cluster on port
# FLASHGMM_BENCH_PORT (5447), stopped at the end.  pgvector's ivfflat/hnsw run when the "vector"
# extension is installed in that server.  Results: --out DIR (default /tmp/flashgmm-bench/NAME):
# results.md, results.tsv, recall_qps.png, recall_distances.png.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../scripts/lib.sh
. "$here/../scripts/lib.sh"

QUICK=0 DATASET="" OUT="" EXTRA=()
while [ $# -gt 0 ]; do
	case $1 in
		--quick) QUICK=1 ;;
		--dataset) DATASET=$2; shift ;;
		--out) OUT=$2; shift ;;
		--) shift; EXTRA=("$@"); break ;;
		-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
		*) echo "unknown option $1 (flashgmm_bench options go after --)" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$DATASET" ] || DATASET=sift-10k
[ -n "$OUT" ] || OUT=/tmp/flashgmm-bench/$DATASET
mkdir -p "$OUT"
export FG_LOGDIR=${FG_LOGDIR:-$OUT}

if [ ! -f "$FLASHGMM_DATA/$DATASET/base.fvecs" ]; then
	echo "no data set $FLASHGMM_DATA/$DATASET (set FLASHGMM_DATA)"
	[ $QUICK = 1 ] && echo "0 passed, 1 failed"
	exit 1
fi

OWN_CLUSTER=0
if [ -z "${PGPORT:-}" ] || ! "$PG_BIN/pg_isready" -q -h "${PGHOST:-/tmp}" -p "$PGPORT" 2>/dev/null; then
	fg_install_deps
	fg_build_install || { [ $QUICK = 1 ] && echo "0 passed, 1 failed"; exit 1; }
	port=${FLASHGMM_BENCH_PORT:-5447}
	fg_cluster_start "$port" || { [ $QUICK = 1 ] && echo "0 passed, 1 failed"; exit 1; }
	OWN_CLUSTER=1
	trap 'fg_cluster_stop "$port"' EXIT
fi
export PGHOST=${PGHOST:-/tmp}

if ! fg_build_tools; then
	echo "cannot compile bench/flashgmm_bench.c (libpq-dev missing?)"
	[ $QUICK = 1 ] && echo "0 passed, 1 failed"
	exit 1
fi

args=(--data "$FLASHGMM_DATA/$DATASET" --out "$OUT")
[ $QUICK = 1 ] && args+=(--quick --db flashgmm_bench_quick)
fg_log "flashgmm_bench ${args[*]} ${EXTRA[*]}"
"$FG_BUILD/flashgmm_bench" "${args[@]}" "${EXTRA[@]}"
rc=$?
[ $OWN_CLUSTER = 1 ] && { fg_cluster_stop "$port"; trap - EXIT; }
exit $rc
