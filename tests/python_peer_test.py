#!/usr/bin/env python3
"""The Python peer of examples/python/ in a mixed cluster: the real C
dist-master, one C dist-worker (with the test plugin) and Python workers,
on 127.0.0.1 with a free port.

    python_peer_test.py MASTER_BIN WORKER_BIN DIST_BIN TEST_PLUGIN EXAMPLES_DIR

Checks that tasks of both kinds of worker complete, that the Python client
and the C client (`dist submit`, `dist map`) give the same results for the
same inputs, named queues, that a SIGKILLed Python worker loses no task
(it completes on the C worker, or on a restarted Python worker), and that
the Python peers find a restarted master again. Exit 77 (skipped) when
python3-zmq or python3-msgpack is missing. Every process it starts runs in
its own process group, killed by that id at the end.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

try:
    import msgpack  # noqa: F401
    import zmq  # noqa: F401
except ImportError as e:
    print(f"skipped: {e} (apt-get install python3-zmq python3-msgpack)")
    sys.exit(77)

MASTER_BIN, WORKER_BIN, DIST_BIN, PLUGIN, EXAMPLES = sys.argv[1:6]
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [EXAMPLES, HERE]
import dist_client  # noqa: E402
from dist_client import Client, TaskError  # noqa: E402

TMP = tempfile.mkdtemp(prefix="dist-pypeer-")
ENV = {k: v for k, v in os.environ.items()
       if k not in ("DIST_MASTER", "DIST_KEY", "DIST_SERVER_KEY")}
ENV["PYTHONPATH"] = os.pathsep.join([EXAMPLES, HERE])
ENV["PYTHONDONTWRITEBYTECODE"] = "1"
PROCS = []  # every Popen we started; each leads its own process group


def start(name, argv):
    log = open(os.path.join(TMP, name + ".log"), "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         env=ENV, start_new_session=True)
    log.close()
    p.name = name
    PROCS.append(p)
    return p


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def cleanup():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            print(f"{p.name} (pid {p.pid}) did not die", file=sys.stderr)


def wait_until(pred, what, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def start_master(endpoint="tcp://127.0.0.1:0"):
    n = sum(p.name.startswith("master") for p in PROCS)
    p = start(f"master{n}", [MASTER_BIN, "--bind", endpoint, "--heartbeat-timeout", "1500",
                             "--store", os.path.join(TMP, "store.db"), "--log-level", "info"])
    path = os.path.join(TMP, f"master{n}.log")

    def listening():
        check(p.poll() is None, f"dist-master exited with {p.returncode}")
        m = re.search(r"listening on (tcp://\S+)", open(path, errors="replace").read())
        return m and m.group(1)
    return p, wait_until(listening, "dist-master to listen")


def start_py_worker(ep, name, slots=2):
    return start(name, [sys.executable, os.path.join(EXAMPLES, "dist_worker.py"), "--master", ep,
                        "--name", name, "--slots", str(slots), "--module", "py_peer_tasks"])


def workers(c):
    return {w["name"]: w for w in c.status()["workers"]}


def run_cli(argv, stdin=None):
    """(exit status, parsed JSON lines of stdout) of a client command."""
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=ENV, timeout=120)
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


# -- the checks ---------------------------------------------------------------

def t_both_kinds_of_worker(c, ep):
    before = workers(c)
    c_sq = c.map("test.square", [[i] for i in range(100)])
    py_sq = c.map("py.square", [[i] for i in range(100)])
    check([r.value for r in c_sq] == [i * i for i in range(100)], "test.square results")
    check([r.value for r in py_sq] == [r.value for r in c_sq], "py.square == test.square")
    check(c.run("py.upper", "héllo") == "HÉLLO", "py.upper")
    check(c.run("py.add", 2, 3.5) == 5.5 and c.run("test.add", 2, 3) == 5, "py.add, test.add")
    echo = c.run("dist.echo", b"\x00\x01", {"k": [None]})
    check(echo == [b"\x00\x01", {"k": [None]}], "dist.echo")
    for task, status, text in (("py.fail", "failed", "boom"), ("test.fail", "failed", "boom"),
                               ("py.crash", "gave_up", "SIGKILL")):
        try:
            c.run(task, *(["boom"] if "fail" in task else []))
            raise AssertionError(f"{task} succeeded")
        except TaskError as e:
            check(e.status == status and text in e.error, f"{task}: {e.status}: {e.error}")
    after = workers(c)

    def done(ws, python):
        return sum(w["done"] for name, w in ws.items() if name.startswith("pyw") == python)
    check(done(after, False) - done(before, False) >= 100, "the C worker ran test.square")
    check(done(after, True) - done(before, True) >= 100, "the Python workers ran py.square")


def t_clients_agree(c, ep):
    py = [sys.executable, os.path.join(EXAMPLES, "dist_client.py"), "--master", ep]
    cc = [DIST_BIN, "--master", ep]
    cases = [["test.square", "7"], ["py.square", "7"],
             ["py.add", "2", "3.5"], ["test.add", "2", "3.5"],
             ["py.upper", '"ab\\u00e9"'], ["test.bytes", "5"], ["py.pid"],
             ["dist.echo", '{"$bin": "AAE="}', '"x"', '[1, {"a": null}]', "-2.5", "true"],
             ["test.fail", '"why"'], ["py.fail", '"why"']]
    for case in cases:
        rc_c, out_c = run_cli(cc + ["submit"] + case)
        rc_py, out_py = run_cli(py + ["submit"] + case)
        check(rc_c == rc_py, f"{case}: exit {rc_c} (C) vs {rc_py} (Python)")
        if case[0] != "py.pid":
            check(out_c == out_py, f"{case}: {out_c} (C) vs {out_py} (Python)")
    lines = "".join(f"[{i}]\n" for i in range(200)) + '["x"]\n\n[3]\n'
    for task in ("test.square", "py.square"):
        rc_c, out_c = run_cli(cc + ["map", task], lines)
        rc_py, out_py = run_cli(py + ["map", task], lines)
        check(rc_c == rc_py == 1, f"map {task}: exit {rc_c} (C) vs {rc_py} (Python)")
        check(len(out_c) == len(out_py) == 202, f"map {task}: line counts")
        for i, (a, b) in enumerate(zip(out_c, out_py)):
            if isinstance(a, dict):
                check(isinstance(b, dict) and "error" in a and "error" in b, f"map {task} line {i}")
            else:
                check(a == b, f"map {task} line {i}: {a} vs {b}")
        check(out_py[:200] == [i * i for i in range(200)] and out_py[201] == 9,
              f"map {task} values")
    # the Python module's map against the C client's
    rc_c, out_c = run_cli(cc + ["map", "test.square"], "".join(f"[{i}]\n" for i in range(50)))
    check([r.value for r in c.map("py.square", [[i] for i in range(50)])] == out_c, "module map")


def t_named_queues(c, ep):
    items = [1, "two", b"\x00\xff", {"k": [1.5, None]}, [3]]
    check(c.put("pyq.1", items) == "ok", "put")
    check(c.put("pyq.1", [6]) == "ok", "put again")
    check(c.get("pyq.1", max=3) == items[:3], "get the first three, in order")
    check(c.get("pyq.1", max=10) == items[3:] + [6], "get the rest")
    check(c.get("pyq.1", max=1, timeout_ms=0) == [], "get from an empty queue")
    t0 = time.monotonic()
    check(c.get("pyq.1", timeout_ms=300) == [] and time.monotonic() - t0 >= 0.25, "get waits")
    py = [sys.executable, os.path.join(EXAMPLES, "dist_client.py"), "--master", ep]
    check(run_cli(py + ["put", "pyq.2", "[1, 2]", '"x"']) == (0, []), "CLI put")
    check(run_cli(py + ["get", "pyq.2", "--max", "5"]) == (0, [[1, 2], "x"]), "CLI get")
    check(run_cli(py + ["get", "pyq.2"])[0] == 1, "CLI get from an empty queue")


def t_refused_hello(c, ep):
    import dist_worker
    try:
        Client(ep, name="n" * 129, connect_timeout=30)
        raise AssertionError("a client named with 129 bytes was welcomed")
    except dist_client.Refused as e:
        check("name" in str(e), f"the refusal names the field: {e}")
    try:
        dist_worker.Worker(ep, tasks={"bad name!": len}).run()
        raise AssertionError("a worker with task 'bad name!' was welcomed")
    except dist_worker.Refused as e:
        check("task names" in str(e), f"the refusal names the field: {e}")
    check("bad name!" not in str(c.status()), "the refused worker left no trace")


def t_killed_worker_task_completes_elsewhere(c, ep):
    ids = c.submit_many("test.sleep", [[300]] * 40)

    def pyw1_busy():  # and more queued: it still holds tasks when it dies
        st = c.status()
        depth = sum(q["depth"] for q in st["queues"] if q["name"] == "test.sleep")
        return depth >= 6 and any(w["name"] == "pyw1" and w["busy"] for w in st["workers"])
    wait_until(pyw1_busy, "the Python worker to run test.sleep")
    retried = c.status()["counters"]["retried"]
    os.kill(PYW[0].pid, signal.SIGKILL)
    results = c.wait(ids, timeout=240)
    check(all(r.ok and r.value == 300 for r in results), "every test.sleep completed")
    # The master notices the death (by the lost connection, or by the
    # silence) and runs the tasks it held again: attempt + 1.
    wait_until(lambda: "pyw1" not in workers(c), "pyw1 to be gone from the status")
    check(c.status()["counters"]["retried"] > retried, "its tasks were retried")
    # its forkserver and pool processes followed it (PR_SET_PDEATHSIG)
    PYW[0].wait(30)  # a zombie still counts as a member of the group
    wait_until(lambda: not group_alive(PYW[0].pid), "the killed worker's pool to exit", 60)


def t_killed_worker_task_completes_after_restart(c, ep):
    mark = os.path.join(TMP, "mark")
    tid = c.submit("py.mark", [mark, 1000])  # only Python workers have py.mark
    wait_until(lambda: os.path.exists(mark), "py.mark to start")
    os.kill(PYW[1].pid, signal.SIGKILL)
    wait_until(lambda: "pyw2" not in workers(c), "the master to declare pyw2 dead")
    os.unlink(mark)
    PYW.append(start_py_worker(ep, "pyw3"))
    r = c.wait([tid], timeout=240)[0]
    check(r.ok and r.value == 1000, f"py.mark after the restart: {r}")
    check(os.path.exists(mark), "py.mark ran again on the new worker")
    check(c.status()["counters"]["retried"] >= 1, "the task was retried")


def t_drain(c, ep):
    # SIGTERM: CREDIT 0, RETURN what is not started, finish the rest, BYE.
    # Nothing is retried (a RETURN keeps the attempt), nothing is lost.
    w = start("pyw4", [sys.executable, os.path.join(EXAMPLES, "dist_worker.py"), "--master", ep,
                        "--name", "pyw4", "--slots", "1", "--prefetch", "3"])
    wait_until(lambda: "pyw4" in workers(c), "pyw4 to join")
    retried = c.status()["counters"]["retried"]
    ids = c.submit_many("py.sleep", [[500]] * 12)
    wait_until(lambda: workers(c)["pyw4"]["busy"] >= 3, "pyw4 to hold tasks")
    w.send_signal(signal.SIGTERM)
    check(w.wait(120) == 0, f"pyw4 exit status {w.returncode}")
    results = c.wait(ids, timeout=240)
    check(all(r.ok and r.value == 500 for r in results), "every py.sleep completed")
    check(c.status()["counters"]["retried"] == retried, "no task was retried")
    check("pyw4" not in workers(c), "pyw4 said BYE")


def t_master_restart(c, ep):
    # pyw3 (2 slots, capacity 3) runs two py.sleep and holds a third when
    # the master is killed; the restarted master (same --store) queues them
    # again. The worker, welcomed again, RETURNs the unstarted one and
    # sends the results of the running ones; the client gets all five.
    ids = c.submit_many("py.sleep", [[1000]] * 5)
    wait_until(lambda: workers(c)["pyw3"]["busy"] == 3, "pyw3 to hold three tasks")
    os.kill(MASTER[0].pid, signal.SIGKILL)
    MASTER[0].wait(30)
    MASTER[0] = start_master(ep)[0]
    results = c.wait(ids, timeout=240)
    check(all(r.ok and r.value == 1000 for r in results), f"py.sleep across the restart: {results}")
    log = open(os.path.join(TMP, "pyw3.log"), errors="replace").read()
    check("a new session: returned" in log, "pyw3 started a new session")
    # The same client object: it said HELLO again and resent what was not
    # answered; the Python worker re-registered by itself.
    wait_until(lambda: "pyw3" in workers(c) and "cw" in workers(c), "workers to re-register")
    check(c.run("py.upper", "again") == "AGAIN", "py.upper after a master restart")
    check(c.map("test.square", [[2], [3]])[1].value == 9, "test.square after a master restart")


def main():
    global PYW, MASTER
    failed = 0
    try:
        m, ep = start_master()
        MASTER = [m]
        # --max-prefetch 1: the C worker holds 3 tasks at most, as a Python
        # worker does, instead of taking a whole queue of short tasks.
        start("cw", [WORKER_BIN, "--master", ep, "--procs", "2", "--name", "cw",
                     "--max-prefetch", "1", "--tasks", PLUGIN, "--log-level", "info"])
        PYW = [start_py_worker(ep, "pyw1")]
        with Client(ep, connect_timeout=30) as c:
            wait_until(lambda: {"cw", "pyw1"} <= set(workers(c)), "both workers to join")
            PYW.append(start_py_worker(ep, "pyw2"))
            for t in (t_both_kinds_of_worker, t_clients_agree, t_named_queues, t_refused_hello,
                      t_killed_worker_task_completes_elsewhere,
                      t_killed_worker_task_completes_after_restart, t_drain, t_master_restart):
                if t is t_killed_worker_task_completes_after_restart:
                    wait_until(lambda: "pyw2" in workers(c), "pyw2 to join")
                try:
                    t0 = time.monotonic()
                    t(c, ep)
                    print(f"ok - {t.__name__} ({time.monotonic() - t0:.1f} s)", flush=True)
                except Exception:
                    failed += 1
                    print(f"FAILED - {t.__name__}", flush=True)
                    traceback.print_exc()
    except Exception:
        failed += 1
        traceback.print_exc()
    finally:
        cleanup()
    if failed:
        for name in sorted(os.listdir(TMP)):
            if name.endswith(".log"):
                text = open(os.path.join(TMP, name), errors="replace").read()
                print(f"--- {name} (last 3000 bytes)\n{text[-3000:]}")
    if os.environ.get("DIST_TEST_KEEP"):
        print(f"logs kept in {TMP}")
    else:
        shutil.rmtree(TMP, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
