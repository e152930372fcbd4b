#!/usr/bin/env bash
# install_test.sh BUILD_DIR SOURCE_DIR [C_FLAGS]
#
# Installs the build tree into a scratch prefix, then builds the
# producer/consumer example as a separate project against it twice - with
# CMake's find_package(libdist) and with pkg-config - and runs both; every
# other example is built against it too, and run (the classic one both
# serving its own queues and against the installed dist-master).
# C_FLAGS carries the sanitizer flags when the library was built with them.
set -euo pipefail
BUILD=$1 SRC=$2 CFLAGS_EXTRA=${3:-}
# shellcheck source=scripts/lib/common.sh
source "$SRC/scripts/lib/common.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PREFIX=$TMP/prefix

cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
for f in include/dist.h include/dist/queue.h lib/libdist.so lib/libdist.a \
         lib/libdist-local.so lib/libdist-local.a lib/pkgconfig/libdist-local.pc \
         lib/pkgconfig/libdist.pc lib/cmake/libdist/libdistConfig.cmake; do
    [ -e "$PREFIX/$f" ] || { echo "not installed: $f" >&2; exit 1; }
done
# Man pages, generated from --help when help2man is there (scripts install it).
if command -v help2man >/dev/null; then
    for p in dist-master dist-worker dist; do
        page="$PREFIX/share/man/man1/$p.1"
        [ -s "$page" ] || { echo "not installed: man page $page" >&2; exit 1; }
        grep -q '^\.SH OPTIONS\|^\.SH DESCRIPTION' "$page" || { echo "$page has no sections" >&2; exit 1; }
        # The footer's centre is "PROGRAM VERSION" alone: longer, it runs into
        # the date on an 80-column page.
        th=$(grep '^\.TH' "$page")
        [[ "$th" =~ \"$p\ [0-9]+\.[0-9]+\.[0-9]+\"\ \"User\ Commands\"$ ]] ||
            { echo "$page: footer '$th'" >&2; exit 1; }
    done
    grep -q 'max\\-attempts' "$PREFIX/share/man/man1/dist-master.1"
    grep -q '^\.SS "map"' "$PREFIX/share/man/man1/dist.1"
fi
# While at 0.x the soname carries the minor version (libdist/CMakeLists.txt):
# a program built against 0.1 never loads a 0.2 library.
ver=$(sed -n 's/^project(libdist VERSION \([0-9]*\)\.\([0-9]*\)\..*/\1.\2/p' "$SRC/CMakeLists.txt")
case "$ver" in 0.*) want_so=$ver ;; *) want_so=${ver%%.*} ;; esac
for lib in libdist libdist-local; do
    soname=$(readelf -d "$PREFIX/lib/$lib.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
    [ "$soname" = "$lib.so.$want_so" ] || { echo "$lib.so: soname '$soname', expected $lib.so.$want_so" >&2; exit 1; }
done
# Only the documented API is exported from the shared libraries.
for lib in libdist.so libdist-local.so; do
    if nm -D --defined-only "$PREFIX/lib/$lib" | awk '{print $3}' | grep -v '^dist_' | grep -v '^_' ; then
        echo "$lib exports symbols outside the dist_ namespace" >&2
        exit 1
    fi
    if nm -D --defined-only "$PREFIX/lib/$lib" | awk '{print $3}' | grep '^dist__'; then
        echo "$lib exports internal dist__ symbols" >&2
        exit 1
    fi
done
# The local library is the local layer alone: no ZeroMQ, no HTTP, no SQLite.
if readelf -d "$PREFIX/lib/libdist-local.so" | grep -E 'NEEDED.*(zmq|czmq|microhttpd|sqlite|jansson)'; then
    echo "libdist-local.so depends on the distributed layer's libraries" >&2
    exit 1
fi
# Everything in it is in libdist.so too, so that a program can move from
# one to the other without changes.
nm -D --defined-only "$PREFIX/lib/libdist-local.so" | awk '{print $3}' | grep '^dist_' | sort >"$TMP/local.syms"
nm -D --defined-only "$PREFIX/lib/libdist.so" | awk '{print $3}' | grep '^dist_' | sort >"$TMP/all.syms"
if comm -23 "$TMP/local.syms" "$TMP/all.syms" | grep .; then
    echo "libdist-local.so exports symbols that libdist.so lacks" >&2
    exit 1
fi
grep -qx dist_pool_map "$TMP/local.syms"
if grep -qx dist_client_new "$TMP/local.syms"; then
    echo "libdist-local.so exports the client" >&2
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
# No LD_LIBRARY_PATH from here to the pkg-config step: what CMake built and
# installed must find libdist by its RPATH, as on a user's machine.
unset LD_LIBRARY_PATH
for p in dist-master dist-worker dist; do
    if ldd "$PREFIX/bin/$p" | grep -q 'not found'; then
        ldd "$PREFIX/bin/$p" >&2
        echo "installed $p does not find its libraries" >&2
        exit 1
    fi
done
"$TMP/ex-producer_consumer/producer_consumer" | tee "$TMP/out1"
grep -q 'reader: got C' "$TMP/out1"
"$TMP/ex-pool_map/pool_map" 1000 | grep -q 'sum of squares of 0..997 = 330839495'
"$TMP/ex-queue_pipeline/queue_pipeline" | grep -q 'received 100000 of 100000 squares, 0 bad'
"$TMP/ex-subprocess/subprocess_example" >/dev/null
"$TMP/ex-embedded/embedded" -n 20000 | tee "$TMP/out-embedded"
grep -q 'longest Collatz sequence below 20001: 17647, 278 steps' "$TMP/out-embedded"

# The installed programs, with the example task plugin: a master and a
# worker on an ipc endpoint in our scratch directory, killed by pid.
EP="ipc://$TMP/master.ipc"
PIDS=()
stop_cluster() { dist_stop "${PIDS[@]}"; PIDS=(); }
trap 'stop_cluster; rm -rf "$TMP"' EXIT
"$PREFIX/bin/dist-master" --bind "$EP" --log-level warn &
PIDS+=($!)
"$PREFIX/bin/dist-worker" --master "$EP" --procs 1 --log-level warn \
    --tasks "$TMP/ex-task_plugin/text_tasks.so" &
PIDS+=($!)
for _ in $(seq 100); do   # until the worker has announced its tasks
    out=$("$PREFIX/bin/dist" submit text.words '"the quick brown fox"' --master "$EP" 2>/dev/null) && break
    sleep 0.1
done
[ "${out:-}" = 4 ] || { echo "text.words gave '${out:-}', expected 4" >&2; exit 1; }
out=$("$PREFIX/bin/dist" submit text.upper '"abc"' --master "$EP")
[ "$out" = '"ABC"' ] || { echo "text.upper gave '$out'" >&2; exit 1; }
out=$("$PREFIX/bin/dist" submit text.stats '"a bb\nccc"' --master "$EP")
[ "$out" = '{"lines":2,"words":3,"bytes":8}' ] || { echo "text.stats gave '$out'" >&2; exit 1; }
if "$PREFIX/bin/dist" submit text.words 42 --master "$EP" 2>"$TMP/err"; then
    echo "text.words accepted a number" >&2; exit 1
fi
grep -q 'expected one string' "$TMP/err"
# The classic example, as Python's pair: task_master serving its queues
# (BaseManager.start()) to a task_worker that does 10 tasks; then both
# connected to the installed dist-master, the worker stopped by SIGTERM.
classic_results() {
    [ "$(grep -c '^Result: [0-9]* \* [0-9]* = [0-9]*$' "$1")" -eq 10 ] ||
        { cat "$1" >&2; echo "task_master did not print 10 results" >&2; exit 1; }
}
"$TMP/ex-classic/task_master" --bind "ipc://$TMP/classic.ipc" >"$TMP/classic1.out" &
TM=$!
PIDS+=("$TM")
timeout 60 "$TMP/ex-classic/task_worker" --master "ipc://$TMP/classic.ipc" -n 10 >/dev/null
wait "$TM"
classic_results "$TMP/classic1.out"
"$TMP/ex-classic/task_worker" --master "$EP" >/dev/null &
TW=$!
PIDS+=("$TW")
timeout 60 "$TMP/ex-classic/task_master" --master "$EP" >"$TMP/classic2.out"
classic_results "$TMP/classic2.out"
kill -TERM "$TW"
wait "$TW"
stop_cluster
echo "installed programs ran the example task plugin and the classic example"

# 2. pkg-config. A program built with `pkg-config --libs` against a prefix
#    outside the loader's path needs LD_LIBRARY_PATH (or its own -rpath).
export LD_LIBRARY_PATH="$PREFIX/lib"
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 $CFLAGS_EXTRA -o "$TMP/pc" "$SRC/examples/producer_consumer/main.c" \
   $(pkg-config --cflags --libs libdist)
"$TMP/pc" | tee "$TMP/out2"
grep -q 'reader: got C' "$TMP/out2"
# shellcheck disable=SC2046
cc -std=c11 $CFLAGS_EXTRA -o "$TMP/pc-local" "$SRC/examples/producer_consumer/main.c" \
   $(pkg-config --cflags --libs libdist-local)
"$TMP/pc-local" >"$TMP/out-local"
grep -q 'reader: got C' "$TMP/out-local"
readelf -d "$TMP/pc-local" | grep -q 'NEEDED.*libdist-local' || { echo "pc-local does not use libdist-local" >&2; exit 1; }

# 3. The README's pool example, as printed there.
awk '/^## A five-minute tour/ {t = 1} t && /^```c$/ {c = 1; next} c && /^```$/ {exit} c' \
    "$SRC/README.md" >"$TMP/readme.c"
grep -q 'dist_pool_applyf' "$TMP/readme.c" || { echo "README: no pool example found" >&2; exit 1; }
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror $CFLAGS_EXTRA -o "$TMP/readme" "$TMP/readme.c" \
   $(pkg-config --cflags --libs libdist)
"$TMP/readme" | tee "$TMP/out3"
grep -qx '7 \* 7 = 49' "$TMP/out3"
echo "install test: ok"
