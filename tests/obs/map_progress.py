#!/usr/bin/env python3
"""map_progress.py BUILD_DIR - dist map's progress line on a terminal.

Runs `dist map test.sleep` over 200 items of 25 ms with its stderr on a
pseudo-terminal (python's pty module) and its stdout in a pipe: the
terminal gets a progress line redrawn in place ("\\r[####....]  50%
100/200  80/s  ETA 2s") that reaches 100% and 200/200 and ends with a
newline, while stdout holds only the 200 results. Then the same run with
stdout and stderr on one terminal: rendered as a terminal would, every line
is a result on its own (never glued to a bar, no old bar left between
results), and the bar is drawn again after them. Last, stderr not a
terminal: no progress at all.
"""
import json
import os
import pty
import re
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from obsutil import Cluster, check, fail  # noqa: E402

N = 200
SLEEP_MS = 25  # 200 x 25 ms on two processes: 2.5 s at least, so an ETA shows
LINE = re.compile(r"\[([#.]{24})\] +(\d+)% (\d+)/(\d+) +(\d+)/s +ETA ([^\s\x1b]+)")


def render(text):
    """The lines a terminal shows for text: \\r returns to column 0,
    ESC [ K clears to the end of the line, \\n ends it."""
    lines, cur, col = [], [], 0
    i = 0
    while i < len(text):
        ch = text[i]
        if text.startswith("\033[K", i):
            del cur[col:]
            i += 3
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            if col < len(cur):
                cur[col] = ch
            else:
                cur.append(ch)
            col += 1
        i += 1
    if cur:
        lines.append("".join(cur))
    return lines


def read_pty(p, master_fd, extra_fd=None, timeout=120):
    """Everything the program writes to the terminal (and to extra_fd)."""
    tty, out = b"", b""
    end = time.monotonic() + timeout
    # The terminal's side gives EIO once the last writer closed it.
    fds = {master_fd: "tty"}
    if extra_fd is not None:
        fds[extra_fd] = "out"
    while fds and time.monotonic() < end:
        r, _, _ = select.select(list(fds), [], [], 1.0)
        for fd in r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                del fds[fd]
            elif fds[fd] == "tty":
                tty += chunk
            else:
                out += chunk
    return tty, out


def shared_terminal(c, argv, args):
    master_fd, slave_fd = pty.openpty()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=slave_fd, stderr=slave_fd,
                         start_new_session=True)
    os.close(slave_fd)
    c.procs.append(p)
    p.stdin.write(args)
    p.stdin.close()
    tty, _ = read_pty(p, master_fd)
    os.close(master_fd)
    rc = c.stop(p, timeout=30)
    check(rc == 0, "dist map (one terminal) exited %s; terminal: %r" % (rc, tty[-500:]))
    lines = render(tty.decode(errors="replace"))
    results = [ln for ln in lines if not LINE.search(ln)]
    bars = [ln for ln in lines if LINE.search(ln)]
    check(results == [str(SLEEP_MS)] * N,
          "one terminal: lines that are not a bar should be the %d results, got %d: %r"
          % (N, len(results), [r for r in results if r != str(SLEEP_MS)][:3]))
    # Only the final bar stays on the screen, after every result.
    check(len(bars) == 1 and lines[-1] is bars[0] and LINE.search(bars[0]).group(2) == "100",
          "one terminal: bars left on screen: %r" % bars[:3])
    # The bar was drawn again between results, not only at the end.
    check(tty.count(b"\r[") > 2, "one terminal: the bar was not redrawn after results")


def main(bindir):
    with Cluster(bindir) as c:
        c.master()
        c.worker(procs=2)
        c.workers_alive(1)
        args = "".join("[%d]\n" % SLEEP_MS for i in range(N)).encode()
        argv = [c.dist_bin, "map", "test.sleep", "--master", c.endpoint]

        master_fd, slave_fd = pty.openpty()
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=slave_fd, start_new_session=True)
        os.close(slave_fd)
        c.procs.append(p)
        p.stdin.write(args)
        p.stdin.close()
        tty, out = read_pty(p, master_fd, p.stdout.fileno())
        os.close(master_fd)
        rc = c.stop(p, timeout=30)
        check(rc == 0, "dist map exited %s; terminal: %r" % (rc, tty[-500:]))
        results = [json.loads(x) for x in out.split()]
        check(results == [SLEEP_MS] * N, "results (%d lines)" % len(results))

        text = tty.decode(errors="replace")
        frames = [f for f in text.replace("\r\n", "\n").split("\r") if f.strip()]
        draws = [LINE.search(f) for f in frames]
        draws = [d for d in draws if d]
        check(len(draws) >= 2, "fewer than two progress lines: %r" % text[-500:])
        check("\033[K" in text, "no clear-to-end-of-line")
        first, last = draws[0], draws[-1]
        check(int(first.group(3)) < N and int(first.group(4)) == N, "first: " + first.group(0))
        check(last.group(1) == "#" * 24 and last.group(2) == "100" and last.group(3) == str(N),
              "last: " + last.group(0))
        done = [int(d.group(3)) for d in draws]
        check(done == sorted(done), "progress went back: %s" % done)
        check(int(last.group(5)) > 0, "rate: " + last.group(0))
        # Somewhere in the middle, once a second has passed, an ETA in time
        # units; before, '?'.
        etas = [d.group(6) for d in draws]
        check(all(re.match(r"^(\?|\d+s|\d+m\d\ds|\d+h\d\dm)$", e) for e in etas), "ETAs %s" % etas)
        check(etas[0] == "?" and any(e != "?" for e in etas), "ETAs %s" % etas)
        check(text.endswith("\n"), "no final newline")

        shared_terminal(c, argv, args)

        # Not a terminal: not one byte of progress.
        r = subprocess.run(argv, input=b"[1]\n[2]\n", capture_output=True, timeout=60)
        check(r.returncode == 0 and r.stderr == b"", "progress off a terminal: %r" % r.stderr)
    print("map_progress: ok (%d redraws)" % len(draws))


if __name__ == "__main__":
    main(sys.argv[1])
