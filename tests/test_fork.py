"""fork(): a process forked from one that started workers (bare os.fork, multiprocessing in
the fork context) never stops, steals from or spins on its parent's workers; using an
inherited worker raises MultifrostError at once."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FORK_APP = os.path.join(HERE, "workers", "fork_app.py")
MATH = os.path.join(HERE, "workers", "math_worker.py")


def fork_app(api: str, way: str) -> dict:
    proc = subprocess.run([sys.executable, FORK_APP, api, way, MATH], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("way", ["fork-exit", "fork-os-exit", "fork-sigint", "mp-exit", "mp-terminate",
                                 "pool-terminate", "fork-early-sigterm"])
def test_forked_process_ending_leaves_the_parents_worker_alone(api, way):
    result = fork_app(api, way)
    assert result["alive"] and result["same_child"], result  # the worker's child was not stopped
    assert result["answer"] == 5 and result["healthy"], result
    assert result["stopped_by_close"], result  # and close() in the parent still stops it
    if way == "mp-terminate":
        assert result["forked"] == -15  # SIGTERM ended the forked process as it would without us
    elif isinstance(result["forked"], dict):
        # SIGINT: an unhandled KeyboardInterrupt; an early SIGTERM is not lost in the fork hook's window
        expected = {"fork-sigint": -2, "fork-early-sigterm": -15}.get(way, 0)
        assert result["forked"]["status"] == expected, result


@pytest.mark.parametrize("api", ["sync", "async"])
def test_forked_process_using_the_inherited_worker_gets_an_error_at_once(api):
    result = fork_app(api, "use")
    report = result["forked"]["report"]
    for use in ("call", "ping", "restart"):
        message, seconds = report[use]
        assert "forked process" in message and "start a new worker in this process" in message, report
        assert seconds < 1.0, report  # at once: no spinning until the timeout (or for ever)
    assert report["close"][0] == "returned"  # close() in the fork stops nothing ...
    assert result["alive"] and result["answer"] == 5, result  # ... the parent's worker still answers
    assert result["stopped_by_close"], result


FORKING_THREADS = """
import json, os, signal, sys, threading
from multifrost import ParentWorker
worker = ParentWorker.spawn(sys.argv[1]).start()  # from the main thread: our signal handlers are in
masks = {}
def fork_many():
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    masks[threading.current_thread().name] = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
threads = [threading.Thread(target=fork_many, name=f"t{i}") for i in range(3)]
for thread in threads:
    thread.start()
fork_many()
for thread in threads:
    thread.join()
worker.close()
print(json.dumps(masks))
"""


def test_forks_from_several_threads_at_once_leave_no_signal_blocked():
    """The fork hooks hold SIGINT/SIGTERM blocked per forking thread; forks that overlap in
    several threads must each get their own mask back (a blocked SIGINT would be inherited by
    every process that thread starts afterwards)."""
    proc = subprocess.run([sys.executable, "-c", FORKING_THREADS, MATH], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    masks = json.loads(proc.stdout.strip().splitlines()[-1])
    assert masks == {"MainThread": [], "t0": [], "t1": [], "t2": []}, masks


_IDS = """
import os, uuid
from multifrost import protocol
ids = [protocol.new_id() for _ in range(1000)]
assert len(set(ids)) == 1000
assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, protocol.new_id().encode())
    os._exit(0)
os.waitpid(pid, 0)
child, mine = os.read(r, 64).decode(), protocol.new_id()
print(child[:23] != mine[:23], uuid.UUID(child).version)
"""


def test_a_forked_process_draws_call_ids_of_its_own():
    """Ids count up from a random UUID4 drawn per process: a fork draws again, so its ids are not its parent's."""
    proc = subprocess.run([sys.executable, "-c", _IDS], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "4"]
