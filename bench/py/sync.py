"""Python's figures matching bench_sync.c, printed with the `py.` prefix so
that scripts/bench can set them side by side.

Same workloads: multiprocessing.Lock acquire+release in one process; two
processes adding 1 to a shared counter (a lock-free Value whose memory is
guarded by one multiprocessing.Lock, as in the C benchmark), started
together by a Barrier; and
subprocess.run(["/bin/true"]). Counts are smaller than the C ones where
Python would take minutes; the figures are rates, so they stay comparable.
"""
import multiprocessing as mp
import statistics
import subprocess
import sys
import time


def report(name, value, unit):
    print(f"py.{name}: {value:.6g} {unit}", flush=True)


def lock_uncontended(n=1000000):
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    report("sync.lock_uncontended_ns", (time.perf_counter() - t0) * 1e9 / n, "ns")


def incrementer(lock, counter, start, n):
    acquire, release = lock.acquire, lock.release
    start.wait()
    for _ in range(n):
        acquire()
        counter.value += 1
        release()


def contended_run(each=200000):
    """The clock runs from the moment both children are ready (a Barrier
    with the parent; process start-up is not measured) to the last join."""
    lock = mp.Lock()
    counter = mp.Value("q", 0, lock=False)
    start = mp.Barrier(3)
    procs = [mp.Process(target=incrementer, args=(lock, counter, start, each)) for _ in range(2)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    rate = 2 * each / (time.perf_counter() - t0)
    assert counter.value == 2 * each
    return rate


def spawn_wait(n=1000):
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
    report("subprocess.spawn_wait_per_s", n / (time.perf_counter() - t0), "per_s")


def main():
    wanted = set(sys.argv[1:])

    def want(name):
        return not wanted or name in wanted

    if want("sync.lock_uncontended_ns"):
        lock_uncontended()
    if want("sync.lock_contended_ops_per_s"):
        rates = [contended_run() for _ in range(3)]
        report("sync.lock_contended_ops_per_s", statistics.median(rates), "ops_per_s")
    if want("subprocess.spawn_wait_per_s"):
        spawn_wait()


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
