"""Type stub of the compiled codec (multifrost/_codec.pyx): the same API as _codec_fallback."""
from typing import Any, Callable

from ._codec_fallback import pack_message as pack_message  # the same overloads (gather=True may give Pieces)
from ._limits import Limits

IMPLEMENTATION: str


def unpack_message(data: bytes | bytearray | memoryview, limits: Limits | None = None) -> dict[str, Any]: ...


def bytes_to_fill(size: int) -> tuple[memoryview, Callable[[], bytes]]: ...
