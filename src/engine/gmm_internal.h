/*
 * gmm_internal.h - helpers shared by the CPU engine files (gmm_model.c,
 * gmm_cpu.c).  Not part of the public contract (gmm.h).
 */
#ifndef FLASHGMM_ENGINE_GMM_INTERNAL_H
#define FLASHGMM_ENGINE_GMM_INTERNAL_H

#include <stdarg.h>

#include "gmm.h"

#if defined(__GNUC__)
#define GMM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define GMM_PRINTF(a, b)
#endif

/* Fill err (when not NULL) with code and a formatted message. */
void		gmm_set_error(gmm_error *err, gmm_status code, const char *fmt,...) GMM_PRINTF(3, 4);
/* Same, and return code. */
gmm_status	gmm_fail(gmm_error *err, gmm_status code, const char *fmt,...) GMM_PRINTF(3, 4);

#endif
