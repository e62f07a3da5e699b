"""``worker.call.add(1, 2)``: attribute access that turns into remote calls."""
from __future__ import annotations

from typing import Any, Callable

_OPTIONS = ("timeout", "namespace")
STREAM_OPTIONS = ("timeout", "namespace", "window")


class CallProxy:
    """Each attribute is a function that calls the worker method of that name.

    ``timeout=`` and ``namespace=`` are call options; any other keyword is a TypeError,
    because the protocol carries positional arguments only.
    """

    __slots__ = ("_invoke", "_options", "_allowed")

    def __init__(self, invoke: Callable[..., Any], options: dict | None = None,
                 allowed: tuple[str, ...] = _OPTIONS) -> None:
        self._invoke = invoke
        self._options = options or {}
        self._allowed = allowed

    def with_options(self, **options: Any) -> "CallProxy":
        """A proxy whose calls use these options (``timeout`` in seconds, ``namespace``)."""
        _check(options, "with_options()", self._allowed)
        return CallProxy(self._invoke, {**self._options, **options}, self._allowed)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        invoke, defaults, allowed = self._invoke, self._options, self._allowed

        def remote(*args: Any, **options: Any) -> Any:
            if options:
                _check(options, f"{name}()", allowed)
                return invoke(name, args, **{**defaults, **options})
            return invoke(name, args, **defaults)

        remote.__name__ = name
        return remote


def _check(options: dict, where: str, allowed: tuple[str, ...] = _OPTIONS) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{where} got keyword argument(s) {', '.join(unknown)}: the Multifrost protocol "
                        f"carries positional arguments only (the keywords timeout= and namespace= are call options)")
