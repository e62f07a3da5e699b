"""Logging helpers: structured context on multifrost's log records, and a JSON formatter.

multifrost logs through the standard ``logging`` module only, on loggers named
``multifrost.<module>``. Records about a worker or a call carry context in ``extra``
(the keys of ``CONTEXT_KEYS``), so a formatter or filter can use them as fields::

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger("multifrost").addHandler(handler)
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Mapping, MutableMapping

# The context keys multifrost puts in ``extra`` (each only where it applies).
CONTEXT_KEYS = ("worker_id", "service_id", "pid", "request_id", "function", "duration_ms")

# Every attribute a bare LogRecord has: whatever else a record carries came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class ContextLogger(logging.LoggerAdapter):
    """A logger with fixed context (e.g. the worker id) merged into every record's ``extra``.

    Unlike a plain ``LoggerAdapter`` (before Python 3.13), the ``extra`` of a single call is
    kept and added to the fixed context, so ``log.info("...", extra={"request_id": i})``
    carries both.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fixed: Mapping[str, object] = self.extra or {}
        kwargs["extra"] = {**fixed, **kwargs["extra"]} if kwargs.get("extra") else fixed
        return msg, kwargs


def bind(logger: logging.Logger | str, **context: Any) -> ContextLogger:
    """``logger`` (or the logger of that name) with ``context`` on every record; None values are left out."""
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    return ContextLogger(logger, {k: v for k, v in context.items() if v is not None})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, every ``extra`` field,
    and the formatted traceback under ``exc_info`` when there is one.

    Values JSON cannot hold are written as ``str(value)``; a record never fails to format.
    """

    def __init__(self, *, fields: dict[str, Any] | None = None, sort_keys: bool = False) -> None:
        """``fields`` are added to every object (e.g. ``{"app": "resizer"}``)."""
        super().__init__()
        self._fields = dict(fields or {})
        self._sort_keys = sort_keys

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._fields,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        import json  # only a JSON formatter needs it: a worker's start does not pay for it

        return json.dumps(entry, default=str, ensure_ascii=False, sort_keys=self._sort_keys)
