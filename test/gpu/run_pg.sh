#!/bin/bash
# run_pg.sh - on the GPU machine: CREATE INDEX on 1M rows of 128-d clustered vectors with
# lists = 1024 under flashgmm.device = gpu and = cpu; build phases (pg_stat_progress_create_index)
# and recall of both on the same queries, through bench/flashgmm_bench.
#   test/gpu/run_pg.sh OUTDIR [N]
# Needs, carried in .gpu/: debs/ (get-debs.sh), start-pg.sh, rt/ + blas/ (setup_device.sh),
# build/flashgmm_cuda.so (test/gpu/build.sh) and build/flashgmm_bench (bench/).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTD=${1:-/tmp/pg-gpu}
N=${2:-1000000}
mkdir -p "$OUTD"
bash test/gpu/setup_device.sh
bash .gpu/start-pg.sh .gpu/debs || exit 1
PGB=/usr/lib/postgresql/15/bin
export PATH=$PGB:$PATH
t0=$(date +%s)
make -s NO_CUDA=1 with_llvm=no PG_CONFIG=$PGB/pg_config >/tmp/make.log 2>&1 &&
	make -s NO_CUDA=1 with_llvm=no PG_CONFIG=$PGB/pg_config install >>/tmp/make.log 2>&1 || { tail -30 /tmp/make.log; exit 1; }
cp .gpu/build/flashgmm_cuda.so "$($PGB/pg_config --pkglibdir)/" || exit 1
echo "extension built and installed in $(( $(date +%s) - t0 )) s"
gcc -O3 -march=native -fopenmp -Itest/gpu test/gpu/make_synth.c -o /tmp/make_synth -lm || exit 1
/tmp/make_synth /tmp/synth "$N" 128 "${QUERIES:-100}" 1000 1.0 || exit 1
export PGHOST=/tmp PGUSER=pgu
psql -d postgres -c "CREATE DATABASE fgpg" >/dev/null
psql -d fgpg -c "CREATE EXTENSION flashgmm" -c "SELECT flashgmm_gpu_status()"
common=(--data /tmp/synth --db fgpg --methods gmmivf --lists 1024 --probes ${PROBES:-16} --clients 1 --queries ${QUERIES:-100} --exact-queries 0)
echo "=== device = gpu"
PGOPTIONS="-c flashgmm.device=gpu -c maintenance_work_mem=4GB" .gpu/build/flashgmm_bench "${common[@]}" \
	--name synth1m --variant gmmivf-fulltable:sample_rows=$N --out "$OUTD/gpu" > "$OUTD/gpu.log" 2>&1
grep -v "^$" "$OUTD/gpu.log" | tail -12
echo "=== device = cpu"
PGOPTIONS="-c flashgmm.device=cpu -c maintenance_work_mem=4GB" .gpu/build/flashgmm_bench "${common[@]}" \
	--name synth1m --reuse --out "$OUTD/cpu" > "$OUTD/cpu.log" 2>&1
grep -v "^$" "$OUTD/cpu.log" | tail -12
for d in gpu cpu; do echo "=== results $d"; grep "^| gmmivf\|COPY" "$OUTD/$d/results.md" 2>/dev/null | head -12; done
