# Shared by the scripts in scripts/: the Debian packages the project needs
# and how to get them. Sourced, not run.

# Packages to build and run libdist.
DIST_BUILD_PACKAGES="build-essential cmake pkg-config libzmq3-dev libczmq-dev libmsgpack-dev libjansson-dev libmicrohttpd-dev libsqlite3-dev help2man"
# Extra packages for the test suite and the benchmarks (clang and its
# runtime libraries for the libFuzzer smoke run at the end of scripts/test;
# Debian's chromium for the dashboard test, run headless; gnuplot for
# scripts/bench --plot; nodejs for dashboard_js (node --check); iproute2
# for the network-namespace tests, netns_cluster and security_capture,
# which a minimal Debian image lacks).
DIST_TEST_PACKAGES="libcmocka-dev python3 python3-zmq python3-msgpack clang libclang-rt-14-dev tcpdump gnuplot-nox chromium nodejs iproute2"

dist_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# dist_missing PKG... : prints the packages that are not installed.
dist_missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

# dist_deps PKG... : installs what is missing with apt-get when root;
# otherwise prints the exact command and fails.
dist_deps() {
    local missing
    missing=$(dist_missing "$@" | tr '\n' ' ')
    missing=${missing% }
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "libdist needs these Debian packages: $missing" >&2
        echo "Install them as root with:" >&2
        echo "  apt-get install -y --no-install-recommends $missing" >&2
        return 1
    fi
    echo "installing: $missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Try without refreshing first: a fresh machine may have stale lists,
    # so refresh and retry once on failure.
    apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y --no-install-recommends $missing >/dev/null; } ||
        { echo "apt-get install failed for: $missing" >&2; return 1; }
}

# The Python used for the Python side of benchmarks and tests: Debian's,
# which is where python3-* packages go.
dist_python() {
    if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi
}

dist_jobs() { nproc 2>/dev/null || echo 2; }

# dist_stop PID... : SIGTERM to each of our background processes, up to
# 5 s for them to exit, SIGKILL to those left, then reaps them all. Never
# fails (for cleanup traps under set -e).
dist_stop() {
    local p alive
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for p in "$@"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    return 0
}

# dist_master_endpoint LOG [TRIES] : waits (TRIES x 50 ms, default 200)
# for dist-master's "listening on tcp://..." line in LOG and prints the
# endpoint; fails when it never comes.
dist_master_endpoint() {
    local ep
    for _ in $(seq "${2:-200}"); do
        ep=$(sed -n 's/.*listening on \(tcp:\/\/[0-9.:]*\).*/\1/p' "$1" 2>/dev/null | head -1)
        [ -n "$ep" ] && { echo "$ep"; return 0; }
        sleep 0.05
    done
    return 1
}
