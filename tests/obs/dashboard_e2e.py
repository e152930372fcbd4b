#!/usr/bin/env python3
"""dashboard_e2e.py BUILD_DIR - the live dashboard in headless Chromium
against a running cluster.

Cluster: dist-master --metrics, worker "wa" (test plugin, one process,
prefetch 1) kept busy by long test.sleep tasks, so that the test.sleep
queue holds a steady depth and in-flight count; worker "wb" (built-in tasks
only, two processes) runs dist.echo batches and one dist.sleep with a bad
argument, whose failure and reason the page must list. With the cluster steady, the
page is loaded in Chromium (--dump-dom after its script ran and polled
/api/status) and the numbers it shows - workers alive, each worker's
slots, busy, done and failed, queued, in flight, completed, submitted -
must equal `dist status --json`. A screenshot is kept as
BUILD_DIR/tests/artifacts/dashboard.png. Then more tasks run, the page is
loaded again, and its numbers must have moved with the cluster's (the page
takes its data from the endpoint, not from what it was served with).

Skipped (77) when chromium is not installed.
"""
import html.parser
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obsutil import SKIP, Cluster, check, fail, wait_for  # noqa: E402

SLEEPERS = 6


def chromium():
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


def run_chromium(exe, url, extra, timeout=120):
    """Runs headless Chromium once; returns its stdout. Chromium forks a
    tree of helpers: its own session, killed as a group when it is late."""
    with tempfile.TemporaryDirectory(prefix="dist-chromium-") as ud:
        argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-dev-shm-usage", "--user-data-dir=" + ud,
                # Let the page's script run and poll /api/status (the
                # budget is virtual time: it waits for the fetches).
                "--virtual-time-budget=4000"] + extra + [url]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            fail("chromium took more than %ss on %s" % (timeout, url))
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # helpers left behind
            except ProcessLookupError:
                pass
        check(p.returncode == 0, "chromium exited %s" % p.returncode)
        return out.decode(errors="replace")


class Dom(html.parser.HTMLParser):
    """Collects the test hooks of docs/OBSERVABILITY.md: elements by id,
    and the cells of worker and queue rows by data-field."""

    def __init__(self):
        super().__init__()
        self.ids = {}
        self.workers = {}
        self.queues = {}
        self.failures = {}
        self.row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = a
        if tag == "tr" and "data-worker" in a:
            self.row = self.workers.setdefault(a["data-worker"], {})
        elif tag == "tr" and "data-queue" in a:
            self.row = self.queues.setdefault((a["data-queue"], a.get("data-kind")), {})
        elif tag == "tr" and "data-failure" in a:
            self.row = self.failures.setdefault(int(a["data-failure"]), {"id": a.get("data-id")})
        elif tag == "tr":
            self.row = None
        if tag == "td" and self.row is not None and "data-field" in a:
            self.row[a["data-field"]] = a.get("data-value")


def load(exe, c):
    d = Dom()
    d.feed(run_chromium(exe, c.http + "/", ["--dump-dom"]))
    return d


def value(d, id_):
    check(id_ in d.ids, "no element #%s on the page" % id_)
    v = d.ids[id_].get("data-value")
    check(v is not None, "#%s has no data-value (the page shows '-')" % id_)
    return json.loads(v)


def compare(d, st):
    """The page's numbers against dist status --json."""
    workers = st["workers"]
    check(value(d, "counter-workers") == len(workers), "workers alive: page %s, status %d"
          % (value(d, "counter-workers"), len(workers)))
    for w in workers:
        row = d.workers.get(w["name"])
        check(row is not None, "worker %s missing from the page" % w["name"])
        for f in ("slots", "capacity", "busy", "done", "failed"):
            check(row.get(f) is not None and json.loads(row[f]) == w[f],
                  "worker %s %s: page %s, status %s" % (w["name"], f, row.get(f), w[f]))
    for q in st["queues"]:
        row = d.queues.get((q["name"], q["kind"]))
        check(row is not None, "queue %s missing" % q["name"])
        check(json.loads(row["depth"]) == q["depth"] and
              json.loads(row["in_flight"]) == q["in_flight"],
              "queue %s: page %s, status %s" % (q["name"], row, q))
    check(value(d, "total-depth") == sum(q["depth"] for q in st["queues"]), "queued")
    check(value(d, "total-in_flight") == sum(q["in_flight"] for q in st["queues"]), "in flight")
    for k in ("submitted", "completed", "failed", "dead_workers", "results_waiting"):
        check(value(d, "counter-" + k) == st["counters"][k],
              "counter %s: page %s, status %s" % (k, value(d, "counter-" + k), st["counters"][k]))


def steady(c):
    """Waits until the metrics snapshot agrees with dist status on what
    the page shows (the snapshot is at most half a second old), and
    returns that status."""
    def same():
        st, api = c.status(), c.api()
        keys = lambda s: (s["counters"], [(w["name"], w["busy"], w["done"]) for w in s["workers"]],
                          sorted((q["name"], q["depth"], q["in_flight"]) for q in s["queues"]))
        return keys(st) == keys(api) and st
    return wait_for(same, 30, "the metrics snapshot to match dist status")


def main(bindir):
    exe = chromium()
    if not exe:
        print("dashboard_e2e: skipped, chromium is not installed")
        sys.exit(SKIP)
    artifacts = os.path.join(bindir, "tests", "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    shot = os.path.join(artifacts, "dashboard.png")
    if os.path.exists(shot):
        os.unlink(shot)
    with Cluster(bindir) as c:
        c.master()
        wa = c.worker("--max-prefetch", "1", procs=1, name="wa")
        c.worker(procs=2, plugin=False, name="wb")
        c.workers_alive(2)
        # Long sleepers on wa: the queue keeps what wa cannot hold.
        sleepers, _ = c.spawn("dist-map-sleep", [c.dist_bin, "map", "test.sleep", "--master",
                                                  c.endpoint], stdin=subprocess.PIPE)
        sleepers.stdin.write(b"[120000]\n" * SLEEPERS)
        sleepers.stdin.close()

        def held():
            q = [q for q in c.status()["queues"] if q["name"] == "test.sleep"]
            return q and q[0]["depth"] + q[0]["in_flight"] == SLEEPERS and q[0]["in_flight"] > 0
        wait_for(held, 30, "the test.sleep tasks to be queued and leased")
        c.dist("map", "dist.echo", input=b"[1]\n" * 10)
        rc, _, err = c.dist("submit", "dist.sleep", '"soon"', check_rc=False)
        check(rc == 1 and "expected [milliseconds]" in err, "dist.sleep \"soon\": %d %s" % (rc, err))

        st = steady(c)
        check(sum(q["depth"] for q in st["queues"]) > 0, "nothing queued: %s" % st["queues"])
        d1 = load(exe, c)
        compare(d1, st)
        check(value(d1, "counter-completed") == 11, "completed on the first load")
        check(value(d1, "counter-failed") == 1, "failed on the first load")
        # The failure and its reason, as the JSON endpoint has them.
        fails = c.api()["recent_failures"]
        row = d1.failures.get(0)
        check(row is not None and len(d1.failures) == 1, "failures on the page: %s" % d1.failures)
        check(row["id"] == fails[0]["id"] and row.get("task") == "dist.sleep" and
              row.get("error") == fails[0]["error"] and "expected [milliseconds]" in row["error"],
              "failure row %s, api %s" % (row, fails[0]))
        check(d1.ids.get("chart-throughput") is not None and d1.ids.get("chart-latency"),
              "charts")

        # More work, then a second load: the page follows the cluster.
        c.dist("map", "dist.echo", input=b"[2]\n" * 15)
        time.sleep(1)
        st2 = steady(c)
        d2 = load(exe, c)
        compare(d2, st2)
        check(value(d2, "counter-completed") == value(d1, "counter-completed") + 15,
              "completed: first load %s, second %s" % (value(d1, "counter-completed"),
                                                       value(d2, "counter-completed")))
        check(json.loads(d2.workers["wb"]["done"]) == json.loads(d1.workers["wb"]["done"]) + 15,
              "wb done did not move by 15")
        check(value(d2, "master-uptime_s") >= value(d1, "master-uptime_s"), "uptime")

        # The screenshot once the master has a few history steps (5 s
        # each), so that the charts have something to draw.
        # The history accounts for every task once its step closed: the
        # 5 s steps' rates add up to the counters.
        def history_done():
            a = c.api()
            h = a.get("history", [])
            done = sum(round(x["completed_per_s"] * 5) for x in h)
            sub = sum(round(x["submitted_per_s"] * 5) for x in h)
            return (len(h) >= 2 and done == a["counters"]["completed"] and
                    sub == a["counters"]["submitted"]) and h
        h = wait_for(history_done, 30, "the history to count every task")
        check(all((x["p50_ms"] is not None) == (x["completed_per_s"] > 0) for x in h),
              "latency quantiles in the history: %s" % h)
        check(all(x["p50_ms"] is None or 0 <= x["p50_ms"] <= x["p95_ms"] for x in h),
              "p50 <= p95: %s" % h)
        check([x["t"] for x in h] == sorted(x["t"] for x in h), "history order")
        run_chromium(exe, c.http + "/", ["--window-size=1280,1800", "--hide-scrollbars",
                                         "--screenshot=" + shot])
        with open(shot, "rb") as f:
            head = f.read(8)
        check(head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(shot) > 10000,
              "screenshot %s" % shot)
        # wa would drain for two minutes on SIGTERM (its tasks run to the
        # end): kill it (its pool processes die with it).
        c.stop(wa, sig=signal.SIGKILL)
    print("dashboard_e2e: ok, screenshot in %s" % shot)


if __name__ == "__main__":
    main(sys.argv[1])
