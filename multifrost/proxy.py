"""``worker.call.add(1, 2)``: attribute access that turns into remote calls."""
from __future__ import annotations

from typing import Any, Callable

_OPTIONS = ("timeout", "namespace")


class CallProxy:
    """Each attribute is a function that calls the worker method of that name.

    ``timeout=`` and ``namespace=`` are call options; any other keyword is a TypeError,
    because the protocol carries positional arguments only.
    """

    __slots__ = ("_invoke", "_options")

    def __init__(self, invoke: Callable[..., Any], options: dict | None = None) -> None:
        self._invoke = invoke
        self._options = options or {}

    def with_options(self, **options: Any) -> "CallProxy":
        """A proxy whose calls use these options (``timeout`` in seconds, ``namespace``)."""
        _check(options, "with_options()")
        return CallProxy(self._invoke, {**self._options, **options})

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        invoke, defaults = self._invoke, self._options

        def remote(*args: Any, **options: Any) -> Any:
            if options:
                _check(options, f"{name}()")
                return invoke(name, args, **{**defaults, **options})
            return invoke(name, args, **defaults)

        remote.__name__ = name
        return remote


def _check(options: dict, where: str) -> None:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"{where} got keyword argument(s) {', '.join(unknown)}: the Multifrost protocol "
                        f"carries positional arguments only (the keywords timeout= and namespace= are call options)")
