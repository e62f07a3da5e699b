"""child_methods.code_flags answers as inspect's iscoroutinefunction / isasyncgenfunction /
isgeneratorfunction do (a worker's start-up asks it without importing inspect)."""
from __future__ import annotations

import functools
import inspect
from types import MethodType

from hypothesis import given, strategies as st

from multifrost.child_methods import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR, code_flags


def plain(a, b=0):
    return a


async def coroutine(a, b=0):
    return a


def generator(a, b=0):
    yield a


async def async_generator(a, b=0):
    yield a


class Callable:
    def __call__(self, a, b=0):
        return a


class Holder:
    pass


BASES = [plain, coroutine, generator, async_generator, lambda a, b=0: a, len, print, Callable(), Callable, 3, None]


WRAPS = [
    lambda fn: MethodType(fn, Holder()),  # a bound method, as getattr(worker, name) gives
    lambda fn: classmethod(fn).__get__(None, Holder),
    lambda fn: functools.partial(fn, 1),
]


@st.composite
def callables(draw):
    fn = draw(st.sampled_from(BASES))
    # Two layers at most: the shapes a worker's methods take (inspect stops seeing through a
    # partial inside a method inside a partial, which no worker defines).
    for wrap in draw(st.lists(st.sampled_from(WRAPS), max_size=2)):
        if callable(fn):
            fn = wrap(fn)
    return fn


@given(callables())
def test_code_flags_answer_as_inspect_does(fn):
    flags = code_flags(fn)
    assert bool(flags & CO_COROUTINE) == inspect.iscoroutinefunction(fn)
    assert bool(flags & CO_ASYNC_GENERATOR) == inspect.isasyncgenfunction(fn)
    assert bool(flags & CO_GENERATOR) == inspect.isgeneratorfunction(fn)


@given(st.sampled_from([plain, coroutine, generator, async_generator]), st.sampled_from([staticmethod, classmethod]))
def test_a_staticmethod_or_classmethod_object_is_unwrapped(fn, kind):
    """As found in a class's ``vars()`` (what needs_asyncio looks through)."""
    assert code_flags(kind(fn)) == fn.__code__.co_flags


def test_the_constants_are_inspects():
    assert (CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR) == (
        inspect.CO_GENERATOR, inspect.CO_COROUTINE, inspect.CO_ASYNC_GENERATOR)
