"""Many processes writing the registry at once: nothing lost, one winner, always valid JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import multifrost
from multifrost.registry import FileRegistry

DISTINCT = 20
SHARED = 20
PACKAGE_ROOT = str(Path(multifrost.__file__).resolve().parents[1])

# Each racer: say "ready", wait for "go" on stdin, register, report, then stay alive (its
# entry must stay live) until stdin closes.
RACER = """
import json, sys
from multifrost.errors import RegistryError
from multifrost.registry import FileRegistry
reg = FileRegistry(sys.argv[1], lock_timeout=60)  # a loaded machine must not fail the race
service_id, port = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
try:
    reg.register(service_id, port)
    outcome = "ok"
except RegistryError as exc:
    outcome = "refused: " + str(exc)
print(json.dumps({"id": service_id, "outcome": outcome}), flush=True)
sys.stdin.read()
"""


def test_concurrent_registration(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "mf" / "services.json"
    monkeypatch.setenv("MULTIFROST_REGISTRY", str(path))
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)

    jobs = [(f"svc-{i}", 20000 + i) for i in range(DISTINCT)]
    jobs += [("shared", 30000 + i) for i in range(SHARED)]
    procs = []
    try:
        for service_id, port in jobs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", RACER, str(path), service_id, str(port)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"

        reads, bad = [0], []
        racing = threading.Event()
        racing.set()

        def watch():
            while racing.is_set():
                try:
                    text = path.read_text()
                except FileNotFoundError:
                    continue
                reads[0] += 1
                try:
                    assert isinstance(json.loads(text), dict)
                except (ValueError, AssertionError):
                    bad.append(text)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results = [json.loads(proc.stdout.readline()) for proc in procs]
        finally:
            racing.clear()
            watcher.join()

        assert bad == [], f"registry file was invalid JSON during the race: {bad[:3]!r}"
        assert reads[0] > 0

        entries = FileRegistry(path).entries()
        pids = {proc.pid for proc in procs}
        for (service_id, port), proc, result in zip(jobs[:DISTINCT], procs, results):
            assert result == {"id": service_id, "outcome": "ok"}
            entry = entries[service_id]
            assert (entry.port, entry.pid) == (port, proc.pid) and entry.alive

        shared = list(zip(jobs[DISTINCT:], procs[DISTINCT:], results[DISTINCT:]))
        winners = [(port, proc.pid) for (_, port), proc, result in shared if result["outcome"] == "ok"]
        assert len(winners) == 1, results[DISTINCT:]
        assert (entries["shared"].port, entries["shared"].pid) == winners[0]
        for _, _, result in shared:
            assert result["outcome"] == "ok" or "already registered" in result["outcome"], result
        assert set(entries) == {service_id for service_id, _ in jobs}
        assert {e.pid for e in entries.values()} <= pids
        assert sorted(p.name for p in path.parent.iterdir()) == ["services.json"]
    finally:
        for proc in procs:
            proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=30)
            proc.stdout.close()
