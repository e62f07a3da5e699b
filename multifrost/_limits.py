"""Decoding limits shared by both codec implementations."""
from __future__ import annotations

from typing import NamedTuple

MiB = 1024 * 1024

#: The deepest nesting either codec accepts as a limit; it keeps recursion
#: within the C stack (compiled codec) and near Python's recursion limit.
DEPTH_CEILING = 10_000


class _Bounds(NamedTuple):
    max_str_len: int = 64 * MiB
    max_bin_len: int = 64 * MiB
    max_array_len: int = 1_000_000
    max_map_len: int = 1_000_000
    max_depth: int = 512


class Limits(_Bounds):
    """Upper bounds a received message must respect; past one, it is a ProtocolError.

    They protect a receiver from hostile or broken peers: a tiny frame cannot make
    it allocate a huge string, list or dict, or recurse without end.
    ``max_depth`` counts containers: the top-level map is depth 1.
    Immutable; a NamedTuple, not a dataclass: a worker's start-up need not load ``dataclasses``.
    """

    __slots__ = ()

    def __new__(cls, *args: int, **kwargs: int) -> "Limits":
        self = super().__new__(cls, *args, **kwargs)
        for name in ("max_str_len", "max_bin_len", "max_array_len", "max_map_len"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= 2**32 - 1:
                raise ValueError(f"Limits.{name} must be an int in [0, 2**32-1], got {value!r}")
        check_max_depth(self.max_depth, "Limits.max_depth")
        return self


def check_max_depth(value: object, name: str) -> None:
    """Raise ValueError unless ``value`` is an int in [1, DEPTH_CEILING]."""
    if type(value) is not int or not 1 <= value <= DEPTH_CEILING:
        raise ValueError(f"{name} must be an int in [1, {DEPTH_CEILING}], got {value!r}")


DEFAULT_LIMITS = Limits()
