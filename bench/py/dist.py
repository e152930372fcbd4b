"""Python's "distributed processes" (multiprocessing.managers.BaseManager
serving a task queue and a result queue, the classic example) measured on
the same workloads as bench_dist.c, printed with the `py.` prefix:

dist.tasks_per_s  trivial tasks (n -> n*n) from the master program through
                  the manager's queues to one worker node running two
                  processes, and back; 20,000 tasks (BaseManager is slow
                  enough that more would only make the run longer)
dist.rtt_us       median put-task -> get-result of one task
"""
import multiprocessing as mp
import queue
import socket
import statistics
import sys
import time
from multiprocessing.managers import BaseManager

AUTHKEY = b"libdist-bench"


class QueueManager(BaseManager):
    pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve(port, ready):
    task_queue = queue.Queue()
    result_queue = queue.Queue()
    QueueManager.register("get_task_queue", callable=lambda: task_queue)
    QueueManager.register("get_result_queue", callable=lambda: result_queue)
    m = QueueManager(address=("127.0.0.1", port), authkey=AUTHKEY)
    s = m.get_server()
    ready.set()
    s.serve_forever()


def connect(port):
    QueueManager.register("get_task_queue")
    QueueManager.register("get_result_queue")
    m = QueueManager(address=("127.0.0.1", port), authkey=AUTHKEY)
    m.connect()
    return m.get_task_queue(), m.get_result_queue()


def work(port):
    tasks, results = connect(port)
    while True:
        n = tasks.get()
        if n is None:
            return
        results.put((n, n * n))


def report(name, value, unit):
    print(f"py.{name}: {value:.6g} {unit}", flush=True)


def main():
    wanted = set(sys.argv[1:])

    def want(name):
        return not wanted or name in wanted

    if not (want("dist.tasks_per_s") or want("dist.rtt_us")):
        return
    port = free_port()
    ready = mp.Event()
    server = mp.Process(target=serve, args=(port, ready), daemon=True)
    server.start()
    ready.wait(10)
    time.sleep(0.2)
    workers = [mp.Process(target=work, args=(port,)) for _ in range(2)]
    for w in workers:
        w.start()
    tasks, results = connect(port)
    if want("dist.tasks_per_s"):
        n = 20000
        t0 = time.perf_counter()
        for i in range(n):
            tasks.put(i)
        got = 0
        for _ in range(n):
            results.get()
            got += 1
        report("dist.tasks_per_s", n / (time.perf_counter() - t0), "tasks_per_s")
    if want("dist.rtt_us"):
        t = []
        for i in range(2000):
            t0 = time.perf_counter()
            tasks.put(i)
            results.get()
            t.append((time.perf_counter() - t0) * 1e6)
        report("dist.rtt_us", statistics.median(t), "us")
    for _ in workers:
        tasks.put(None)
    for w in workers:
        w.join(10)
    server.terminate()
    server.join(5)


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
