/* fvecs.h - read texmex .fvecs files (int32 d, then d float32, per vector). */
#ifndef FLASHGMM_TEST_FVECS_H
#define FLASHGMM_TEST_FVECS_H

#include <stdint.h>

/*
 * Read at most max_rows vectors (0 = all) of the fvecs file at path.
 * Returns a malloc'd row-major array and sets *n and *d, or NULL with a
 * message in errbuf.
 */
float	   *fvecs_read(const char *path, int64_t max_rows, int64_t *n, int *d,
					   char *errbuf, int errlen);

/* Directory of the benchmark data: $FLASHGMM_DATA, else <repo>/../shared/data
 * where <repo> is given at compile time (FLASHGMM_REPO). */
const char *fvecs_data_dir(void);

/* fvecs_data_dir()/<set>/base.fvecs into buf */
void		fvecs_base_path(const char *set, char *buf, int len);

#endif
