"""What the streaming and cancellation tests share: the stream worker, one per module and API."""
import os
import time
import uuid

import pytest

from helpers import AsyncClient
from multifrost import ParentWorker

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "workers", "stream_worker.py")
LIVENESS = 10.0  # seconds: generous bound for what should happen at once


def tag() -> str:
    """A fresh name for what one test makes the worker record."""
    return uuid.uuid4().hex


def poll(probe, condition, timeout=LIVENESS):
    """``probe()`` until ``condition`` holds of its value or ``timeout`` passes; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if condition(value) or time.monotonic() >= deadline:
            return value
        time.sleep(0.005)


@pytest.fixture(scope="module")
def sync_worker():
    with ParentWorker.spawn(SCRIPT, default_timeout=LIVENESS) as worker:
        yield worker


@pytest.fixture(scope="module")
def async_client():
    client = AsyncClient(ParentWorker.spawn(SCRIPT, default_timeout=LIVENESS))
    client.start()
    yield client
    client.close()
