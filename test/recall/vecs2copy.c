/*
 * vecs2copy - turn a texmex .fvecs or .ivecs file into COPY text for psql.
 *
 *   vecs2copy FILE [MAX_ROWS]
 *
 * Writes one line per vector: "<id>\t{v1,v2,...}" where id is the 0-based row
 * number (the numbering groundtruth.ivecs uses).  Floats are printed with
 * %.9g, which round-trips a float32 exactly.  The file type is taken from the
 * name (.ivecs gives integers).  Usage with psql:
 *
 *   \copy base (id, v) FROM PROGRAM 'vecs2copy base.fvecs'
 *
 * No PostgreSQL dependency: it runs wherever a C compiler does.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
main(int argc, char **argv)
{
	FILE	   *f;
	int			is_int;
	long		max_rows = -1, row = 0;
	size_t		len;
	int32_t		d;
	void	   *buf = NULL;
	int32_t		cap = 0;

	if (argc < 2)
	{
		fprintf(stderr, "usage: %s FILE.fvecs|FILE.ivecs [MAX_ROWS]\n", argv[0]);
		return 2;
	}
	if (argc > 2)
		max_rows = atol(argv[2]);
	len = strlen(argv[1]);
	is_int = len > 6 && strcmp(argv[1] + len - 6, ".ivecs") == 0;
	f = fopen(argv[1], "rb");
	if (!f)
	{
		perror(argv[1]);
		return 1;
	}
	while ((max_rows < 0 || row < max_rows) && fread(&d, 4, 1, f) == 1)
	{
		if (d <= 0 || d > (1 << 24))
		{
			fprintf(stderr, "%s: row %ld: bad dimension %d\n", argv[1], row, (int) d);
			return 1;
		}
		if (d > cap)
		{
			cap = d;
			buf = realloc(buf, (size_t) cap * 4);
			if (!buf)
			{
				fprintf(stderr, "out of memory\n");
				return 1;
			}
		}
		if (fread(buf, 4, (size_t) d, f) != (size_t) d)
		{
			fprintf(stderr, "%s: row %ld: truncated\n", argv[1], row);
			return 1;
		}
		printf("%ld\t{", row);
		for (int32_t i = 0; i < d; i++)
		{
			if (i)
				putchar(',');
			if (is_int)
				printf("%d", (int) ((int32_t *) buf)[i]);
			else
				printf("%.9g", (double) ((float *) buf)[i]);
		}
		fputs("}\n", stdout);
		row++;
	}
	fclose(f);
	free(buf);
	return 0;
}
