#!/usr/bin/env bash
# install_test.sh BUILD_DIR SOURCE_DIR [C_FLAGS]
#
# Installs the build tree into a scratch prefix, then builds the
# producer/consumer example as a separate project against it twice - with
# CMake's find_package(libdist) and with pkg-config - and runs both.
# C_FLAGS carries the sanitizer flags when the library was built with them.
set -euo pipefail
BUILD=$1 SRC=$2 CFLAGS_EXTRA=${3:-}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PREFIX=$TMP/prefix

cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
for f in include/dist.h include/dist/queue.h lib/libdist.so lib/libdist.a \
         lib/pkgconfig/libdist.pc lib/cmake/libdist/libdistConfig.cmake; do
    [ -e "$PREFIX/$f" ] || { echo "not installed: $f" >&2; exit 1; }
done
# Only the documented API is exported from the shared library.
if nm -D --defined-only "$PREFIX/lib/libdist.so" | awk '{print $3}' | grep -v '^dist_' | grep -v '^_' ; then
    echo "libdist.so exports symbols outside the dist_ namespace" >&2
    exit 1
fi
if nm -D --defined-only "$PREFIX/lib/libdist.so" | awk '{print $3}' | grep '^dist__'; then
    echo "libdist.so exports internal dist__ symbols" >&2
    exit 1
fi

# 1. CMake package: every example (those listed in examples/CMakeLists.txt)
#    is a standalone project; build each against the installed tree, and run
#    those that need no cluster.
for name in $(sed -n 's/^add_subdirectory(\(.*\))$/\1/p' "$SRC/examples/CMakeLists.txt"); do
    dir="$SRC/examples/$name"
    cmake -S "$dir" -B "$TMP/ex-$name" -DCMAKE_PREFIX_PATH="$PREFIX" \
          -DCMAKE_C_FLAGS="$CFLAGS_EXTRA" -DCMAKE_EXE_LINKER_FLAGS="$CFLAGS_EXTRA" \
          -DCMAKE_SHARED_LINKER_FLAGS="$CFLAGS_EXTRA" -DCMAKE_MODULE_LINKER_FLAGS="$CFLAGS_EXTRA" >/dev/null
    cmake --build "$TMP/ex-$name" >/dev/null
    echo "built examples/$name against the installed tree"
done
export LD_LIBRARY_PATH="$PREFIX/lib"
"$TMP/ex-producer_consumer/producer_consumer" | tee "$TMP/out1"
grep -q 'reader: got C' "$TMP/out1"
"$TMP/ex-pool_map/pool_map" 1000 | grep -q 'sum of squares of 0..997 = 330839495'
"$TMP/ex-queue_pipeline/queue_pipeline" | grep -q 'received 100000 of 100000 squares, 0 bad'
"$TMP/ex-subprocess/subprocess_example" >/dev/null

# 2. pkg-config.
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 $CFLAGS_EXTRA -o "$TMP/pc" "$SRC/examples/producer_consumer/main.c" \
   $(pkg-config --cflags --libs libdist)
"$TMP/pc" | tee "$TMP/out2"
grep -q 'reader: got C' "$TMP/out2"
echo "install test: ok"
