"""Extra tasks for the Python worker in tests/python_peer_test.py
(dist_worker.py --module py_peer_tasks): test.sleep, the same computation
as the C test plugin's, so that the C and the Python worker serve the same
queue and a task of a killed Python worker can complete on the C one."""
import time


def sleep(ms):
    time.sleep(ms / 1000)
    return ms


DIST_TASKS = {"test.sleep": sleep}
