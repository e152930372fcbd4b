#!/usr/bin/env python3
"""metrics_e2e.py BUILD_DIR - dist-master --metrics against a real cluster.

Runs dist-master with --metrics on 127.0.0.1 (a free port), one dist-worker
with the test plugin, and the dist command line: 30 test.square through
dist map (while 70 HTTP clients hold every connection of the metrics
server with half-sent requests: the master's loop must not care), two test.fail, one test.crash that gives up after two attempts.
Then scrapes /metrics, parses it strictly as the Prometheus text format
(HELP and TYPE before samples, counters named _total, histograms with
cumulative _bucket{le}, +Inf equal to _count, _sum) and checks every number
against what was run and against `dist status --json`. Kills the worker
(SIGKILL) and sees the dead-worker event counted. Last, the address
checks: a non-loopback address without --insecure, a malformed one and a
port in use each stop dist-master with exit status 1 and a clear reason.
"""
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obsutil import Cluster, check, fail, parse_prometheus, sample, wait_for, read  # noqa: E402

SQUARES = 30


def scrape(c):
    status, ctype, text = c.get("/metrics")
    check(status == 200, "/metrics answered %s" % status)
    check(ctype.startswith("text/plain; version=0.0.4"), "/metrics content type " + ctype)
    return parse_prometheus(text)


def main(bindir):
    with Cluster(bindir) as c:
        c.master("--max-attempts", "2")
        # Before any snapshot the data endpoints may answer 503; the health
        # check answers at once.
        check(c.get("/healthz")[2] == "ok\n", "/healthz")
        w = c.worker(procs=2, name="w1")
        c.workers_alive(1)

        # HTTP never holds up the master's loop: with the server's every
        # connection taken by clients that send half a request and wait,
        # tasks still run.
        port = int(c.http.rsplit(":", 1)[1])
        stalled = []
        for _ in range(70):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no blank line: unfinished
            stalled.append(s)
        lines = "".join("[%d]\n" % i for i in range(1, SQUARES + 1))
        _, out, _ = c.dist("map", "test.square", input=lines.encode(), timeout=60)
        for s in stalled:
            s.close()
        check([json.loads(x) for x in out.split()] == [i * i for i in range(1, SQUARES + 1)],
              "dist map results")
        for msg in ("first", "second"):
            rc, _, err = c.dist("submit", "test.fail", '"%s"' % msg, check_rc=False)
            check(rc == 1 and msg in err, "test.fail: rc %d, %s" % (rc, err))
        rc, _, err = c.dist("submit", "test.crash", check_rc=False)
        check(rc == 1 and "gave up" in err, "test.crash: rc %d, %s" % (rc, err))

        # The snapshot is at most half a second old: wait until it shows
        # every final result.
        def settled():
            types, s = scrape(c)
            total = sum(v for n, l, v in s if n == "dist_tasks_completed_total")
            return total == SQUARES + 3 and (types, s)
        types, s = wait_for(settled, 20, "/metrics to count %d completed tasks" % (SQUARES + 3))

        expect_types = {
            "dist_master_info": "gauge", "dist_master_uptime_seconds": "gauge",
            "dist_tasks_submitted_total": "counter", "dist_tasks_completed_total": "counter",
            "dist_tasks_failed_total": "counter", "dist_tasks_retried_total": "counter",
            "dist_tasks_gave_up_total": "counter", "dist_dead_workers_total": "counter",
            "dist_malformed_messages_total": "counter",
            "dist_refused_handshakes_total": "counter", "dist_results_waiting": "gauge",
            "dist_queue_depth": "gauge", "dist_queue_in_flight": "gauge",
            "dist_workers_alive": "gauge", "dist_worker_slots": "gauge",
            "dist_worker_busy": "gauge", "dist_worker_done_total": "counter",
            "dist_worker_failed_total": "counter", "dist_worker_last_seen_seconds": "gauge",
            "dist_task_latency_seconds": "histogram",
        }
        for fam, t in expect_types.items():
            check(types.get(fam) == t, "family %s: TYPE %s, want %s" % (fam, types.get(fam), t))

        want = {  # task: (submitted, completed, failed, retried)
            "test.square": (SQUARES, SQUARES, 0, 0),
            "test.fail": (2, 2, 2, 0),
            "test.crash": (1, 1, 1, 1),
        }
        for task, (sub, done, failed, retried) in want.items():
            got = tuple(sample(s, "dist_tasks_%s_total" % k, task=task)
                        for k in ("submitted", "completed", "failed", "retried"))
            check(got == (sub, done, failed, retried),
                  "%s counters %s, want %s" % (task, got, (sub, done, failed, retried)))
        check(sample(s, "dist_tasks_gave_up_total") == 1, "gave_up_total")
        check(sample(s, "dist_workers_alive") == 1, "workers_alive")
        check(sample(s, "dist_dead_workers_total") == 0, "dead_workers_total before the kill")
        check(sample(s, "dist_malformed_messages_total") == 0, "malformed")
        check(sample(s, "dist_refused_handshakes_total") == 0, "refused handshakes")
        check(sample(s, "dist_queue_depth", queue="test.square", kind="task") == 0, "depth")
        check(sample(s, "dist_queue_in_flight", queue="test.square", kind="task") == 0,
              "in flight")
        check(sample(s, "dist_worker_slots", worker="w1", host=socket.gethostname()) == 2,
              "worker slots")
        # The worker's own counters: every attempt that reached it (the
        # crash twice, as a failure each time).
        wdone = sample(s, "dist_worker_done_total", worker="w1", host=socket.gethostname())
        wfail = sample(s, "dist_worker_failed_total", worker="w1", host=socket.gethostname())
        check(wdone == SQUARES and wfail == 4, "worker done %s failed %s" % (wdone, wfail))

        # Histograms: one per task, cumulative, +Inf == _count == completed.
        for task, (_, done, _, _) in want.items():
            buckets = [(l["le"], v) for n, l, v in s
                       if n == "dist_task_latency_seconds_bucket" and l.get("task") == task]
            check(len(buckets) >= 2 and buckets[-1][0] == "+Inf", "buckets of " + task)
            les = [float(le.replace("+Inf", "inf")) for le, _ in buckets]
            check(les == sorted(les) and len(set(les)) == len(les), "le order of " + task)
            vals = [v for _, v in buckets]
            check(vals == sorted(vals), "buckets of %s not cumulative: %s" % (task, vals))
            count = sample(s, "dist_task_latency_seconds_count", task=task)
            total = sample(s, "dist_task_latency_seconds_sum", task=task)
            check(vals[-1] == count == done, "%s: +Inf %s, count %s, want %s"
                  % (task, vals[-1], count, done))
            check(total is not None and 0 <= total < 600, "%s: sum %s" % (task, total))

        # The JSON endpoint and dist status --json read the same counters.
        api, st = c.api(), c.status()
        check(api["counters"] == st["counters"], "counters: api %s, dist status %s"
              % (api["counters"], st["counters"]))
        check(api["tasks"]["test.square"]["completed"] == SQUARES, "api tasks")
        fails = api["recent_failures"]
        check(len(fails) == 3, "recent failures: %s" % fails)
        check(fails[0]["task"] == "test.crash" and "gave up" in fails[0]["error"],
              "newest failure first: %s" % fails[0])
        check(fails[1]["error"].endswith(": second") and fails[2]["error"].endswith(": first"),
              "failure reasons: %s" % fails)
        check(all(len(f["id"]) == 32 for f in fails), "failure ids")
        check(api["latency"]["bounds_ms"][0] == 1, "latency bounds")

        # Other paths.
        try:
            c.get("/nope")
            fail("/nope answered 200")
        except Exception as e:  # urllib raises HTTPError for 404
            check(getattr(e, "code", None) == 404, "/nope: %s" % e)
        check(c.get("/")[1].startswith("text/html"), "dashboard content type")

        # A worker killed outright is a dead-worker event: its connection
        # is lost at once (or, at the latest, its heartbeats stop for the
        # master's 5 s timeout).
        c.stop(w, sig=9)
        wait_for(lambda: sample(scrape(c)[1], "dist_dead_workers_total") == 1, 30,
                 "dist_dead_workers_total to reach 1")
        check(sample(scrape(c)[1], "dist_workers_alive") == 0, "workers_alive after the kill")

        # The master stops cleanly with its HTTP thread.
        rc = c.stop(c.master_proc)
        check(rc == 0, "dist-master exited %s:\n%s" % (rc, read(c.master_err)))

    check_addresses(bindir)
    print("metrics_e2e: ok")


def run_master(c, *args):
    """Runs dist-master expecting it to exit by itself; (rc, stderr)."""
    try:
        r = subprocess.run([c.master_bin, "--bind", "tcp://127.0.0.1:0"] + list(args),
                           capture_output=True, timeout=30, start_new_session=True)
    except subprocess.TimeoutExpired:
        fail("dist-master %s did not exit" % " ".join(args))
    return r.returncode, r.stderr.decode(errors="replace")


def check_addresses(bindir):
    with Cluster(bindir) as c:
        rc, err = run_master(c, "--metrics", "0.0.0.0:0")
        check(rc == 1 and "refusing 0.0.0.0:0" in err and "--insecure" in err,
              "non-loopback without --insecure: rc %d, %s" % (rc, err))
        rc, err = run_master(c, "--metrics", "no-port-here")
        check(rc == 1 and "bad address" in err, "malformed address: rc %d, %s" % (rc, err))
        rc, err = run_master(c, "--metrics", "")
        check(rc == 2, "empty address: rc %d, %s" % (rc, err))
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        try:
            rc, err = run_master(c, "--metrics", "127.0.0.1:%d" % port)
        finally:
            busy.close()
        check(rc == 1 and "cannot listen on 127.0.0.1:%d" % port in err and "in use" in err,
              "port in use: rc %d, %s" % (rc, err))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: metrics_e2e.py BUILD_DIR", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
