"""Type stub of the compiled codec (multifrost/_codec.pyx): the same API as _codec_fallback."""
from typing import Any, Callable, Literal, overload

from ._limits import Limits
from ._pieces import Pieces

IMPLEMENTATION: str


@overload
def pack_message(message: dict[str, Any], *, max_depth: int | None = None, limits: Limits | None = None,
                 gather: Literal[False] = False) -> bytes: ...
@overload
def pack_message(message: dict[str, Any], *, max_depth: int | None = None, limits: Limits | None = None,
                 gather: bool) -> bytes | Pieces: ...


def unpack_message(data: bytes | bytearray | memoryview, limits: Limits | None = None) -> dict[str, Any]: ...


def bytes_to_fill(size: int) -> tuple[memoryview, Callable[[], bytes]]: ...
