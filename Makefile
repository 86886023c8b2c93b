# flashgmm - PGXS build.
#
#   make                 the extension (CPU engine always; CUDA library when nvcc is found)
#   make install         installs both into PostgreSQL's pkglibdir
#   make installcheck    pg_regress against a running server (see README for the full test command)
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

REGRESS      = operators

PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -Wno-comment -std=gnu11 -O2
PG_CPPFLAGS = -I$(srcdir)/src -I$(srcdir)/src/engine
SHLIB_LINK  = -lopenblas -lm -ldl

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
