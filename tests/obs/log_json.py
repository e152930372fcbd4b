#!/usr/bin/env python3
"""log_json.py BUILD_DIR - --log-format json of dist-master, dist-worker and dist.


Runs a master and a worker with --log-format json --log-level debug (debug
so that the metrics server's thread logs too, interleaved with the loop's),
runs tasks, one that fails, kills nothing but stops both with SIGTERM, and
parses every line each program wrote to stderr as one JSON object with
time (ISO 8601 UTC), level, component, message and fields {program, pid}.
Checks that known events are there (listening, worker joined, the failure)
and that the default stays text. A bad --log-format is a usage error (2).
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obsutil import Cluster, check, read  # noqa: E402

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse_lines(path, program, pid):
    text = read(path)
    check(text.endswith("\n"), "%s: log does not end with a newline" % program)
    objs = []
    for line in text.split("\n")[:-1]:
        try:
            o = json.loads(line)
        except ValueError as e:
            check(False, "%s: not JSON (%s): %r" % (program, e, line))
        check(isinstance(o, dict), "%s: not an object: %r" % (program, line))
        check(set(o) == {"time", "level", "component", "message", "fields"},
              "%s: keys %s" % (program, sorted(o)))
        check(TIME.match(o["time"]), "%s: time %r" % (program, o["time"]))
        check(o["level"] in ("error", "warn", "info", "debug"), "level %r" % o["level"])
        check(isinstance(o["message"], str) and o["message"], "message %r" % o["message"])
        check(o["fields"] == {"program": program, "pid": pid},
              "%s: fields %s" % (program, o["fields"]))
        objs.append(o)
    check(objs, "%s logged nothing" % program)
    return objs


def main(bindir):
    with Cluster(bindir) as c:
        m = c.master("--log-format", "json", "--log-level", "debug")
        w = c.worker("--log-format", "json", "--log-level", "debug", name="jw")
        c.workers_alive(1)
        c.dist("map", "test.square", input=b"[1]\n[2]\n[3]\n")
        rc, _, err = c.dist("submit", "test.fail", '"a \\"quoted\\" reason\\n"', check_rc=False)
        check(rc == 1, "test.fail rc %d" % rc)
        c.get("/metrics")  # a debug line from the HTTP thread
        # dist logs the same way (its messages for the user stay plain).
        _, _, derr = c.dist("status", "--json", "--log-level", "debug", "--log-format", "json")
        dl = [json.loads(x) for x in derr.splitlines()]
        check(dl and all(o["fields"]["program"] == "dist" and o["component"] for o in dl),
              "dist json log: %r" % derr)
        wpath = [p for p in os.listdir(c.tmp) if p.startswith("worker")][0]
        check(c.stop(w) == 0, "worker exit status")
        check(c.stop(m) == 0, "master exit status")
        ml = parse_lines(c.master_err, "dist-master", m.pid)
        wl = parse_lines(os.path.join(c.tmp, wpath), "dist-worker", w.pid)
        msgs = [o["message"] for o in ml]
        check(any(o["component"] == "master" and "listening on tcp://127.0.0.1:" in o["message"]
                  for o in ml), "no listening line: %s" % msgs)
        check(any("metrics: GET /metrics -> 200" in x for x in msgs), "no request line")
        check(any("worker joined" in x and "jw" in x for x in msgs), "no worker joined line")
        check(any(o["level"] == "debug" for o in ml), "no debug line")
        check(msgs[-1] == "stopped by SIGTERM", "last master line %r" % msgs[-1])
        check(any(o["component"] == "worker" for o in wl), "worker component")

    # text stays the default
    with Cluster(bindir) as c:
        m = c.master()
        c.stop(m)
        # "listening" comes once everything is up (the metrics endpoint too).
        first = [x for x in read(c.master_err).split("\n") if "listening on" in x][0]
        check(re.match(r"^\d{4}-\d\d-\d\dT\S+Z info  master: master .* listening on ", first),
              "text line: %r" % first)
        for b in (c.master_bin, c.worker_bin):
            r = subprocess.run([b, "--log-format", "xml"], capture_output=True, timeout=30)
            check(r.returncode == 2 and b"--log-format" in r.stderr,
                  "%s --log-format xml: %d %r" % (b, r.returncode, r.stderr))
    print("log_json: ok")


if __name__ == "__main__":
    main(sys.argv[1])
