#!/usr/bin/env python3
"""A libdist client in Python, written from docs/PROTOCOL.md alone.

    python3 dist_client.py submit py.upper '"hello"'
    seq 10 | sed 's/.*/[&]/' | python3 dist_client.py map test.square
    python3 dist_client.py put jobs 1 2 3 && python3 dist_client.py get jobs --max 3
    python3 dist_client.py status --json

As a module:

    from dist_client import Client
    with Client("tcp://127.0.0.1:5555") as c:
        print(c.run("py.add", 2, 3))                        # 5
        print([r.value for r in c.map("test.square", [[1], [2], [3]])])
        c.put("jobs", ["a", "b"]); print(c.get("jobs", max=2))

Everything happens in the calling thread: each call sends what it has to,
then reads the master's messages (results, acknowledgements, replies,
heartbeats) until its answer is there. Results are acknowledged as soon as
they arrive and kept until a call takes them.
"""
import argparse
import base64
import collections
import json
import logging
import os
import sys
import time

import zmq

import dist_wire as wire

log = logging.getLogger("dist_client")
RETRY_LATER = ("queue_full", "store_failed")  # rejections worth a retry (6.4)


class NoMaster(Exception):
    """No master welcomed us within the connect timeout."""


class Refused(Exception):
    """The master refused our HELLO (ERROR before any WELCOME)."""


class TaskError(Exception):
    def __init__(self, status, error):
        super().__init__(f"{status}: {error}")
        self.status, self.error = status, error


Result = collections.namedtuple("Result", "status value error")
Result.ok = property(lambda r: r.status == "ok")


class Client:
    def __init__(self, master=None, name=None, connect_timeout=5.0):
        self.host = wire.hostname()
        self.name = name or f"{self.host[:110]}:{os.getpid()}:{os.urandom(4).hex()}"
        self.ctx = zmq.Context()
        self.sock = wire.connect(self.ctx, master or wire.default_master())
        self.welcomed = False
        self.master_name = None
        self.hb_s, self.hb_timeout_s = 1.0, 3.0
        self.max_message, self.max_batch = wire.MAX_MESSAGE, wire.MAX_BATCH
        self.pending = {}                     # id -> task map: submitted, no result yet
        self.results = {}                     # id -> Result not yet taken by the caller
        self.unanswered = collections.deque() # [tasks, sent] of each SUBMIT without ACCEPTED
        self.retry = collections.deque()      # (when, task map) rejected with queue_full
        self.requests = {}                    # req -> [command, body, sent] without a reply
        self.replies = {}                     # req -> (command, body) of the reply
        self.next_req = 1
        self.last_recv = time.monotonic()
        self._hello()
        deadline = time.monotonic() + connect_timeout
        try:
            while not self.welcomed:
                if time.monotonic() > deadline:
                    raise NoMaster(f"no welcome within {connect_timeout:g} s")
                self._pump(0.1)
        except Exception:
            self.close(bye=False)
            raise

    def close(self, bye=True):
        if bye and self.welcomed:
            self._send("BYE")
        self.sock.close()
        self.ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- tasks ---------------------------------------------------------------

    def submit_many(self, task, arglists, timeout_ms=0):
        """Submits one task per argument list; returns their ids, in order."""
        maps = [{"id": os.urandom(16), "task": task, "args": wire.pack(list(args)),
                 "timeout_ms": timeout_ms} for args in arglists]
        batch, size = [], 0
        for m in maps:
            self.pending[m["id"]] = m
            if len(m["args"]) + len(task) + 200 > self.max_message:
                # A message over the master's limit would cost us the
                # connection (ZMQ_MAXMSGSIZE): refuse it here, as the
                # master would (too_large, 6.4).
                self._done(m, "too_large", f"{len(m['args'])} bytes of args exceed "
                           f"the master's {self.max_message}-byte messages")
                continue
            if batch and (len(batch) == self.max_batch
                          or size + len(m["args"]) + 256 > self.max_message // 2):
                self._submit(batch)
                batch, size = [], 0
            batch.append(m)
            size += len(m["args"]) + len(task) + 64
        if batch:
            self._submit(batch)
        return [m["id"] for m in maps]

    def submit(self, task, args=(), timeout_ms=0):
        return self.submit_many(task, [args], timeout_ms)[0]

    def wait(self, ids, timeout=None):
        """The Results of these ids, in the same order; raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        missing = [i for i in ids if i not in self.results]
        while missing:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} result(s) missing after {timeout:g} s")
            self._pump(0.1)
            missing = [i for i in missing if i not in self.results]
        return [self.results.pop(i) for i in ids]

    def map(self, task, arglists, timeout_ms=0, timeout=None):
        """Runs task on every argument list; Results in input order."""
        return self.wait(self.submit_many(task, arglists, timeout_ms), timeout)

    def run(self, task, *args, timeout_ms=0, timeout=None):
        """Runs one task and returns its value; raises TaskError if it failed."""
        r = self.wait([self.submit(task, args, timeout_ms)], timeout)[0]
        if not r.ok:
            raise TaskError(r.status, r.error)
        return r.value

    # -- named queues and status ------------------------------------------------

    def put(self, queue, values, timeout_ms=0):
        """Puts values (each packed as one MessagePack value) into a named
        queue; returns the reply's status ("ok", "full", ...)."""
        return self._request("QPUT", {"queue": queue, "items": [wire.pack(v) for v in values],
                                      "timeout_ms": timeout_ms})["status"]

    def get(self, queue, max=1, timeout_ms=0):
        """Takes up to max values from a named queue, waiting up to
        timeout_ms for the first; [] when none came."""
        reply = self._request("QGET", {"queue": queue, "max": max, "timeout_ms": timeout_ms})
        if reply["status"] not in ("ok", "timeout"):
            raise TaskError(reply["status"], f"QGET {queue} failed")
        return [wire.unpack(item) for item in reply.get("items") or []]

    def status(self):
        return self._request("STATUS", {})

    # -- the protocol ----------------------------------------------------------

    def _send(self, command, body=None):
        wire.send(self.sock, command, body)
        self.last_send = time.monotonic()

    def _hello(self):
        self._send("HELLO", {"role": "client", "name": self.name, "host": self.host,
                             "pid": os.getpid(), "version": wire.VERSION})
        self.last_hello = time.monotonic()

    def _submit(self, tasks):
        self.unanswered.append([tasks, False])
        self._send_pending()

    def _send_pending(self):
        """Sends the SUBMITs and requests not sent yet, oldest first: the
        master answers SUBMITs in order. Nothing goes before a WELCOME."""
        if not self.welcomed:
            return
        for entry in self.unanswered:
            if not entry[1]:
                self._send("SUBMIT", {"tasks": entry[0]})
                entry[1] = True
        for entry in self.requests.values():
            if not entry[2]:
                self._send(entry[0], entry[1])
                entry[2] = True

    def _forgotten(self):
        """The master does not know us (RECONNECT), or is another one:
        what it had not answered it never will. All of it goes again."""
        for entry in self.unanswered:
            entry[1] = False
        for entry in self.requests.values():
            entry[2] = False

    def _request(self, command, body, timeout=None):
        req, self.next_req = self.next_req, self.next_req + 1
        body["req"] = req
        self.requests[req] = [command, body, False]
        self._send_pending()
        deadline = None if timeout is None else time.monotonic() + timeout
        while req not in self.replies:
            if deadline is not None and time.monotonic() > deadline:
                del self.requests[req]
                raise TimeoutError(f"no reply to {command}")
            self._pump(0.1)
        del self.requests[req]
        command, reply = self.replies.pop(req)
        if command == "ERROR":
            raise TaskError(reply.get("code"), reply.get("error"))
        return reply

    def _done(self, task_map, status, error):
        if self.pending.pop(task_map["id"], None) is not None:
            self.results[task_map["id"]] = Result(status, None, error)

    def _on_accepted(self, body):
        if not self.unanswered:
            return log.warning("ACCEPTED for no SUBMIT")
        tasks = self.unanswered.popleft()[0]
        for rej in body.get("rejected") or []:
            t = tasks[rej["index"]] if 0 <= rej.get("index", -1) < len(tasks) else None
            if t is None:
                continue
            if rej.get("code") in RETRY_LATER:
                self.retry.append((time.monotonic() + 1, t))
            else:
                self._done(t, rej.get("code"), rej.get("error"))

    def _on_error(self, body):
        req = body.get("req")
        if req in self.requests:
            self.replies[req] = ("ERROR", body)
        elif req is None and body.get("code") in ("bad_request", "queue_full") and self.unanswered:
            tasks = self.unanswered.popleft()[0]  # the SUBMIT it answers (6.4)
            for t in tasks:
                if body["code"] == "queue_full":
                    self.retry.append((time.monotonic() + 1, t))
                else:
                    self._done(t, body["code"], body.get("error"))
        elif self.master_name is None and body.get("code") in ("malformed", "forbidden", "banned"):
            raise Refused(f"{body.get('code')}: {body.get('error')}")
        else:
            log.warning("master: %s: %s", body.get("code"), body.get("error"))

    def _on_results(self, body):
        ids = []
        for r in body.get("results") or []:
            rid = r.get("id") if isinstance(r, dict) else None
            if not isinstance(rid, bytes):
                continue
            ids.append(rid)  # acknowledged even when unknown or a duplicate (6.5)
            if self.pending.pop(rid, None) is None:
                continue
            if r.get("status") == "ok":
                try:
                    self.results[rid] = Result("ok", wire.unpack(r.get("value")), None)
                except Exception:
                    self.results[rid] = Result("bad_value", None, "the value is not MessagePack")
            else:
                self.results[rid] = Result(r.get("status"), None, r.get("error"))
        if ids:
            self._send("ACK", {"ids": ids})

    def _on_welcome(self, body):
        self.hb_s = body.get("heartbeat_ms", 1000) / 1000
        self.hb_timeout_s = body.get("heartbeat_timeout_ms", 3000) / 1000
        self.max_message = body.get("max_message", wire.MAX_MESSAGE)
        self.max_batch = body.get("max_batch", wire.MAX_BATCH)
        if self.master_name is not None and body.get("master") != self.master_name:
            self._forgotten()  # a restarted master: a new name (host:pid)
        self.master_name = body.get("master")
        self.welcomed = True
        self._send_pending()

    def _pump(self, timeout):
        """Reads what the master sent within timeout seconds, and keeps the
        session alive."""
        if self.sock.poll(int(timeout * 1000)):
            while self.sock.poll(0):
                msg = wire.recv(self.sock)
                if msg is None:
                    log.warning("dropped a malformed message")
                    continue
                self.last_recv = time.monotonic()
                command, body = msg
                if command == "WELCOME":
                    self._on_welcome(body)
                elif command == "RECONNECT":
                    self._forgotten()
                    self.welcomed = False
                    if time.monotonic() - self.last_hello > 0.1:  # one per burst
                        self._hello()
                elif command == "ACCEPTED":
                    self._on_accepted(body)
                elif command == "RESULTS":
                    self._on_results(body)
                elif command in ("QREPLY", "STATUS"):
                    if body.get("req") in self.requests:
                        self.replies[body["req"]] = (command, body)
                elif command == "ERROR":
                    self._on_error(body)
        now = time.monotonic()
        if self.welcomed and self.retry and self.retry[0][0] <= now:
            due = []
            while self.retry and self.retry[0][0] <= now and len(due) < self.max_batch:
                due.append(self.retry.popleft()[1])
            self._submit(due)
        if self.welcomed and now - self.last_recv > self.hb_timeout_s:
            log.warning("no word from the master for %.1f s", now - self.last_recv)
            self.welcomed = False
        if not self.welcomed and now - self.last_hello >= 1:
            self._hello()
        elif self.welcomed and now - self.last_send >= self.hb_s:
            self._send("HEARTBEAT")


# -- the command line: JSON in and out, binary values as {"$bin": base64} --------

def to_json(v):
    if isinstance(v, bytes):
        return {"$bin": base64.b64encode(v).decode()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    return v


def from_json(v):
    if isinstance(v, dict):
        if list(v) == ["$bin"]:
            return base64.b64decode(v["$bin"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def _dumps(v):
    return json.dumps(to_json(v), separators=(",", ":"))


def _cmd_submit(c, a):
    try:
        value = c.run(a.task, *[from_json(json.loads(x)) for x in a.args],
                      timeout_ms=a.timeout, timeout=a.wait)
    except TaskError as e:
        print(f"dist_client: {e.error}", file=sys.stderr)
        return 1
    print(_dumps(value))
    return 0


def _cmd_map(c, a):
    arglists = []
    for n, line in enumerate(sys.stdin, 1):
        if line.strip():
            args = json.loads(line)
            if not isinstance(args, list):
                raise ValueError(f"line {n}: not a JSON array")
            arglists.append(from_json(args))
    failed = 0
    for r in c.map(a.task, arglists, a.timeout, a.wait):
        failed += not r.ok
        print(_dumps(r.value) if r.ok else _dumps({"error": r.error}))
    return 1 if failed else 0


def _cmd_status(c, a):
    s = c.status()
    s.pop("req", None)
    if a.json:
        print(_dumps(s))
        return 0
    print(f"master {s['master']['name']}, {s['clients']} client(s)")
    for w in s["workers"]:
        print(f"worker {w['name']}: {w['slots']} slots, busy {w['busy']}, "
              f"done {w['done']}, failed {w['failed']}")
    for q in s["queues"]:
        print(f"queue {q['name']} ({q['kind']}): depth {q['depth']}, in flight {q['in_flight']}")
    print("counters", " ".join(f"{k}={v}" for k, v in s["counters"].items()))
    return 0


def _cmd_put(c, a):
    st = c.put(a.queue, [from_json(json.loads(v)) for v in a.values], a.timeout)
    if st != "ok":
        print(f"dist_client: put {a.queue}: {st}", file=sys.stderr)
    return 0 if st == "ok" else 1


def _cmd_get(c, a):
    items = c.get(a.queue, a.max, a.timeout)
    for v in items:
        print(_dumps(v))
    return 0 if items else 1


def main(argv=None):
    p = argparse.ArgumentParser(description="A libdist client in Python. Values are JSON; "
                                'binary values are {"$bin": "<base64>"}. Exit status: 0 ok, '
                                "1 a task failed (or nothing to get), 2 usage, 3 no master.")
    p.add_argument("--master", default=wire.default_master(),
                   help="the master's endpoint (default: $DIST_MASTER, else %(default)s)")
    p.add_argument("--name", help="this client's name (default: HOST:PID:RANDOM)")
    p.add_argument("--connect-timeout", type=int, default=5000, metavar="MS",
                   help="how long to wait for the master's welcome (default: 5000)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="run one task, print its result as JSON")
    s.add_argument("task")
    s.add_argument("args", nargs="*", help="JSON values")
    s = sub.add_parser("map", help="one JSON array of args per stdin line -> one result per line")
    s.add_argument("task")
    for name in ("submit", "map"):
        s = sub.choices[name]
        s.add_argument("--timeout", type=int, default=0, metavar="MS",
                       help="each task's own time limit (default: 0, none)")
        s.add_argument("--wait", type=lambda ms: int(ms) / 1000, metavar="MS",
                       help="how long to wait for the results (default: forever)")
        s.set_defaults(func=_cmd_submit if name == "submit" else _cmd_map)
    s = sub.add_parser("status", help="the cluster's state")
    s.add_argument("--json", action="store_true", help="the whole status map as JSON")
    s.set_defaults(func=_cmd_status)
    s = sub.add_parser("put", help="put JSON values into a named queue")
    s.add_argument("queue")
    s.add_argument("values", nargs="+")
    s.add_argument("--timeout", type=int, default=0, metavar="MS",
                   help="wait for room (default: 0)")
    s.set_defaults(func=_cmd_put)
    s = sub.add_parser("get", help="take values from a named queue, one JSON line each")
    s.add_argument("queue")
    s.add_argument("--max", type=int, default=1, help="most values to take (default: 1)")
    s.add_argument("--timeout", type=int, default=0, metavar="MS",
                   help="wait for the first value (default: 0)")
    s.set_defaults(func=_cmd_get)
    a = p.parse_args(argv)
    logging.basicConfig(level="WARNING", stream=sys.stderr,
                        format="%(asctime)s dist_client %(levelname)s %(message)s")
    try:
        with Client(a.master, a.name, a.connect_timeout / 1000) as c:
            return a.func(c, a)
    except (NoMaster, Refused) as e:
        print(f"dist_client: {e}", file=sys.stderr)
        return 3
    except TaskError as e:
        print(f"dist_client: {e}", file=sys.stderr)
        return 1
    except (ValueError, TimeoutError) as e:
        print(f"dist_client: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
