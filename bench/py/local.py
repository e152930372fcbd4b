"""Python's multiprocessing figures matching bench_local.c, printed with
the `py.` prefix so that scripts/bench can set them side by side.

Same workloads: empty-target Process start+join; 16-byte messages over a
one-way Pipe; median Pipe ping-pong; multiprocessing.Queue 1->1 and 2->2.
Message counts are smaller than the C ones where Python would take minutes;
the figures are rates, so they stay comparable.
"""
import multiprocessing as mp
import statistics
import sys
import time

MSG = b"0123456789abcde!"


def report(name, value, unit):
    print(f"py.{name}: {value:.6g} {unit}", flush=True)


def empty():
    pass


def spawn_join(n=500):
    t0 = time.perf_counter()
    for _ in range(n):
        p = mp.Process(target=empty)
        p.start()
        p.join()
    report("process.spawn_join_per_s", n / (time.perf_counter() - t0), "per_s")


def pipe_sender(conn, other, n):
    other.close()
    for _ in range(n):
        conn.send_bytes(MSG)
    conn.close()


def pipe_echo(conn, other):
    other.close()  # the parent's end: keep it open here and EOF never comes
    try:
        while True:
            conn.send_bytes(conn.recv_bytes())
    except EOFError:
        pass


def pipe_figures(n=200000, rtt_n=20000):
    r, w = mp.Pipe(duplex=False)
    p = mp.Process(target=pipe_sender, args=(w, r, n))
    t0 = time.perf_counter()
    p.start()
    w.close()
    for _ in range(n):
        r.recv_bytes()
    report("pipe.msgs_per_s", n / (time.perf_counter() - t0), "msgs_per_s")
    p.join()

    a, b = mp.Pipe()
    p = mp.Process(target=pipe_echo, args=(b, a))
    p.start()
    b.close()
    rtts = []
    for _ in range(rtt_n):
        t0 = time.perf_counter()
        a.send_bytes(MSG)
        a.recv_bytes()
        rtts.append((time.perf_counter() - t0) * 1e6)
    a.close()
    p.join()
    report("pipe.rtt_us", statistics.median(rtts), "us")


def producer(q, n):
    for _ in range(n):
        q.put(MSG)


def consumer(q, n):
    for _ in range(n):
        q.get()


def queue_run(nprod, ncons, total):
    q = mp.Queue()
    procs = [mp.Process(target=consumer, args=(q, total // ncons)) for _ in range(ncons)]
    procs += [mp.Process(target=producer, args=(q, total // nprod)) for _ in range(nprod)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return total / (time.perf_counter() - t0)


def main():
    wanted = set(sys.argv[1:])

    def want(name):
        return not wanted or name in wanted

    if want("process.spawn_join_per_s"):
        spawn_join()
    if want("pipe.msgs_per_s") or want("pipe.rtt_us"):
        pipe_figures()
    if want("queue.msgs_per_s"):
        report("queue.msgs_per_s", queue_run(1, 1, 200000), "msgs_per_s")
    if want("queue.mpmc_msgs_per_s"):
        report("queue.mpmc_msgs_per_s", queue_run(2, 2, 200000), "msgs_per_s")


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
