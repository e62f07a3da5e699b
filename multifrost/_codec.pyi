"""Type stub of the compiled codec (multifrost/_codec.pyx): the same API as _codec_fallback."""
from typing import Any, Callable

from ._limits import Limits

IMPLEMENTATION: str


def pack_message(message: dict[str, Any], *, max_depth: int | None = None, limits: Limits | None = None) -> bytes: ...


def unpack_message(data: bytes | bytearray | memoryview, limits: Limits | None = None) -> dict[str, Any]: ...


def bytes_to_fill(size: int) -> tuple[memoryview, Callable[[], bytes]]: ...
