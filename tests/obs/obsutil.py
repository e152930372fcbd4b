"""obsutil.py - a small cluster of the real programs for the observability
tests: dist-master (with --metrics on a free loopback port), dist-worker
with the test plugin, and the dist command line, all on 127.0.0.1.

Every process is started in its own process group and killed by pid at
the end (and on any failure); every wait is bounded. Ports are chosen by
the programs themselves (port 0) and read back from their log lines, so
two tests running at once never race for a port.

Used as: with Cluster(bindir) as c: c.master(); c.worker(); c.dist(...)
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

SKIP = 77


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def wait_for(pred, timeout, what):
    """Polls pred() until it returns a true value; fails after timeout s."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            fail("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.1)


class Cluster:
    def __init__(self, bindir):
        self.bindir = bindir
        self.master_bin = os.path.join(bindir, "master", "dist-master")
        self.worker_bin = os.path.join(bindir, "worker", "dist-worker")
        self.dist_bin = os.path.join(bindir, "cli", "dist")
        self.plugin = os.path.join(bindir, "tests", "libdist_test_tasks.so")
        for f in (self.master_bin, self.worker_bin, self.dist_bin, self.plugin):
            check(os.path.exists(f), "missing " + f)
        self.tmp = tempfile.mkdtemp(prefix="dist-obs-")
        self.procs = []
        self.endpoint = None
        self.http = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()
        return False

    def spawn(self, name, argv, stdin=None, stdout=None):
        """Starts a program with stderr to a file; returns (Popen, path)."""
        err = os.path.join(self.tmp, "%s.%d.err" % (name, len(self.procs)))
        with open(err, "wb") as ef:
            p = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                 stdout=stdout if stdout is not None else subprocess.DEVNULL,
                                 stderr=ef, start_new_session=True)
        self.procs.append(p)
        return p, err

    def master(self, *extra, metrics="127.0.0.1:0"):
        # A heartbeat timeout that a loaded machine (sanitizers, builds
        # beside) does not reach by accident; a killed worker is noticed
        # sooner anyway, by its lost connection.
        argv = [self.master_bin, "--bind", "tcp://127.0.0.1:0", "--heartbeat", "500",
                "--heartbeat-timeout", "5000"]
        if metrics:
            argv += ["--metrics", metrics]
        p, err = self.spawn("master", argv + list(extra))
        self.master_proc, self.master_err = p, err

        def ready():
            text = read(err)
            ep = re.search(r"listening on (tcp://127\.0\.0\.1:\d+)", text)
            hp = re.search(r"serving (http://127\.0\.0\.1:\d+)/", text)
            if p.poll() is not None:
                fail("dist-master exited with %s:\n%s" % (p.returncode, text))
            return ep and (hp or not metrics) and (ep.group(1), hp.group(1) if hp else None)

        self.endpoint, self.http = wait_for(ready, 30, "dist-master to listen")
        return p

    def worker(self, *extra, procs=2, plugin=True, name=None):
        argv = [self.worker_bin, "--master", self.endpoint, "--procs", str(procs)]
        if plugin:
            argv += ["--tasks", self.plugin]
        if name:
            argv += ["--name", name]
        p, err = self.spawn("worker", argv + list(extra))
        return p

    def dist(self, *args, input=None, timeout=60, check_rc=True):
        """Runs dist to completion; returns (rc, stdout, stderr)."""
        argv = [self.dist_bin] + list(args[:1]) + ["--master", self.endpoint] + list(args[1:])
        try:
            r = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                               start_new_session=True)
        except subprocess.TimeoutExpired:
            fail("dist %s took more than %ss" % (" ".join(args), timeout))
        if check_rc and r.returncode != 0:
            fail("dist %s exited %d: %s" % (" ".join(args), r.returncode,
                                           r.stderr.decode(errors="replace")))
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def status(self):
        return json.loads(self.dist("status", "--json")[1])

    def get(self, path, timeout=10):
        with urllib.request.urlopen(self.http + path, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()

    def api(self):
        return json.loads(self.get("/api/status")[2])

    def workers_alive(self, n, timeout=30):
        wait_for(lambda: len(self.status().get("workers", [])) == n, timeout,
                 "%d worker(s) in dist status" % n)

    def stop(self, p, sig=signal.SIGTERM, timeout=20):
        """Signals one process by pid and reaps it (SIGKILL after timeout)."""
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            return p.wait(timeout=10)

    def stop_all(self):
        # Workers and clients first, the master last, each by its own pid;
        # then anything a worker forked is in that worker's process group.
        for p in reversed(self.procs):
            self.stop(p)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


# ---- Prometheus text exposition format 0.0.4 ---------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_prometheus(text):
    """Parses the text format strictly: returns (types, samples) where
    types maps a family to its TYPE and samples is a list of
    (name, labels dict, float). Fails on anything the format forbids."""
    types, helps, samples = {}, {}, []
    seen = set()
    check(text.endswith("\n"), "exposition does not end with a newline")
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            parts = line.split(" ", 3)
            check(len(parts) == 4 and parts[3], "bad HELP line: " + line)
            check(parts[2] not in helps, "HELP twice for " + parts[2])
            helps[parts[2]] = parts[3]
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            check(len(parts) == 4, "bad TYPE line: " + line)
            check(parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"),
                  "bad type: " + line)
            check(parts[2] not in types, "TYPE twice for " + parts[2])
            check(parts[2] in helps, "TYPE before HELP for " + parts[2])
            types[parts[2]] = parts[3]
            continue
        check(not line.startswith("#") and line, "unexpected line: %r" % line)
        m = _SAMPLE.match(line)
        check(m, "bad sample line: %r" % line)
        name, lbls, value = m.group(1), m.group(3), m.group(4)
        labels = {}
        if lbls:
            pos = 0
            while pos < len(lbls):
                lm = _LABEL.match(lbls, pos)
                check(lm, "bad labels in %r" % line)
                check(lm.group(1) not in labels, "label twice in %r" % line)
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in types and \
                    types[name[:-len(suffix)]] == "histogram":
                fam = name[:-len(suffix)]
        check(fam in types, "sample before (or without) its TYPE: " + line)
        if types[fam] == "counter":
            check(name.endswith("_total"), "counter without _total: " + name)
        key = (name, tuple(sorted(labels.items())))
        check(key not in seen, "series twice: " + line)
        seen.add(key)
        v = float(value.replace("+Inf", "inf"))
        samples.append((name, labels, v))
    return types, samples


def sample(samples, name, **labels):
    """The value of the one sample with this name and these labels (None
    when absent)."""
    for n, l, v in samples:
        if n == name and l == labels:
            return v
    return None
