"""msgpack codec of Multifrost messages: ``pack_message`` / ``unpack_message``; ``Pieces``, a
message packed with its large values left in place (``gather``); and ``bytes_to_fill``, the
memory a transport receives a large frame into.

The compiled ``multifrost._codec`` is used when it is importable; otherwise (or
with ``MULTIFROST_PUREPYTHON=1`` in the environment) the pure-Python twin
``multifrost._codec_fallback``. Both produce identical bytes and identical errors.
"""
from __future__ import annotations

import os

from ._limits import DEFAULT_LIMITS, Limits
from ._pieces import Payload, Pieces

if os.environ.get("MULTIFROST_PUREPYTHON") == "1":
    from ._codec_fallback import IMPLEMENTATION, bytes_to_fill, pack_message, unpack_message
else:
    try:
        from ._codec import IMPLEMENTATION, bytes_to_fill, pack_message, unpack_message
    except ImportError:
        from ._codec_fallback import IMPLEMENTATION, bytes_to_fill, pack_message, unpack_message  # type: ignore[assignment]

__all__ = ["DEFAULT_LIMITS", "IMPLEMENTATION", "Limits", "Payload", "Pieces", "bytes_to_fill", "pack_message", "unpack_message"]
