#!/bin/bash
# setup_device.sh - on the GPU machine (no package registry): unpack the OpenBLAS runtime
# debs carried in .gpu/rt (libopenblas0-pthread, libgfortran5, libquadmath0; libgomp1 only
# when the machine lacks it), so that the engine and the extension link and run.
# Fetch them here with:  (mkdir -p .gpu/rt && cd .gpu/rt && apt-get download libopenblas0-pthread
#   libopenblas0 libgfortran5 libquadmath0 libgomp1)
set -eu
cd "$(dirname "$0")/../.."
d=/usr/lib/x86_64-linux-gnu
for f in .gpu/rt/*.deb; do
	case "$f" in
		*libgomp1_*) [ -e $d/libgomp.so.1 ] && continue ;;
		*libquadmath0_*) [ -e $d/libquadmath.so.0 ] && continue ;;
		*libgfortran5_*) [ -e $d/libgfortran.so.5 ] && continue ;;
	esac
	dpkg -x "$f" /
done
[ -e $d/libopenblas.so.0 ] || ln -sf $d/openblas-pthread/libopenblas.so.0 $d/libopenblas.so.0
[ -e $d/libopenblas.so ] || ln -sf $d/openblas-pthread/libopenblas.so.0 $d/libopenblas.so
[ -e /usr/include/cblas.h ] || cp .gpu/blas/*.h /usr/include/
ldconfig
