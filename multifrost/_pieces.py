"""``Pieces``: a packed message kept as parts, so that large values go out without a copy."""
from __future__ import annotations

from typing import Union

#: A ``bytes`` value at least this long is referenced, not copied, by ``pack_message(..., gather=True)``.
GATHER_MIN = 64 * 1024
#: At most this many values are referenced per message (the rest are copied): the parts of one
#: message stay well within one ``sendmsg`` (``IOV_MAX`` is 1024 on Linux).
GATHER_MAX = 32


class Pieces:
    """The bytes of one packed message as ``parts`` (bytes objects; joined, they are the message).

    ``pack_message(..., gather=True)`` returns one instead of bytes when the message holds a
    ``bytes`` value of ``GATHER_MIN`` bytes or more: that value is a part of its own, the caller's
    object itself, so an end that writes with scatter-gather I/O (one that ``gathers``) moves
    it without the copy packing would make. ``len()`` is the message's size; ``bytes()`` joins it.
    """

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes], size: int) -> None:
        self.parts = parts
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def __repr__(self) -> str:
        return f"<Pieces of a {self.size}-byte message in {len(self.parts)} parts>"


#: What a send takes: a packed message, as bytes or as ``Pieces`` (ends that do not gather join them).
Payload = Union[bytes, Pieces]
