"""multifrost.heap: a process that moves a large message keeps freed memory (glibc), so the
next large message does not pay a page fault per 4 KiB; small messages change nothing."""
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "workers", "heap_worker.py")
glibc = pytest.mark.skipif(not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6")
                           and not os.path.exists("/usr/lib/x86_64-linux-gnu/libc.so.6"),
                           reason="mallopt settings are glibc's")


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "MULTIFROST_KEEP_FREED_MEMORY")}
    environ.update(env, PYTHONPATH=os.pathsep.join(filter(None, (ROOT, os.environ.get("PYTHONPATH")))))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


STATES = """
    from multifrost import ParentWorker, heap
    with ParentWorker.spawn({worker!r}) as w:
        w.call.echo(b"x" * 1000)
        print(heap.decided, heap.kept, w.call.heap_state())
        w.call.echo(b"x" * (300 * 1024))
        print(heap.decided, heap.kept, w.call.heap_state())
"""


@glibc
def test_a_large_message_makes_both_processes_keep_freed_memory():
    small, large = _run(STATES.format(worker=WORKER)).splitlines()
    assert small == "False False [False, False]"
    assert large == "True True [True, True]"


@glibc
@pytest.mark.parametrize("env", [{"MULTIFROST_KEEP_FREED_MEMORY": "0"}, {"MALLOC_TRIM_THRESHOLD_": "1000000"}])
def test_an_opt_out_or_a_malloc_setting_of_the_users_own_is_left_alone(env):
    large = _run(STATES.format(worker=WORKER), **env).splitlines()[1]
    assert large == "True False [True, False]"


FAULTS = """
    import resource
    from multifrost import heap, protocol
    from multifrost.codec import pack_message
    message = {"app": "comlink_ipc_v4", "id": "1", "type": "call", "function": "f", "args": [b"x" * (1 << 20)]}

    def faults_per_pack():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(40):
            protocol.check_size(pack_message(message), 1 << 30)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40

    protocol.check_size(pack_message(message), 1 << 30)  # the first large message
    print(faults_per_pack(), heap.kept)
"""


@glibc
def test_after_the_first_large_message_packing_another_does_not_fault_its_memory_in_again():
    # Opting out shows the cost (1 MiB = 256 pages, touched afresh each time); kept, it is gone.
    faults, kept = _run(FAULTS, MULTIFROST_KEEP_FREED_MEMORY="0").split()
    assert kept == "False" and float(faults) > 200
    faults, kept = _run(FAULTS).split()
    assert kept == "True" and float(faults) < 16
