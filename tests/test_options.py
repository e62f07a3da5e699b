"""WorkerOptions: a ParentWorker's settings, frozen and keyword-only, built by the factories."""
import dataclasses

import pytest
from math_worker import MathWorker

from multifrost import ParentWorker, WorkerOptions


def test_options_are_frozen_and_keyword_only():
    options = WorkerOptions(default_timeout=2.0, auto_restart=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.auto_restart = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        WorkerOptions(2.0)  # type: ignore[misc]
    assert dataclasses.replace(options, auto_restart=False).auto_restart is False


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True])
def test_a_bad_default_timeout_is_refused_when_the_options_are_made(bad):
    with pytest.raises((TypeError, ValueError), match="default_timeout"):
        WorkerOptions(default_timeout=bad)


def test_the_factories_keep_their_arguments_in_the_options(worker_script):
    spawned = ParentWorker.spawn(worker_script, default_timeout=3.0, auto_restart=True, max_restart_attempts=2,
                                 heartbeat_interval=0.5, client_name="me", metrics=False)
    assert spawned.options == WorkerOptions(default_timeout=3.0, auto_restart=True, max_restart_attempts=2,
                                            heartbeat_interval=0.5, client_name="me", metrics=False)
    connected = ParentWorker.connect("svc", timeout=7.0, heartbeat_max_misses=4)
    assert connected.options.start_timeout == 7.0 and connected.options.heartbeat_max_misses == 4
    assert connected.options.auto_restart is False
    inprocess = ParentWorker.inprocess(MathWorker(), default_timeout=1.5)
    assert inprocess.options == WorkerOptions(default_timeout=1.5, heartbeat_interval=0.0)
