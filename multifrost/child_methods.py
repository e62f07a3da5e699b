"""Which methods of a worker a parent may call, and how an outcome becomes a reply payload."""
from __future__ import annotations

import traceback
from functools import partial
from types import FunctionType, MethodType
from typing import Any, Callable

from . import protocol
from .codec import Limits, Payload, pack_message
from .errors import PayloadError
from .transports import DEFAULT_MAX_MESSAGE_SIZE


class Gone(Exception):
    """The function cannot be called; the message is the wire error text."""


def resolve(worker: object, base: type, cache: dict, name: Any) -> tuple[Callable, bool]:
    """The bound method for ``name`` and whether it is async, or Gone with the wire error text.

    Only what subclasses of ``base`` define is callable, never ``base``'s own methods.
    """
    found = cache.get(name) if isinstance(name, str) else None
    if found is not None:
        return found
    if not isinstance(name, str):
        raise Gone(f"Function {name!r} not found")
    if name.startswith("_"):
        raise Gone(f"Cannot call private method '{name}'")
    defined = name in vars(worker) or any(
        name in vars(cls) for cls in type(worker).__mro__ if cls is not base and cls is not object)
    if not defined:
        raise Gone(f"Function '{name}' not found")
    fn = getattr(worker, name)
    if not callable(fn):
        raise Gone(f"'{name}' is not callable")
    found = cache[name] = (fn, bool(code_flags(fn) & CO_COROUTINE))
    return found


# Code flags (``inspect.CO_*``): the start of every worker asks them, and importing ``inspect``
# (ast, dis, tokenize) would cost a spawned worker ~5 ms. tests/test_child_methods.py checks
# that ``code_flags`` answers as ``inspect.iscoroutinefunction`` and its siblings do.
CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200


def code_flags(fn: object) -> int:
    """The code flags of the function behind ``fn``: bound methods and partials are unwrapped
    (as ``inspect`` does), and staticmethod/classmethod objects as found in a class; 0 for
    anything that is not a Python function underneath."""
    while True:
        if isinstance(fn, partial):
            fn = fn.func
        elif isinstance(fn, (MethodType, staticmethod, classmethod)):
            fn = fn.__func__
        else:
            return fn.__code__.co_flags if isinstance(fn, FunctionType) else 0


_PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})  # results that are never awaitable


def needs_asyncio(worker: object, base: type) -> bool:
    """Whether serving ``worker`` needs asyncio: what its class (below ``base``) or the instance
    defines includes an ``async def`` or async generator function, public or private."""
    found = [vars(cls).values() for cls in type(worker).__mro__ if cls is not base and cls is not object]
    for values in found + [vars(worker).values()]:
        for value in values:
            if code_flags(value) & (CO_COROUTINE | CO_ASYNC_GENERATOR):
                return True
    return False


def awaitable(value: Any) -> bool:
    """``inspect.isawaitable``, answered at once for the plain types most methods return
    (the ABC check it ends in costs five times as much)."""
    if type(value) in _PLAIN:
        return False
    import inspect  # loaded by the first call that returns another type, not at start-up
    return inspect.isawaitable(value)


def result_payload(limits: Limits | None, msg_id: str, fn: Callable, result: Any, gather: bool = False) -> Payload:
    """The RESPONSE carrying ``result``, or an ERROR saying why it cannot be sent; ``gather``: the
    end takes ``Pieces`` (a large bytes result goes out uncopied)."""
    try:
        return protocol.check_size(pack_message(protocol.response(msg_id, result), limits=limits, gather=gather),
                                   DEFAULT_MAX_MESSAGE_SIZE)
    except PayloadError as exc:
        name = getattr(fn, "__name__", "function")
        return pack_message(protocol.error(msg_id, f"PayloadError: result of '{name}' cannot be sent: {exc}"))


def error_payload(msg_id: str, exc: BaseException) -> bytes:
    """The ERROR for a method that raised: type and message, then the traceback."""
    text = f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
    return pack_message(protocol.error(msg_id, text))
