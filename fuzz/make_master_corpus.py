#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_master into fuzz/corpus/master/, and its
dictionary (command names, MessagePack-encoded keys) into fuzz/master.dict.

Each seed is a session in the record format of fuzz/fuzz_master.c: valid
sessions (workers and clients saying HELLO, submitting, leasing, answering,
acknowledging, named queues, status, deaths, retries, restarts of a master
with a store, a store that cannot write, peers whose pipes are full or
gone) and invalid messages of every kind the master must survive. A small
MessagePack encoder is included (no msgpack module needed). Run it again
after changing it and commit the files it writes.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "master")

SIG = b"DST\x01"
OP_TURN_AFTER, OP_SEND_MODE, OP_RESTART, OP_FAIL, OP_TURN = 0xF0, 0xF1, 0xF2, 0xF3, 0xFF


def pack(v):
    """MessagePack: dict, list, str, bytes, bool, None, int >= 0 or < 0."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 1 << 16:
            return b"\xcd" + struct.pack(">H", v)
        if 0 <= v < 1 << 32:
            return b"\xce" + struct.pack(">I", v)
        if v >= 0:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        if len(b) < 256:
            return b"\xd9" + bytes([len(b)]) + b
        return b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, bytes):
        if len(v) < 256:
            return b"\xc4" + bytes([len(v)]) + v
        return b"\xc5" + struct.pack(">H", len(v)) + v
    if isinstance(v, list):
        head = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))
        return head + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        head = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return head + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


def frames(peer, *fr):
    op = (peer & 7) | (len(fr) << 3)
    return bytes([op]) + b"".join(struct.pack(">H", len(f)) + f for f in fr)


def msg(peer, cmd, body):
    return frames(peer, SIG, cmd.encode(), pack(body))


def turn(ms=0):
    return bytes([OP_TURN_AFTER]) + struct.pack(">H", ms)


def tid(n):
    return struct.pack("<I", n) + b"\xa5" * 12


def hello_worker(peer, name="w", tasks=("t",), slots=2, capacity=4):
    return msg(peer, "HELLO", {"role": "worker", "name": name, "host": "h", "pid": 1,
                               "slots": slots, "capacity": capacity, "tasks": list(tasks)})


def hello_client(peer, name="c"):
    return msg(peer, "HELLO", {"role": "client", "name": name, "host": "h", "pid": 2})


def submit(peer, ids, task="t", timeout=None):
    tasks = []
    for n in ids:
        t = {"id": tid(n), "task": task, "args": pack([n])}
        if timeout is not None:
            t["timeout_ms"] = timeout
        tasks.append(t)
    return msg(peer, "SUBMIT", {"tasks": tasks})


def results(peer, items):
    out = []
    for n, attempt, status in items:
        r = {"id": tid(n), "attempt": attempt, "status": status}
        if status == "ok":
            r["value"] = pack(n)
        else:
            r["error"] = "task t failed on h, pid 1"
        out.append(r)
    return msg(peer, "RESULTS", {"results": out})


def ids_msg(peer, cmd, ids):
    return msg(peer, cmd, {"ids": [tid(n) for n in ids]})


def session(store, *records):
    return bytes([1 if store else 0]) + b"".join(records)


W, C, W2, C2, X = 0, 1, 2, 3, 7

BASIC = [hello_worker(W), hello_client(C), turn(), submit(C, [1, 2, 3]), turn(),
         results(W, [(1, 1, "ok"), (2, 1, "failed"), (3, 1, "crashed")]), turn(),
         results(W, [(3, 2, "ok")]), turn(), ids_msg(C, "ACK", [1, 2, 3]), turn()]

SEEDS = {
    # valid sessions
    "ok-basic": session(False, *BASIC),
    "ok-basic-store": session(True, *BASIC),
    "ok-store-restart": session(True, hello_worker(W), hello_client(C), turn(),
                                submit(C, list(range(10))), turn(), results(W, [(0, 1, "ok")]),
                                turn(), bytes([OP_RESTART]), hello_client(C), turn(),
                                hello_worker(W, capacity=20), turn(),
                                results(W, [(n, 2, "ok") for n in range(1, 4)]), turn(),
                                ids_msg(C, "ACK", [0, 1, 2]), turn(), bytes([OP_RESTART]), turn()),
    "ok-store-fail": session(True, hello_worker(W), hello_client(C), turn(), bytes([OP_FAIL, 2]),
                             submit(C, [1, 2]), turn(), submit(C, [3]), turn(1000),
                             submit(C, [4]), turn(1000), submit(C, [5]), turn(1000),
                             submit(C, [1, 6]), turn(), bytes([OP_RESTART])),
    "ok-death-retry": session(False, hello_worker(W, capacity=2), hello_client(C), turn(),
                              submit(C, [1, 2, 3]), turn(), turn(4000), hello_worker(W2), turn(),
                              turn(4000), turn(4000), hello_client(C), turn()),
    "ok-return-credit-bye": session(True, hello_worker(W, capacity=3), hello_client(C), turn(),
                                    submit(C, [1, 2, 3, 4], timeout=100), turn(),
                                    ids_msg(W, "RETURN", [1, 2]), msg(W, "CREDIT", {"capacity": 0}),
                                    turn(), msg(W, "CREDIT", {"capacity": 5}), turn(),
                                    turn(6000), msg(W, "BYE", {}), turn(), hello_worker(W2), turn()),
    "ok-lease-expiry-late": session(False, hello_worker(W), hello_client(C), turn(),
                                    submit(C, [1], timeout=10), turn(), turn(6000),
                                    results(W, [(1, 1, "ok")]), turn(), results(W, [(1, 2, "ok")]),
                                    turn()),
    "ok-lease-expiry-ghost": session(True, hello_worker(W, capacity=1), hello_worker(W2, "w2"),
                                     hello_client(C), turn(), submit(C, [1, 2]), turn(), turn(4000),
                                     msg(W, "HEARTBEAT", {}), msg(W2, "HEARTBEAT", {}), turn(4500),
                                     msg(W, "HEARTBEAT", {}), msg(W2, "HEARTBEAT", {}), turn(),
                                     results(W2, [(1, 2, "ok"), (2, 1, "ok")]), turn(),
                                     results(W, [(1, 1, "failed")]), turn(), turn(9000), turn(),
                                     bytes([OP_RESTART]), turn()),
    "ok-putback": session(False, hello_client(C), hello_client(C2, "c2"),
                          msg(C2, "QPUT", {"req": 1, "queue": "q", "items": [b"a", b"b"],
                                           "timeout_ms": 0}), turn(),
                          bytes([OP_SEND_MODE, (2 << 3) | C]),
                          msg(C, "QGET", {"req": 2, "queue": "q", "max": 1}), turn(),
                          bytes([OP_SEND_MODE, (1 << 3) | C2]),
                          msg(C2, "QGET", {"req": 3, "queue": "q", "max": 2}), turn(),
                          msg(C2, "BYE", {}), turn(), hello_client(C2, "c2"),
                          msg(C2, "QGET", {"req": 4, "queue": "q", "max": 5}), turn()),
    "ok-named-queues": session(False, hello_client(C), hello_client(C2, "c2"),
                               msg(C, "QGET", {"req": 1, "queue": "q", "max": 2, "timeout_ms": 500}),
                               msg(C2, "QPUT", {"req": 2, "queue": "q", "items": [b"a", b"b", b"c"],
                                                "timeout_ms": 0}),
                               turn(), msg(C, "QGET", {"req": 3, "queue": "q"}), turn(600),
                               msg(C2, "QPUT", {"req": 4, "queue": "q", "items": [b"x"],
                                                "timeout_ms": 100}), turn(200)),
    "ok-status": session(True, hello_worker(W), hello_client(C), submit(C, [1]),
                         msg(C, "STATUS", {"req": 9}), turn()),
    "ok-takeover": session(False, hello_worker(W), hello_client(C), submit(C, [1, 2]), turn(),
                           results(W, [(1, 1, "ok")]), turn(), hello_client(C2), turn(),
                           ids_msg(C, "ACK", [1]), ids_msg(C2, "ACK", [1]), turn()),
    "ok-blocked-peers": session(True, hello_worker(W), hello_client(C), turn(),
                                bytes([OP_SEND_MODE, (1 << 3) | C]), submit(C, [1, 2]), turn(),
                                results(W, [(1, 1, "ok"), (2, 1, "ok")]), turn(),
                                bytes([OP_SEND_MODE, C]), turn(10), bytes([OP_SEND_MODE, (2 << 3) | W]),
                                submit(C, [3]), turn(), turn(10)),
    "ok-many-names": session(True, hello_worker(W, tasks=[f"t{i}" for i in range(20)]),
                             hello_client(C), submit(C, [1], task="t7"), turn(),
                             hello_worker(W, tasks=["u"]), turn(), bytes([OP_RESTART])),
    "ok-task-control": session(True, hello_worker(W, capacity=1), hello_client(C), turn(),
                               msg(C, "SUBMIT", {"tasks": [
                                   {"id": tid(1), "task": "t", "args": pack([1]), "priority": 5},
                                   {"id": tid(2), "task": "t", "args": pack([2]), "delay_ms": 300},
                                   {"id": tid(3), "task": "t", "args": pack([3]),
                                    "retry_on_error": True, "backoff_ms": 100, "max_attempts": 3}]}),
                               turn(), results(W, [(1, 1, "ok")]), turn(),
                               results(W, [(3, 1, "failed")]), turn(200),
                               results(W, [(3, 2, "retry")]), turn(400),
                               msg(C, "LOOKUP", {"req": 1, "ids": [tid(1), tid(2), tid(3), tid(9)]}),
                               msg(C, "FETCH", {"req": 2, "id": tid(3), "wait_ms": 1000}),
                               msg(C, "CANCEL", {"req": 3, "ids": [tid(2), tid(3)]}), turn(),
                               msg(C, "FAILED", {"req": 4}),
                               msg(C, "RETRY", {"req": 5, "ids": [tid(3), tid(8)]}), turn(),
                               bytes([OP_RESTART]), turn(), ids_msg(C, "ACK", [1, 2, 3]), turn()),
    # invalid input
    "bad-control": session(False, hello_worker(W), hello_client(C),
                           msg(C, "SUBMIT", {"tasks": [
                               {"id": tid(1), "task": "t", "args": pack([1]), "priority": 10},
                               {"id": tid(2), "task": "t", "args": pack([2]), "delay_ms": -5},
                               {"id": tid(3), "task": "t", "args": pack([3]), "delay_ms": 1,
                                "at_ms": 1},
                               {"id": tid(4), "task": "t", "args": pack([4]), "key": "x y"}]}),
                           msg(C, "LOOKUP", {"req": 1, "ids": [b"short"]}),
                           msg(C, "LOOKUP", {"ids": [tid(1)]}),
                           msg(C, "FETCH", {"req": 2, "id": 7}),
                           msg(C, "CANCEL", {"req": 3, "ids": []}),
                           msg(W, "CANCEL", {"req": 4, "ids": [tid(1)]}),
                           msg(C, "REPLY", {"req": 5, "status": "ok"}), turn()),
    "bad-frames": session(False, frames(X, SIG, b"HELLO"), frames(X), frames(X, SIG, b"HELLO", b"\x80", b"x")),
    "bad-signature": session(False, frames(X, b"XYZ\x01", b"HELLO", b"\x80")),
    "bad-version": session(False, frames(X, b"DST\x02", b"HELLO", b"\x80")),
    "bad-command": session(False, frames(X, SIG, b"HELO", b"\x80"), frames(X, SIG, b"", b"\x80")),
    "bad-body": session(False, frames(X, SIG, b"HELLO", b"\x91\x01"),
                        frames(X, SIG, b"HELLO", b"\xdd\x0f\xff\xff\xff"),
                        frames(X, SIG, b"HELLO", b"\xc1")),
    "bad-hello": session(False, msg(X, "HELLO", {"role": "worker", "name": "w"}),
                         msg(X, "HELLO", {"role": "boss", "name": "w", "host": "h", "pid": 1}),
                         msg(X, "HEARTBEAT", {})),
    "bad-before-hello": session(True, submit(X, [1]), results(X, [(1, 1, "ok")]),
                                ids_msg(X, "ACK", [1]), msg(X, "STATUS", {"req": 1})),
    "bad-forbidden": session(False, hello_client(C), msg(C, "TASKS", {"tasks": []}),
                             results(C, [(1, 1, "ok")]), hello_worker(W), submit(W, [1]),
                             msg(W, "WELCOME", {})),
    "bad-submit-fields": session(True, hello_worker(W), hello_client(C),
                                 msg(C, "SUBMIT", {"tasks": [{"id": b"short", "task": "t", "args": b"\x90"},
                                                             {"id": tid(1), "task": "no such", "args": b"\x90"},
                                                             {"id": tid(2), "task": "t"},
                                                             {"id": tid(3), "task": "t", "args": b"\x90",
                                                              "timeout_ms": -1},
                                                             7]}),
                                 msg(C, "SUBMIT", {"tasks": []}), msg(C, "SUBMIT", {}), turn()),
    "bad-ban": session(False, *[frames(X, SIG, b"HELLO", b"\x01") for _ in range(102)],
                       hello_client(X), turn()),
}


COMMANDS = ["HELLO", "WELCOME", "RECONNECT", "HEARTBEAT", "BYE", "TASKS", "RESULTS", "CREDIT",
            "RETURN", "SUBMIT", "ACCEPTED", "ACK", "QPUT", "QGET", "QREPLY", "STATUS", "ERROR",
            "LOOKUP", "FETCH", "CANCEL", "FAILED", "RETRY", "REPLY"]
WORDS = ["role", "worker", "client", "name", "host", "pid", "version", "slots", "capacity",
         "tasks", "results", "id", "attempt", "status", "value", "error", "task", "args",
         "timeout_ms", "ids", "req", "queue", "items", "max", "ok", "failed", "unknown_task",
         "bad_args", "too_large", "crashed", "timeout", "t"]


def dict_entry(b):
    return '"' + "".join(chr(c) if 32 <= c < 127 and chr(c) not in '"\\' else "\\x%02x" % c
                         for c in b) + '"'


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    entries = [SIG] + [c.encode() for c in COMMANDS] + [pack(w) for w in WORDS]
    entries += [b"\xc4\x10", bytes([0x18]), bytes([OP_TURN_AFTER, 0x03, 0xe8])]
    path = os.path.join(os.path.dirname(os.path.dirname(OUT)), "master.dict")
    with open(path, "w") as f:
        f.write("# fuzz_master's dictionary (libFuzzer -dict), written by make_master_corpus.py:\n"
                "# the signature, command names, MessagePack-encoded keys and values of\n"
                "# docs/PROTOCOL.md, a bin16 header, a 3-frame message op, a 1 s turn.\n")
        for e in entries:
            f.write(dict_entry(e) + "\n")
    print(f"wrote {len(SEEDS)} seeds to {OUT} and {len(entries)} words to {path}")


if __name__ == "__main__":
    main()
