#!/bin/bash
# pyzmq_curve.sh BUILD_DIR - docs/PROTOCOL.md section 9.6 taken at its
# word: a Python peer written from the document (pyzmq, keys from
# `dist keygen` read with zmq.auth.load_certificate) connects to a CURVE
# dist-master on 127.0.0.1 and is welcomed as a client; the same peer with
# a worker's key is refused in the client role; one with the wrong master
# key gets no answer. Skipped (77) without pyzmq.
set -u
BUILD=$1
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"
PY=""
for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import zmq, zmq.auth' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "skipped: no pyzmq (Debian: python3-zmq)"; exit 77; }

TMP=$(mktemp -d)
MPID=""
cleanup() {
    [ -z "$MPID" ] || dist_stop "$MPID"
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "pyzmq_curve: FAILED: $*" >&2; cat "$TMP/master.log" >&2; exit 1; }

for k in master me w other; do "$BUILD/cli/dist" keygen "$TMP/$k" >/dev/null || fail "keygen $k"; done
mkdir "$TMP/workers" "$TMP/clients"
cp "$TMP/me.pub" "$TMP/clients/"
cp "$TMP/w.pub" "$TMP/workers/"
"$BUILD/master/dist-master" --bind tcp://127.0.0.1:0 --key "$TMP/master.key" \
    --allow-workers "$TMP/workers" --allow-clients "$TMP/clients" >"$TMP/master.log" 2>&1 &
MPID=$!
EP=$(dist_master_endpoint "$TMP/master.log") || fail "the master did not start"

# peer KEY SERVERKEY: prints the command of the master's first answer, or
# "none" when nothing comes within 5 s.
peer() {
    "$PY" - "$EP" "$1" "$2" <<'PY'
import sys, zmq, zmq.auth
ep, key, server = sys.argv[1:4]
ctx = zmq.Context.instance()
s = ctx.socket(zmq.DEALER)
pub, sec = zmq.auth.load_certificate(key)
master_pub, _ = zmq.auth.load_certificate(server)
s.curve_publickey, s.curve_secretkey = pub, sec
s.curve_serverkey = master_pub
s.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
s.setsockopt(zmq.HANDSHAKE_IVL, 3000)
s.setsockopt(zmq.LINGER, 0)
s.connect(ep)
def st(b):
    return bytes([0xa0 | len(b)]) + b
body = (bytes([0x84]) + st(b"role") + st(b"client") + st(b"name") + st(b"py") +
        st(b"host") + st(b"h") + st(b"pid") + bytes([1]))
s.send_multipart([b"DST\x01", b"HELLO", body])
print(s.recv_multipart()[1].decode() if s.poll(5000) else "none")
PY
}
got=$(peer "$TMP/me.key" "$TMP/master.pub") || fail "python peer crashed"
[ "$got" = "WELCOME" ] || fail "client key: expected WELCOME, got $got"
got=$(peer "$TMP/w.key" "$TMP/master.pub") || fail "python peer crashed"
[ "$got" = "ERROR" ] || fail "worker key as client: expected ERROR (forbidden), got $got"
got=$(peer "$TMP/me.key" "$TMP/other.pub") || fail "python peer crashed"
[ "$got" = "none" ] || fail "wrong master key: expected no answer, got $got"
echo "pyzmq_curve: ok"
