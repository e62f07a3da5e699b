"""One rule for every call timeout, checked before anything is sent: ``None`` (wait as long
as it takes) or a finite number of seconds above zero. Both parent APIs use it, so that
``inf``, ``nan``, ``0`` or ``True`` fail the same way everywhere instead of deep in a poll."""
from __future__ import annotations

import math
import numbers


def check_timeout(value: object, name: str = "timeout") -> float | None:
    """Return ``value`` as seconds (float) or None; TypeError/ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    kind = type(value)
    if kind is not float and kind is not int:  # the common cases skip the slower ABC check
        if kind is bool or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be None or a number of seconds, not {kind.__name__}")
    try:
        seconds = float(value)  # type: ignore[arg-type]  # a numbers.Real, checked above
    except OverflowError:
        seconds = math.inf
    if not 0.0 < seconds < math.inf:  # NaN fails both comparisons
        raise ValueError(f"{name} must be None (no timeout) or a finite number of seconds > 0, not {value!r}")
    return seconds
