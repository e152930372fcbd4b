#!/usr/bin/env python3
"""A libdist worker in Python, written from docs/PROTOCOL.md alone.

    python3 dist_worker.py --master tcp://127.0.0.1:5555 --slots 2

It says HELLO to dist-master with the names of its tasks, takes tasks by
credit (capacity = slots + prefetch), runs each in one of `slots` pool
processes, sends the results back, heartbeats, and says HELLO again
whenever the master asks (RECONNECT) or falls silent. SIGTERM or SIGINT
drains it: no new tasks, unstarted ones are RETURNed, running ones finish,
then BYE; a second signal stops it at once.

As a module:

    import dist_worker
    def double(x):                      # a module-level function
        return 2 * x
    dist_worker.Worker(tasks={"my.double": double}, slots=4).run()

A task is called with the task's arguments and returns one MessagePack-able
value; an exception is a "failed" result. Pool processes come from a
multiprocessing "forkserver", so they are never forked from a process that
has a ZeroMQ context (which is not fork-safe); task functions travel to
them pickled by name, hence they must be module-level functions.
"""
import argparse
import collections
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import time

import zmq

import dist_wire as wire

log = logging.getLogger("dist_worker")


# Example tasks. py.square computes what test.square of the C test plugin
# computes, so that results from both kinds of worker can be compared.
def upper(s):
    return s.upper()


def add(a, b):
    return a + b


def square(x):
    return x * x


def sleep(ms):
    time.sleep(ms / 1000)
    return ms


def mark(path, ms):
    """Creates `path` (so that a test knows the task started), sleeps."""
    open(path, "w").close()
    return sleep(ms)


def fail(message="failing on purpose"):
    raise RuntimeError(message)


def crash():
    os.kill(os.getpid(), signal.SIGKILL)


def pid():
    return os.getpid()


EXAMPLE_TASKS = {"py.upper": upper, "py.add": add, "py.square": square,
                 "py.sleep": sleep, "py.mark": mark, "py.fail": fail,
                 "py.crash": crash, "py.pid": pid}


def _slot_main(conn):
    """A pool process: runs (function, args) pairs until its pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker drains; tasks go on
    try:  # die with the forkserver, which dies with the worker
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:
            return
        try:
            reply = ("ok", wire.pack(fn(*args)))
        except Exception as e:  # the task's error, or a value MessagePack cannot carry
            reply = ("failed", f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except OSError:  # the worker is gone
            return


class _Slot:
    """One pool process and the task it runs (None when idle)."""

    def __init__(self, mp):
        self.mp = mp
        self.task = None
        self.old = False  # its task was leased in an earlier session
        self.deadline = None
        self._start()

    def _start(self):
        self.conn, child = self.mp.Pipe()
        self.proc = self.mp.Process(target=_slot_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def stop(self):
        self.proc.kill()
        self.proc.join()
        self.conn.close()

    def restart(self):
        self.stop()
        self._start()

    def run(self, task, fn, args):
        self.task = task
        ms = task.get("timeout_ms") or 0
        self.deadline = time.monotonic() + ms / 1000 if ms else None
        try:
            self.conn.send((fn, args))
        except OSError:  # it died while idle: a fresh one runs the task
            self.restart()
            self.conn.send((fn, args))

    def outcome(self):
        """The finished task and its (status, value or error)."""
        try:
            status, x = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            code = self.proc.exitcode
            if code is not None and code < 0:
                how = f"was killed by signal {-code} ({signal.Signals(-code).name})"
            else:
                how = f"exited with status {code}"
            status, x = "crashed", f"its pool process {self.proc.pid} {how}"
            self.restart()
        task, self.task, self.old = self.task, None, False
        return task, status, x


class Refused(Exception):
    """The master refused our HELLO (ERROR before any WELCOME)."""


class Worker:
    def __init__(self, master=None, tasks=None, slots=1, prefetch=1, name=None):
        self.master = master or wire.default_master()
        self.tasks = dict(EXAMPLE_TASKS if tasks is None else tasks)
        self.nslots = max(1, slots)
        self.capacity = self.nslots + max(0, prefetch)
        self.host = wire.hostname()
        self.name = name or f"{self.host[:116]}:{os.getpid()}"
        self.signals = 0  # 1: drain, 2: stop now

    # -- sending -------------------------------------------------------------

    def _send(self, command, body=None):
        wire.send(self.sock, command, body)
        self.last_send = time.monotonic()

    def _hello(self):
        # Tasks still running were leased in the session that ended: the
        # capacity announced leaves room for them until they finish.
        busy = sum(s.task is not None for s in self.slots)
        self.announced = max(1, self.capacity - busy)
        self._send("HELLO", {"role": "worker", "name": self.name, "host": self.host,
                             "pid": os.getpid(), "version": wire.VERSION,
                             "slots": self.nslots, "capacity": self.announced,
                             "tasks": sorted(self.tasks)})
        self.last_hello = time.monotonic()

    def _flush(self):
        """Sends the finished results, at most max_batch per message, even
        to a master that does not know us: it applies them anyway (4)."""
        while self.out:
            batch, self.out = self.out[:self.max_batch], self.out[self.max_batch:]
            self._send("RESULTS", {"results": batch})

    def _result(self, task, status, x):
        r = {"id": task["id"], "attempt": task["attempt"], "status": status}
        if status == "ok" and len(x) + 1024 > self.max_message:
            status, x = "too_large", f"a value of {len(x)} bytes"
            r["status"] = status
        if status == "ok":
            r["value"] = x
        else:
            r["error"] = f"{task['task']}: {x} (host {self.host}, worker pid {os.getpid()})"
        self.out.append(r)

    # -- receiving -----------------------------------------------------------

    def _take(self, task):
        """A task from TASKS: queue it, or answer it at once."""
        if not isinstance(task, dict) or not isinstance(task.get("id"), bytes) \
                or len(task["id"]) != 16 or not isinstance(task.get("attempt"), int):
            log.warning("dropping a task without a valid id or attempt")
            return
        if self.draining:
            self._send("RETURN", {"ids": [task["id"]]})
            return
        fn = self.tasks.get(task.get("task"))
        if fn is None:
            return self._result(task, "unknown_task", "no such task on this worker")
        try:
            args = wire.unpack(task.get("args"))
        except Exception:
            args = None
        if not isinstance(args, list):
            return self._result(task, "bad_args", "args is not one MessagePack array")
        self.queue.append((task, fn, args))

    def _read_master(self):
        while self.sock.poll(0):
            msg = wire.recv(self.sock)
            if msg is None:
                log.warning("dropped a malformed message from the master")
                continue
            self.last_recv = time.monotonic()
            command, body = msg
            if command == "WELCOME":
                self.hb_s = body.get("heartbeat_ms", 1000) / 1000
                self.hb_timeout_s = body.get("heartbeat_timeout_ms", 3000) / 1000
                self.max_message = body.get("max_message", wire.MAX_MESSAGE)
                self.max_batch = body.get("max_batch", wire.MAX_BATCH)
                if not self.welcomed:
                    log.info("welcomed by %s", body.get("master"))
                    if self.rehello:
                        self._new_session()
                self.welcomed, self.rehello = True, False
                if self.draining:  # a master that just met us holds nothing of ours
                    self._send("CREDIT", {"capacity": 0})
            elif command == "RECONNECT":
                if self.welcomed:  # else HELLO is already being repeated
                    log.info("the master does not know us: HELLO again")
                    self.welcomed, self.rehello = False, True
                    self._hello()
            elif command == "TASKS":
                for task in body.get("tasks") or []:
                    self._take(task)
            elif command == "ERROR":
                log.warning("master: %s: %s", body.get("code"), body.get("error"))
                if not self.welcomed and body.get("code") in ("malformed", "forbidden", "banned",
                                                              "unsupported_version"):
                    raise Refused(f"{body.get('code')}: {body.get('error')}")
            # HEARTBEAT, and commands a worker never gets: nothing to do.

    def _new_session(self):
        """Welcomed again after RECONNECT or the master's silence: what we
        hold was leased in the old session. Unstarted tasks go back (the
        master requeued them already, or takes them back); running ones
        finish and their results are sent (results are idempotent)."""
        ids = [task["id"] for task, _, _ in self.queue]
        self.queue.clear()
        for i in range(0, len(ids), self.max_batch):
            self._send("RETURN", {"ids": ids[i:i + self.max_batch]})
        for s in self.slots:
            s.old = s.task is not None
        log.info("a new session: returned %d unstarted tasks, %d still running",
                 len(ids), sum(s.old for s in self.slots))

    # -- the loop --------------------------------------------------------------

    def _on_signal(self, signum, frame):
        self.signals += 1

    def _drain(self):
        log.info("draining: returning %d unstarted tasks", len(self.queue))
        self.draining = True
        self._send("CREDIT", {"capacity": 0})
        ids = [task["id"] for task, _, _ in self.queue]
        self.queue.clear()
        for i in range(0, len(ids), self.max_batch):
            self._send("RETURN", {"ids": ids[i:i + self.max_batch]})

    def _step(self):
        busy = [s for s in self.slots if s.task is not None]
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        for s in busy:
            poller.register(s.conn, zmq.POLLIN)
        ready = {fd for fd, _ in poller.poll(100)}
        if self.sock in ready:
            self._read_master()
        now = time.monotonic()
        for s in busy:
            if s.conn.fileno() in ready:
                self._result(*s.outcome())
            elif s.deadline is not None and now > s.deadline:
                task = s.task
                s.restart()
                s.task, s.old = None, False
                self._result(task, "timeout",
                             f"ran past its {task['timeout_ms']} ms and was killed")
        for s in self.slots:
            if s.task is None and self.queue and not self.draining:
                s.run(*self.queue.popleft())
        self._flush()
        if self.welcomed and not self.draining and self.announced < self.capacity:
            room = self.capacity - sum(s.old for s in self.slots)
            if room > self.announced:  # old-session tasks finished: full capacity again
                self.announced = room
                self._send("CREDIT", {"capacity": room})
        if self.welcomed and now - self.last_recv > self.hb_timeout_s:
            log.warning("no word from the master for %.1f s: HELLO until welcomed",
                        now - self.last_recv)
            self.welcomed, self.rehello = False, True
        if not self.welcomed and now - self.last_hello >= 1:
            self._hello()
        elif self.welcomed and now - self.last_send >= self.hb_s:
            self._send("HEARTBEAT")

    def run(self):
        """Runs until drained (returns 0) or stopped by a second signal (1);
        raises Refused when the master refuses our HELLO."""
        mp = multiprocessing.get_context("forkserver")
        self.slots = [_Slot(mp) for _ in range(self.nslots)]  # before any ZeroMQ
        ctx = zmq.Context()
        self.sock = wire.connect(ctx, self.master)
        self.welcomed = self.draining = self.rehello = False
        self.queue = collections.deque()  # (task, function, args) leased, not started
        self.out = []                     # result maps not sent yet
        self.hb_s, self.hb_timeout_s = 1.0, 3.0
        self.max_message, self.max_batch = wire.MAX_MESSAGE, wire.MAX_BATCH
        self.last_recv = time.monotonic()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._hello()
            while self.signals < 2:
                if self.signals and not self.draining:
                    self._drain()
                if self.draining and not any(s.task for s in self.slots):
                    self._flush()
                    self._send("BYE")
                    log.info("drained")
                    return 0
                self._step()
            return 1
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            for s in self.slots:
                s.stop()
            self.sock.close()
            ctx.term()


def main(argv=None):
    p = argparse.ArgumentParser(description="A libdist worker in Python: runs Python "
                                "functions as tasks for a dist-master.")
    p.add_argument("--master", default=wire.default_master(),
                   help="the master's endpoint (default: $DIST_MASTER, else %(default)s)")
    p.add_argument("--name", help="name shown in the master's status (default: HOST:PID)")
    p.add_argument("--slots", type=int, default=1, help="pool processes (default: 1)")
    p.add_argument("--prefetch", type=int, default=1,
                   help="tasks held beyond the slots (default: 1)")
    p.add_argument("--module", action="append", default=[],
                   help="import MODULE and add its DIST_TASKS dict {name: function} "
                   "to the example tasks (repeatable)")
    p.add_argument("--log-level", default="info", choices=["error", "warning", "info", "debug"])
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s dist_worker %(levelname)s %(message)s")
    tasks = dict(EXAMPLE_TASKS)
    for m in a.module:
        tasks.update(importlib.import_module(m).DIST_TASKS)
    try:
        return Worker(a.master, tasks, a.slots, a.prefetch, a.name).run()
    except Refused as e:
        log.error("the master refused us: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
