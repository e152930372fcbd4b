"""Python's multiprocessing.Pool figures matching bench_pool.c, printed with
the `py.` prefix (two pool processes, as on the C side):

pool.map_tasks_per_s          Pool.map of x*x over 1,000,000 ints, default chunksize
pool.apply_async_tasks_per_s  100,000 apply_async, then get each
pool.apply_rtt_us             median blocking Pool.apply of x*x
pool.pending_1m_rss_mib       parent RSS growth with 1,000,000 pending apply_async
"""
import multiprocessing as mp
import statistics
import sys
import time


def report(name, value, unit):
    print(f"py.{name}: {value:.6g} {unit}", flush=True)


def square(x):
    return x * x


def blocker():
    time.sleep(30)


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    wanted = set(sys.argv[1:])

    def want(name):
        return not wanted or name in wanted

    if want("pool.map_tasks_per_s"):
        with mp.Pool(2) as p:
            p.map(square, range(1000))
            best = 0
            for _ in range(3):
                t0 = time.perf_counter()
                r = p.map(square, range(1000000))
                s = sum(r)
                best = max(best, 1e6 / (time.perf_counter() - t0))
            assert s > 0
        report("pool.map_tasks_per_s", best, "tasks_per_s")
    if want("pool.apply_async_tasks_per_s"):
        with mp.Pool(2) as p:
            best = 0
            for _ in range(3):
                t0 = time.perf_counter()
                rs = [p.apply_async(square, (i,)) for i in range(100000)]
                for r in rs:
                    r.get()
                best = max(best, 1e5 / (time.perf_counter() - t0))
        report("pool.apply_async_tasks_per_s", best, "tasks_per_s")
    if want("pool.apply_rtt_us"):
        with mp.Pool(2) as p:
            t = []
            for i in range(5000):
                t0 = time.perf_counter()
                p.apply(square, (12345,))
                t.append((time.perf_counter() - t0) * 1e6)
        report("pool.apply_rtt_us", statistics.median(t), "us")
    if want("pool.pending_1m_rss_mib"):
        p = mp.Pool(1)
        p.apply_async(blocker)
        before = rss_kib()
        hs = [p.apply_async(square, (7,)) for _ in range(1000000)]
        report("pool.pending_1m_rss_mib", (rss_kib() - before) / 1024.0, "MiB")
        p.terminate()
        del hs


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
