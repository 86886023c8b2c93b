#!/bin/bash
# make_data.sh - packs the accuracy-test data sets (integral values 0..255) as
# gzipped bytes into .gpu/data, so both fit the 64 MiB that travels to the GPU machine.
set -eu
cd "$(dirname "$0")/../.."
mkdir -p .gpu/data
cat > /tmp/fvecs2u8.c <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
int main(int c, char **v) { FILE *f = fopen(v[1], "rb"), *o = fopen(v[2], "wb"); int d; int32_t h[2] = {0, 0};
 float *b = malloc(4 * 100000); uint8_t *u = malloc(100000); long n = 0; fwrite(h, 4, 2, o);
 while (fread(&d, 4, 1, f) == 1) { if (fread(b, 4, d, f) != (size_t) d) return 1;
  for (int i = 0; i < d; i++) { if (b[i] < 0 || b[i] > 255 || b[i] != (float) (int) b[i]) return 2; u[i] = (uint8_t) b[i]; }
  fwrite(u, 1, d, o); n++; }
 h[0] = n; h[1] = d; fseek(o, 0, SEEK_SET); fwrite(h, 4, 2, o); fclose(o); return 0; }
C
gcc -O2 -o /tmp/fvecs2u8 /tmp/fvecs2u8.c
for n in sift-opencv-100k fashion-mnist-784; do
	/tmp/fvecs2u8 ../shared/data/$n/base.fvecs .gpu/data/$n.u8 && gzip -f -9 .gpu/data/$n.u8
done
ls -la .gpu/data
