# scripts/lib.sh - shell helpers shared by scripts/demo.sh, test/run-all.sh,
# test/recall/run.sh and bench/run.sh.  Source it; it defines functions only
# (plus a few variables) and never exits the caller.
#
#   fg_install_deps [tests]   apt-get install what is missing (root only; "tests"
#                             adds what the test suites need)
#   fg_build_install          make && make install (CUDA library when nvcc exists)
#   fg_cluster_start PORT     initdb + start a scratch cluster in /tmp/flashgmm-pg-PORT,
#                             socket in /tmp, exports PGHOST PGPORT PGUSER PGDATABASE
#   fg_cluster_stop PORT      stop it (the data directory is left for inspection)
#   fg_build_tools            compiles bench/*.c and test/recall/*.c into bench/build/
#
# Environment: PG_BIN (default /usr/lib/postgresql/15/bin), FLASHGMM_DATA (default
# <repo>/../shared/data), FLASHGMM_NO_APT=1 to never call apt-get, NO_CUDA=1 to skip
# the CUDA library.

FG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PG_BIN/pg_config}
if [ -z "${FLASHGMM_DATA:-}" ]; then
	FLASHGMM_DATA=$(cd "$FG_ROOT/.." && pwd)/shared/data
fi
export FLASHGMM_DATA PG_BIN PG_CONFIG
# PostgreSQL 15's own programs first (psql, pg_isready): on a machine where the packages were
# unpacked with dpkg -x there is no /usr/bin/psql wrapper.
case ":$PATH:" in *":$PG_BIN:"*) ;; *) export PATH="$PG_BIN:$PATH" ;; esac
# the CUDA toolkit where it usually is, so that make finds nvcc
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
	export PATH="$PATH:/usr/local/cuda/bin"
fi
FG_BUILD=$FG_ROOT/bench/build

fg_log() { echo "[flashgmm $(date -u +%H:%M:%S)] $*" >&2; }

fg_is_root() { [ "$(id -u)" = 0 ]; }

# fg_install_deps [tests]: installs only packages whose files are missing.
fg_install_deps() {
	local want_tests=${1:-}
	local missing=()
	[ -x "$PG_BIN/postgres" ] || missing+=(postgresql-15)
	# (the server headers, not pgxs.mk: Debian 12's postgresql-client-15 ships pgxs.mk without them)
	[ -f /usr/lib/postgresql/15/lib/pgxs/src/makefiles/pgxs.mk ] && [ -f /usr/include/postgresql/15/server/postgres.h ] ||
		missing+=(postgresql-server-dev-15)
	[ -f /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
	command -v make >/dev/null 2>&1 && command -v gcc >/dev/null 2>&1 || missing+=(build-essential)
	compgen -G '/usr/lib/*/libopenblas.so' >/dev/null || compgen -G '/usr/lib/libopenblas.so' >/dev/null || missing+=(libopenblas-dev)
	if [ "$want_tests" = tests ]; then
		perl -MIPC::Run -e1 >/dev/null 2>&1 || missing+=(libipc-run-perl)
		command -v prove >/dev/null 2>&1 || missing+=(perl)
		/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || missing+=(python3-numpy)
		/usr/bin/python3 -c 'import sklearn' >/dev/null 2>&1 || missing+=(python3-sklearn)
		command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
	fi
	[ ${#missing[@]} -eq 0 ] && return 0
	if ! fg_is_root || [ -n "${FLASHGMM_NO_APT:-}" ] || ! command -v apt-get >/dev/null 2>&1; then
		fg_log "missing packages (not installing: not root, no apt-get or FLASHGMM_NO_APT): ${missing[*]}"
		return 0
	fi
	fg_log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || fg_log "apt-get update failed"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		fg_log "apt-get install failed for some of: ${missing[*]} (suites needing them will fail or skip)"
	return 0
}

# Make flags: Debian's PGXS wants clang for JIT bitcode; without clang, skip the bitcode.
fg_make_flags() {
	local clang
	clang=$(sed -n 's/^CLANG *= *//p' "$("$PG_CONFIG" --pgxs | xargs dirname)/../Makefile.global" 2>/dev/null)
	echo "PG_CONFIG=$PG_CONFIG"
	if [ -z "$clang" ] || ! command -v "${clang%% *}" >/dev/null 2>&1; then
		echo "with_llvm=no"
	fi
	if [ -n "${NO_CUDA:-}" ]; then echo "NO_CUDA=1"; fi
	return 0
}

fg_build_install() {
	local flags
	flags=$(fg_make_flags)
	fg_log "building flashgmm ($(echo $flags)); CUDA: $( [ -z "${NO_CUDA:-}" ] && command -v nvcc >/dev/null 2>&1 && echo "nvcc found, building the CUDA library" || echo "CPU only")"
	# shellcheck disable=SC2086
	make -C "$FG_ROOT" -j"$(nproc)" $flags >"${FG_LOGDIR:-/tmp}/build.log" 2>&1 || {
		tail -40 "${FG_LOGDIR:-/tmp}/build.log" >&2
		fg_log "build failed (log: ${FG_LOGDIR:-/tmp}/build.log)"
		return 1
	}
	# shellcheck disable=SC2086
	make -C "$FG_ROOT" $flags install >>"${FG_LOGDIR:-/tmp}/build.log" 2>&1 || {
		tail -20 "${FG_LOGDIR:-/tmp}/build.log" >&2
		fg_log "make install failed (not root? run as root or install by hand)"
		return 1
	}
	fg_log "installed into $("$PG_CONFIG" --pkglibdir)"
}

# Who runs the cluster: postgres when we are root (created when missing, as on a GPU
# machine where the packages were unpacked with dpkg -x), otherwise ourselves.
fg_cluster_user() {
	if fg_is_root; then
		id postgres >/dev/null 2>&1 || useradd -r -m -d /var/lib/postgresql -s /bin/bash postgres
		echo postgres
	else
		id -un
	fi
}

fg_as_pguser() {
	local u
	u=$(fg_cluster_user)
	if fg_is_root; then
		runuser -u "$u" -- "$@"
	else
		"$@"
	fi
}

fg_cluster_dir() { echo "/tmp/flashgmm-pg-$1"; }

# JIT works unless llvmjit.so is installed without its libLLVM (PostgreSQL packages unpacked with
# dpkg -x, as on a GPU machine): then every query costly enough to be JIT-compiled fails.
fg_jit_ok() {
	local so
	so=$("$PG_CONFIG" --pkglibdir)/llvmjit.so
	[ ! -f "$so" ] || ! ldd "$so" 2>/dev/null | grep -q "not found"
}

# fg_cluster_start PORT [extra postgres -c settings...]
fg_cluster_start() {
	local port=$1; shift
	local dir u opts=""
	dir=$(fg_cluster_dir "$port")
	u=$(fg_cluster_user)
	fg_cluster_stop "$port" quiet
	rm -rf "$dir"
	mkdir -p "$dir"
	chown "$u" "$dir"
	fg_as_pguser "$PG_BIN/initdb" -D "$dir/data" -A trust -U "$u" --no-sync -E UTF8 --locale=C \
		>"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
	for s in "$@"; do opts="$opts -c $s"; done
	if ! fg_jit_ok; then
		fg_log "llvmjit.so cannot load its libLLVM here: jit = off"
		opts="$opts -c jit=off"
	fi
	fg_as_pguser "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 \
		-o "-p $port -k /tmp -c listen_addresses= -c max_wal_size=4GB -c shared_buffers=256MB -c maintenance_work_mem=1GB $opts" \
		start >/dev/null || { tail -30 "$dir/server.log" >&2; return 1; }
	export PGHOST=/tmp PGPORT=$port PGUSER=$u PGDATABASE=postgres
	fg_log "scratch cluster up: psql -h /tmp -p $port -U $u postgres (data $dir/data, log $dir/server.log)"
}

fg_cluster_stop() {
	local port=$1 dir
	dir=$(fg_cluster_dir "$port")
	if [ -f "$dir/data/postmaster.pid" ]; then
		fg_as_pguser "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 ||
			fg_as_pguser "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1
		[ "${2:-}" = quiet ] || fg_log "scratch cluster on port $port stopped"
	fi
	return 0
}

# Small C tools (fvecs converter, benchmark) into bench/build/.
fg_build_tools() {
	mkdir -p "$FG_BUILD"
	local inc lib
	inc=$("$PG_CONFIG" --includedir 2>/dev/null || echo /usr/include/postgresql)
	lib=$("$PG_CONFIG" --libdir 2>/dev/null || echo /usr/lib)
	cc -O2 -Wall -o "$FG_BUILD/vecs2copy" "$FG_ROOT/test/recall/vecs2copy.c" || return 1
	if [ -f "$FG_ROOT/bench/flashgmm_bench.c" ]; then
		cc -O2 -Wall -Wno-format-truncation -std=gnu11 -pthread -I"$inc" -o "$FG_BUILD/flashgmm_bench" \
			"$FG_ROOT/bench/flashgmm_bench.c" -L"$lib" -lpq -lm || return 1
	fi
}

# Command prefix that runs a program as the cluster user (empty when not root).
fg_pguser_prefix() {
	if fg_is_root; then echo "runuser -u $(fg_cluster_user) --"; fi
}
