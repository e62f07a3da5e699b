"""W3C trace context for calls, through OpenTelemetry when the ``multifrost[otel]`` extra is installed.

With opentelemetry-api installed and a tracer provider configured, the parent opens a CLIENT
span per call (and per stream) and sends its ``traceparent``; the worker opens a SERVER span
continuing it. Without the extra, ``ENABLED`` is False and the call path skips all of this.
OpenTelemetry is never imported here before the application imported it itself (importing
it costs tens of milliseconds, which a worker's start-up should not pay for nothing).
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from typing import Any, Iterator

ENABLED = importlib.util.find_spec("opentelemetry") is not None

_API = "opentelemetry.trace"
_recording = False
_checked_at = float("-inf")
_RECHECK = 1.0  # seconds: a provider configured later is noticed within this


def recording() -> bool:
    """Whether the application configured a tracer provider. Without one spans are no-ops and
    there is no trace to continue, so the call path skips them. The check costs about 1.6 µs,
    so it runs at most once a second; a provider, once set, stays set."""
    global _recording, _checked_at
    if _recording:
        return True
    now = time.monotonic()
    if now - _checked_at >= _RECHECK:
        _checked_at = now
        api = sys.modules.get(_API)  # not imported by the application: no provider configured
        _recording = api is not None and not isinstance(api.get_tracer_provider(), api.ProxyTracerProvider)
    return _recording


def _api() -> Any:
    return sys.modules[_API]  # imported: recording() was True


_cached_tracer: Any = None


def _tracer() -> Any:
    global _cached_tracer
    if _cached_tracer is None:
        _cached_tracer = _api().get_tracer("multifrost")
    return _cached_tracer


def client_call(name: str) -> Any:
    """A CLIENT span for a call of ``name``, made current so that ``current_traceparent`` names it."""
    trace = _api()
    return _tracer().start_as_current_span(name, kind=trace.SpanKind.CLIENT,
                                           attributes={"rpc.system": "multifrost", "rpc.method": name})


def client_span(name: str) -> tuple[Any, str | None]:
    """A CLIENT span for a stream of ``name`` (not made current: it lives across iterations) and its traceparent."""
    trace = _api()
    span = _tracer().start_span(name, kind=trace.SpanKind.CLIENT,
                                attributes={"rpc.system": "multifrost", "rpc.method": name, "multifrost.stream": True})
    return span, format_traceparent(span.get_span_context())


def end(span: Any, error: BaseException | None = None) -> None:
    """End a span from ``client_span``, marking it failed when ``error`` is given."""
    if error is not None:
        trace = _api()
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, or None when there is no valid one."""
    return format_traceparent(_api().get_current_span().get_span_context())


def format_traceparent(context: Any) -> str | None:
    """The W3C ``traceparent`` header value of a span context, or None when it is not valid."""
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` from a version-00 ``traceparent``, or None when malformed."""
    parts = value.split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    return (trace_id, span_id, flags) if trace_id and span_id else None


@contextlib.contextmanager
def server_span(context: Any, name: str) -> Iterator[None]:
    """Around a call run by the worker: a SERVER span continuing the caller's trace, when it sent
    one and this process configured a tracer provider."""
    parsed = (parse_traceparent(context.traceparent)
              if ENABLED and context.traceparent and recording() else None)
    if parsed is None:
        yield
        return
    trace = _api()
    trace_id, span_id, flags = parsed
    remote = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with _tracer().start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER,
                                         attributes={"rpc.system": "multifrost", "rpc.method": name}):
        yield
