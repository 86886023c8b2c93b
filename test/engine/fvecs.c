/* fvecs.c - texmex .fvecs reader for the engine tests and benchmark. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fvecs.h"

#ifndef FLASHGMM_REPO
#define FLASHGMM_REPO "."
#endif

const char *
fvecs_data_dir(void)
{
	const char *e = getenv("FLASHGMM_DATA");

	if (e && e[0])
		return e;
	return FLASHGMM_REPO "/../shared/data";
}

void
fvecs_base_path(const char *set, char *buf, int len)
{
	snprintf(buf, (size_t) len, "%s/%s/base.fvecs", fvecs_data_dir(), set);
}

float *
fvecs_read(const char *path, int64_t max_rows, int64_t *n, int *d, char *errbuf, int errlen)
{
	FILE	   *f = fopen(path, "rb");
	int32_t		dim;
	long		size;
	int64_t		rows;
	float	   *X;

	if (f == NULL)
	{
		snprintf(errbuf, (size_t) errlen, "cannot open %s", path);
		return NULL;
	}
	if (fread(&dim, 4, 1, f) != 1 || dim < 1 || dim > (1 << 20))
	{
		snprintf(errbuf, (size_t) errlen, "%s: bad header", path);
		fclose(f);
		return NULL;
	}
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (size % (4 + 4 * (long) dim) != 0)
	{
		snprintf(errbuf, (size_t) errlen, "%s: size %ld is not a multiple of the record size", path, size);
		fclose(f);
		return NULL;
	}
	rows = size / (4 + 4 * (long) dim);
	if (max_rows > 0 && rows > max_rows)
		rows = max_rows;
	X = malloc(sizeof(float) * (size_t) rows * dim);
	if (X == NULL)
	{
		snprintf(errbuf, (size_t) errlen, "%s: out of memory", path);
		fclose(f);
		return NULL;
	}
	for (int64_t i = 0; i < rows; i++)
	{
		int32_t		dd;

		if (fread(&dd, 4, 1, f) != 1 || dd != dim ||
			fread(X + i * dim, 4, (size_t) dim, f) != (size_t) dim)
		{
			snprintf(errbuf, (size_t) errlen, "%s: bad record %lld", path, (long long) i);
			free(X);
			fclose(f);
			return NULL;
		}
	}
	fclose(f);
	*n = rows;
	*d = dim;
	return X;
}
