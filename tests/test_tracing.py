"""Trace context (issue 15): with OpenTelemetry the parent opens a CLIENT span per call and per stream,
and the worker a SERVER span continuing the trace; without it nothing is imported and no traceparent
is sent. Each case runs in a fresh Python process, since a tracer provider is set once per process."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "workers", "stream_worker.py")

WITH_OTEL = r"""
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
from multifrost import ParentWorker
out = {}
with ParentWorker.spawn(sys.argv[1], env={"STREAM_WORKER_OTEL": "1"}, default_timeout=10) as w:
    out["call"] = w.call.traced()
    out["stream"] = list(w.stream.traced_rows(2))
async def main():
    async with ParentWorker.spawn(sys.argv[1], env={"STREAM_WORKER_OTEL": "1"}, default_timeout=10) as w:
        out["acall"] = await w.acall.traced()
asyncio.run(main())
out["spans"] = [{"name": s.name, "kind": str(s.kind), "trace": f"{s.context.trace_id:032x}",
                 "span": f"{s.context.span_id:016x}", "status": str(s.status.status_code)}
                for s in exporter.get_finished_spans()]
print(json.dumps(out))
"""

WITHOUT_OTEL = r"""
import asyncio, json, sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed
from multifrost import ParentWorker, tracing
out = {"enabled": tracing.ENABLED}
with ParentWorker.spawn(sys.argv[1], default_timeout=10) as w:
    out["traceparent"] = w.call.traceparent()
    out["stream"] = list(w.stream.rows(2))
out["imported"] = sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m] is not None)
print(json.dumps(out))
"""


def run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_spans_continue_the_callers_trace():
    pytest.importorskip("opentelemetry.sdk", reason="needs the test extra (opentelemetry-sdk)")
    out = run(WITH_OTEL)
    clients = {s["name"]: s for s in out["spans"] if s["kind"] == "SpanKind.CLIENT"}
    assert set(clients) == {"traced", "traced_rows"}  # one per call (sync and async), one per stream
    calls = [s for s in out["spans"] if s["name"] == "traced"]
    assert len(calls) == 2
    trace_id, parent_id, kind = out["call"]
    assert kind == "SpanKind.SERVER"
    assert any(s["trace"] == trace_id and s["span"] == parent_id for s in calls)
    trace_id, parent_id, _ = out["acall"]
    assert any(s["trace"] == trace_id and s["span"] == parent_id for s in calls)
    stream = clients["traced_rows"]
    assert all(item[0] == stream["trace"] and item[1] == stream["span"] for item in out["stream"])


def test_without_opentelemetry_nothing_is_imported_or_sent():
    out = run(WITHOUT_OTEL)
    assert out == {"enabled": False, "traceparent": None, "stream": [0, 1], "imported": []}
