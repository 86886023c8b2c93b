# flashgmm - PGXS build.
#
#   make                 the extension (CPU engine always; CUDA library when nvcc is found)
#   make install         installs both into PostgreSQL's pkglibdir
#   make installcheck    pg_regress against a running server (see README for the full test command)
#   make tapcheck        TAP tests (test/t: replica, crash, concurrency); run as a non-root user,
#                        they start their own clusters (TESTDIR=dir puts tmp_check/ there)
#   make NO_CUDA=1       skip the CUDA library even when nvcc is present
EXTENSION   = flashgmm
MODULE_big  = flashgmm
DATA        = sql/flashgmm--0.1.0.sql
PGFILEDESC  = "flashgmm - GMM-trained IVF vector index"

ENGINE_OBJS = src/engine/gmm_model.o src/engine/gmm_cpu.o src/engine/gmm_gpu.o
GLUE_OBJS   = src/vector_ops.o src/gmmivf.o src/gmmivf_build.o src/gmmivf_insert.o src/gmmivf_scan.o \
              src/gmmivf_vacuum.o src/gmmivf_cost.o src/gmmivf_validate.o src/gmmivf_utils.o \
              src/gmmivf_engine.o
OBJS        = $(GLUE_OBJS) $(ENGINE_OBJS)

REGRESS      = operators gmmivf_options gmmivf_scan gmmivf_bad_input gmmivf_dml gmmivf_iterative gmmivf_highdim gmmivf_balance

PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -std=gnu11 -O2
PG_CPPFLAGS = -I$(srcdir)/src -I$(srcdir)/src/engine
SHLIB_LINK  = -lopenblas -lm -ldl

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies (Debian builds without --enable-depend):
# rebuild every object when a header of ours changes.
$(OBJS): $(wildcard $(srcdir)/src/*.h $(srcdir)/src/engine/*.h)

# TAP tests with PostgreSQL::Test::Cluster (Debian ships it under pgxs/src/test/perl)
PG_BINDIR := $(shell $(PG_CONFIG) --bindir)
tapcheck:
	cd $(srcdir) && TESTDIR=$${TESTDIR:-$(CURDIR)} PATH="$(PG_BINDIR):$$PATH" \
	PG_REGRESS='$(pgxsdir)/src/test/regress/pg_regress' \
	$(or $(PROVE),prove) $(PROVE_FLAGS) -I '$(pgxsdir)/src/test/perl' -I test/t test/t/*.pl
.PHONY: tapcheck

# --- cuda ---
# The CUDA engine (cuda/) as its own shared library, flashgmm_cuda.so, built
# with nvcc when it is found (PATH or /usr/local/cuda/bin) unless NO_CUDA=1.
# The extension never links it: src/engine/gmm_gpu.c dlopens
# $libdir/flashgmm_cuda.so in the backend that wants the GPU.  cudart is
# linked statically, so the library needs only the driver (libcuda.so);
# cuBLAS (libcublas.so.13) is dlopened at run time when present (the faster
# E pass, cuda/blas.cuh), else the engine runs its own kernels.
# Targets: sm_90a machine code (H100/H200; the "a" is what lets hopper.cuh use
# wgmma) + compute_80 PTX (any sm_80+ GPU).
NVCC ?= $(shell command -v nvcc 2>/dev/null || ( test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc ))
CUDA_ARCH_FLAGS ?= -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=compute_80
NVCC_FLAGS ?= -O3 -std=c++17 -Xcompiler -fPIC -Xcompiler -fvisibility=hidden -Xcompiler -Wall -Xcompiler -Wextra $(CUDA_ARCH_FLAGS)
CUDA_LIB = flashgmm_cuda$(DLSUFFIX)
CUDA_SRCS = cuda/flashgmm_cuda.cu
CUDA_DEPS = $(CUDA_SRCS) cuda/kernels.cuh cuda/chunked.cuh cuda/half.cuh cuda/hopper.cuh cuda/blas.cuh cuda/flashgmm_cuda.h src/engine/gmm.h
ifeq ($(NO_CUDA),)
ifneq ($(NVCC),)
all: $(CUDA_LIB)
install: install-cuda
endif
endif
$(CUDA_LIB): $(CUDA_DEPS)
	$(NVCC) $(NVCC_FLAGS) -shared -o $@ $(CUDA_SRCS) -cudart static -ldl -Xlinker --exclude-libs,ALL
install-cuda: $(CUDA_LIB)
	$(INSTALL_SHLIB) $(CUDA_LIB) '$(DESTDIR)$(pkglibdir)/$(CUDA_LIB)'
clean: clean-cuda
clean-cuda:
	rm -f $(CUDA_LIB)
.PHONY: install-cuda clean-cuda
# --- end cuda ---
