"""The msgpack codec: wire rules, error paths, and the twin property (compiled == pure Python)."""
from __future__ import annotations

import collections
import datetime as dt
import enum
import math
import os
import struct
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multifrost import _codec_fallback, codec
from multifrost._limits import DEFAULT_LIMITS, Limits
from multifrost.errors import PayloadError, ProtocolError

try:
    from multifrost import _codec as compiled
except ImportError:
    compiled = None

IMPLEMENTATIONS = [
    pytest.param(
        compiled, id="cython", marks=pytest.mark.skipif(compiled is None, reason="multifrost._codec is not built")
    ),
    pytest.param(_codec_fallback, id="python"),
]
needs_both = pytest.mark.skipif(compiled is None, reason="multifrost._codec is not built")
UTC = dt.timezone.utc
PROPERTY = settings(derandomize=True, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    return request.param


def reference(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True, datetime=True)


def same(a: object, b: object) -> bool:
    """Equality that also compares types, so 1 == 1.0 == True does not pass."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(a[ka], b[kb]) for ka, kb in zip(a, b)
        )
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return a == b


def pack_error(impl, value, **kwargs) -> str:
    with pytest.raises(PayloadError) as info:
        impl.pack_message(value, **kwargs)
    return str(info.value)


def unpack_error(impl, data, limits=None) -> str:
    with pytest.raises(ProtocolError) as info:
        impl.unpack_message(data, limits)
    return str(info.value)


# ---------------------------------------------------------------- selection of the implementation


def test_purepython_env_selects_the_twin():
    env = dict(os.environ, MULTIFROST_PUREPYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", "from multifrost import codec; print(codec.IMPLEMENTATION)"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )
    assert out.stdout.strip() == "python"


def test_extension_is_built_when_required():
    if os.environ.get("MULTIFROST_REQUIRE_EXTENSION") != "1":
        pytest.skip("MULTIFROST_REQUIRE_EXTENSION is not set")
    assert compiled is not None, "multifrost._codec is not importable"
    forced = os.environ.get("MULTIFROST_PUREPYTHON") == "1"
    assert codec.IMPLEMENTATION == ("python" if forced else "cython")


def test_codec_exports_the_fixed_api():
    assert codec.IMPLEMENTATION in ("cython", "python")
    assert codec.IMPLEMENTATION == ("python" if os.environ.get("MULTIFROST_PUREPYTHON") == "1" or compiled is None else "cython")
    assert codec.DEFAULT_LIMITS == Limits(64 * 2**20, 64 * 2**20, 1_000_000, 1_000_000, 512)
    assert compiled is None or compiled.IMPLEMENTATION == "cython"
    assert _codec_fallback.IMPLEMENTATION == "python"


@given(size=st.integers(2, 300_000), cuts=st.lists(st.integers(0, 300_000), max_size=5))
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bytes_to_fill_gives_what_was_written_as_bytes(impl, size, cuts):
    data = os.urandom(size)
    view, done = impl.bytes_to_fill(size)
    assert len(view) == size and not view.readonly
    at = 0
    for cut in sorted(c for c in cuts if c < size) + [size]:  # filled piece by piece, as recv_into does
        view[at:cut] = data[at:cut]
        at = max(at, cut)
    view.release()
    other_view, other_done = impl.bytes_to_fill(size)
    other_view[:] = bytes(size)
    result = done()
    assert type(result) is bytes and result == data
    assert other_done() == bytes(size)  # a second one is memory of its own


@pytest.mark.parametrize("size", [-1, 0, 1])
def test_bytes_to_fill_refuses_sizes_below_two(impl, size):
    with pytest.raises(ValueError, match="size of 2 or more"):
        impl.bytes_to_fill(size)


# ---------------------------------------------------------------- encoding choices


INT_EDGES = [
    0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000, 2**63 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
]
LENGTHS = [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536]


@pytest.mark.parametrize("value", INT_EDGES)
def test_ints_use_the_smallest_encoding(impl, value):
    assert impl.pack_message({"v": value}) == reference({"v": value})


@pytest.mark.parametrize("n", LENGTHS)
def test_lengths_match_msgpack(impl, n):
    message = {
        "s": "x" * n, "u": "é" * n, "b": b"x" * n, "a": list(range(n)),
        "m": {str(i): i for i in range(n)}, "e": msgpack.ExtType(7, b"x" * n),
    }
    assert impl.pack_message(message) == reference(message)


def test_scalars(impl):
    message = {"n": None, "t": True, "f": False, "x": 1.5, "z": -0.0, "one": 1.0, "tiny": 5e-324}
    assert impl.pack_message(message) == reference(message)
    assert impl.pack_message({"t": True})[-1] == 0xC3  # a bool, not the int 1


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_become_nil(impl, value):
    assert impl.pack_message({"v": value}) == reference({"v": None})


def test_tuples_are_arrays_and_binaries_are_bin(impl):
    view = memoryview(b"abcdef")
    message = {"t": (1, (2, 3)), "b": b"ab", "ba": bytearray(b"ab"), "mv": view, "strided": view[::2]}
    expected = {"t": [1, [2, 3]], "b": b"ab", "ba": b"ab", "mv": b"abcdef", "strided": b"ace"}
    assert impl.pack_message(message) == reference(expected)
    assert impl.unpack_message(impl.pack_message(message)) == expected


class Color(enum.IntEnum):
    RED = 3


class Text(str):
    def __str__(self):
        return "not the data"


class Ratio(float):
    pass


class Items(list):
    def __iter__(self):
        raise AssertionError("the codec reads the list itself")


Pair = collections.namedtuple("Pair", "a b")


def test_subclasses_are_packed_as_their_base(impl):
    message = {
        "int": Color.RED, "str": Text("data"), "float": Ratio(0.5), "list": Items([1, 2]),
        "tuple": Pair(1, 2), "od": collections.OrderedDict(a=1), "dd": collections.defaultdict(int, b=2),
        Text("key"): 1,
    }
    plain = {"int": 3, "str": "data", "float": 0.5, "list": [1, 2], "tuple": [1, 2], "od": {"a": 1}, "dd": {"b": 2}, "key": 1}
    assert impl.pack_message(message) == reference(plain)
    assert impl.pack_message(collections.OrderedDict(a=1)) == reference({"a": 1})


def test_non_string_keys_become_their_str_form(impl):
    message = {1: "a", None: "b", 2.5: "c", b"k": "d", (1, 2): {3: 4}, False: 0}
    expected = {"1": "a", "None": "b", "2.5": "c", "b'k'": "d", "(1, 2)": {"3": 4}, "False": 0}
    assert impl.pack_message(message) == reference(expected)


@pytest.mark.parametrize(
    "value, head",
    [
        (dt.datetime(2020, 1, 1, tzinfo=UTC), b"\xd6\xff"),  # timestamp 32
        (dt.datetime(2020, 1, 1, 0, 0, 0, 5, tzinfo=UTC), b"\xd7\xff"),  # timestamp 64
        (dt.datetime(2400, 1, 1, tzinfo=UTC), b"\xd7\xff"),  # seconds beyond 32 bits
        (dt.datetime(1960, 1, 1, 0, 0, 0, 7, tzinfo=UTC), b"\xc7\x0c\xff"),  # timestamp 96
        (dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5))), b"\xc7\x0c\xff"),
        (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), b"\xc7\x0c\xff"),
    ],
)
def test_aware_datetimes_are_timestamps(impl, value, head):
    packed = impl.pack_message({"d": value})
    assert packed == reference({"d": value})
    assert packed[3:3 + len(head)] == head
    back = impl.unpack_message(packed)["d"]
    assert back == value and back.tzinfo is UTC


def test_ext_types_pass_through(impl):
    message = {"e": msgpack.ExtType(5, b"xyz"), "u": msgpack.ExtType(0, b"")}
    assert impl.pack_message(message) == reference(message)
    assert impl.unpack_message(impl.pack_message(message)) == {"e": msgpack.ExtType(5, b"xyz"), "u": None}


def test_large_values_grow_the_buffer(impl):
    message = {"blob": os.urandom(3 * 2**20 + 7), "floats": [0.25] * 20_000, "tail": "end"}
    packed = impl.pack_message(message)
    assert packed == reference(message)
    assert impl.unpack_message(packed) == message


# ---------------------------------------------------------------- pack errors


class Opaque:
    pass


class NoOffset(dt.tzinfo):
    def utcoffset(self, when):
        return None


@pytest.mark.parametrize(
    "message, text",
    [
        ({"args": [1, {"rows": [0, 1, 2, {4}]}]}, "cannot send set at args[1]['rows'][3]: unsupported type"),
        ({"a": Opaque()}, "cannot send Opaque at a: unsupported type"),
        ({"a": {7: [object()]}}, "cannot send object at a[7][0]: unsupported type"),
        ({"a": dt.date(2020, 1, 1)}, "cannot send date at a: unsupported type"),
        ({"a": 2**63}, "cannot send int at a: out of the signed 64-bit range [-2**63, 2**63-1]"),
        ({"a": [-(2**63) - 1]}, "cannot send int at a[0]: out of the signed 64-bit range [-2**63, 2**63-1]"),
        ({"a": ["ok", "x\ud800"]}, "cannot send str at a[1]: not encodable as UTF-8 (surrogates not allowed at index 1)"),
        (
            {"a": {"\udfff": 1}},
            "cannot send dict at a: key '\\udfff' is not encodable as UTF-8 (surrogates not allowed at index 0)",
        ),
        ({"a": {1: "x", "1": "y"}}, "cannot send dict at a: keys 1 and '1' both become '1' on the wire"),
        ({"1": 0, 1: 0}, "cannot send dict at top level: keys '1' and 1 both become '1' on the wire"),
        (
            {"when": dt.datetime(2020, 1, 1)},
            "cannot send datetime at when: the datetime is naive; attach a tzinfo (e.g. datetime.timezone.utc)",
        ),
        (
            {"when": [dt.datetime(2020, 1, 1, tzinfo=NoOffset())]},
            "cannot send datetime at when[0]: the datetime is naive; attach a tzinfo (e.g. datetime.timezone.utc)",
        ),
        ({5: {"k": {1, 2}}}, "cannot send set at 5['k']: unsupported type"),
    ],
)
def test_unsendable_values_name_path_and_type(impl, message, text):
    assert pack_error(impl, message) == text


def test_cycles_are_reported_as_cycles(impl):
    loop = [1]
    loop.append(loop)
    assert pack_error(impl, {"x": {"y": loop}}) == "cannot send list at x['y'][1]: cycle: the value contains itself"
    mapping = {}
    mapping["self"] = (mapping,)
    assert pack_error(impl, {"m": mapping}) == "cannot send dict at m['self'][0]: cycle: the value contains itself"
    top = {}
    top["again"] = top
    assert pack_error(impl, top) == "cannot send dict at again: cycle: the value contains itself"


def test_depth_limit(impl):
    nested = {"a": [[["leaf"]]]}  # four containers deep
    assert impl.pack_message(nested, max_depth=4) == reference(nested)
    assert pack_error(impl, nested, max_depth=3) == "cannot send list at a[0][0]: nesting deeper than max_depth=3"
    deep: list = []
    for _ in range(600):
        deep = [deep]
    text = pack_error(impl, {"d": deep})
    assert text.startswith("cannot send list at d[0][0]") and text.endswith(": nesting deeper than max_depth=512")
    shared = [1]
    assert impl.pack_message({"a": [shared, shared]}) == reference({"a": [[1], [1]]})  # repeated, not a cycle


@pytest.mark.parametrize("value", [[1], "x", None, (("a", 1),)])
def test_top_level_must_be_a_dict(impl, value):
    assert pack_error(impl, value) == f"a message must be a dict, not {type(value).__name__}"


@pytest.mark.parametrize("depth", [0, -1, 10_001, 1.5, "3"])
def test_max_depth_is_checked(impl, depth):
    with pytest.raises(ValueError, match="max_depth must be an int"):
        impl.pack_message({}, max_depth=depth)


def test_buffer_is_released_after_an_error(impl):
    with pytest.raises(PayloadError):
        impl.pack_message({"blob": b"x" * 100_000, "bad": {1}})
    assert impl.pack_message({"ok": 1}) == reference({"ok": 1})


def test_reentrant_pack_from_a_key_str(impl):
    class Key:
        def __str__(self):
            return impl.pack_message({"inner": [1, 2, 3]}).hex()

    inner = reference({"inner": [1, 2, 3]}).hex()
    assert impl.pack_message({Key(): "v", "w": "x" * 100}) == reference({inner: "v", "w": "x" * 100})


# ---------------------------------------------------------------- unpack


def test_unpack_basic_types(impl):
    message = {"n": None, "b": [True, False], "i": [0, -1, 2**64 - 1, -(2**63)], "s": "é", "bin": b"\x00", "f": 0.5}
    assert same(impl.unpack_message(reference(message)), message)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_unpack_accepts_bytes_like(impl, kind):
    assert impl.unpack_message(kind(reference({"a": 1}))) == {"a": 1}


def test_unpack_strided_memoryview(impl):
    data = reference({"a": 1})
    doubled = bytes(b for byte in data for b in (byte, 0))
    assert impl.unpack_message(memoryview(doubled)[::2]) == {"a": 1}


def test_unpack_rejects_non_bytes(impl):
    with pytest.raises(TypeError, match="needs bytes, bytearray or memoryview, not str"):
        impl.unpack_message("text")


@pytest.mark.parametrize(
    "payload",
    [b"\xca" + struct.pack(">f", v) for v in (math.nan, math.inf, -math.inf)]
    + [b"\xcb" + struct.pack(">d", v) for v in (math.nan, math.inf, -math.inf)],
)
def test_non_finite_floats_read_as_none(impl, payload):
    assert same(impl.unpack_message(b"\x81\xa1v" + payload), {"v": None})


def test_float32_is_read(impl):
    assert same(impl.unpack_message(b"\x81\xa1v\xca" + struct.pack(">f", 1.5)), {"v": 1.5})


def test_non_string_keys_are_read(impl):
    data = b"\x83\x01\xa1a\xc4\x01k\xa1b\xc0\xa1c"
    assert same(impl.unpack_message(data), {1: "a", b"k": "b", None: "c"})


@pytest.mark.parametrize("key, name", [(b"\x90", "list"), (b"\x80", "dict")])
def test_unhashable_keys_are_protocol_errors(impl, key, name):
    assert unpack_error(impl, b"\x81" + key + b"\xc0") == f"unhashable map key of type {name} at offset 1"


def test_ext_values(impl):
    # JavaScript undefined: msgpackr sends ext 0 with one zero byte, other encoders with none
    assert same(impl.unpack_message(b"\x81\xa1u\xd4\x00\x00"), {"u": None})
    assert same(impl.unpack_message(b"\x81\xa1u\xc7\x00\x00"), {"u": None})
    assert same(impl.unpack_message(b"\x81\xa1x\xc7\x02\x11ab"), {"x": msgpack.ExtType(17, b"ab")})
    assert unpack_error(impl, b"\x81\xa1x\xd4\xfe\x00") == "reserved ext type -2 is not supported"


@pytest.mark.parametrize(
    "ext, text",
    [
        (b"\xd5\xff\x00\x00", "invalid timestamp: ext -1 with 2 bytes of data (needs 4, 8 or 12)"),
        (b"\xd7\xff" + struct.pack(">Q", 1_000_000_000 << 34), "invalid timestamp: nanoseconds 1000000000 > 999999999"),
        (b"\xc7\x0c\xff" + struct.pack(">Iq", 0, 2**62), f"timestamp {2**62} s is outside the datetime range"),
    ],
)
def test_bad_timestamps(impl, ext, text):
    assert unpack_error(impl, b"\x81\xa1t" + ext) == text


def test_timestamp_forms_read_as_utc(impl):
    assert impl.unpack_message(b"\x81\xa1t\xd6\xff" + struct.pack(">I", 1)) == {
        "t": dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    }
    packed64 = struct.pack(">Q", (1500 << 34) | 2)
    assert impl.unpack_message(b"\x81\xa1t\xd7\xff" + packed64)["t"] == dt.datetime(1970, 1, 1, 0, 0, 2, 1, tzinfo=UTC)
    back = impl.unpack_message(b"\x81\xa1t\xc7\x0c\xff" + struct.pack(">Iq", 0, -1))["t"]
    assert back == dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC) and back.tzinfo is UTC


@pytest.mark.parametrize(
    "data, text",
    [
        (b"", "empty message"),
        (b"\x91\x01", "a message must be a msgpack map; it starts with byte 0x91"),
        (b"\x01", "a message must be a msgpack map; it starts with byte 0x01"),
        (b"\x80\x00", "1 trailing bytes after the message at offset 1"),
        (b"\x81\xa1a", "truncated message: data ends inside the value at offset 3"),
        (b"\x81\xa1a\xcd\x01", "truncated message: data ends inside the value at offset 4"),
        (b"\x81\xa3ab", "truncated message: data ends inside the value at offset 2"),
        (b"\x81\xa1a\xc1", "invalid msgpack byte 0xc1 at offset 3"),
        (b"\x81\xa1a\xa1\xff", "invalid UTF-8 in the str at offset 3"),
        (b"\x81\xa1a\xa2\xed\xa0", "invalid UTF-8 in the str at offset 3"),  # an encoded surrogate
        (b"\x81\xa1a\xdd\xff\xff\xff\xff", "array of length 4294967295 at offset 3 exceeds max_array_len=1000000"),
        (b"\x81\xa1a\xdd\x00\x0f\x00\x00", "truncated message: data ends inside the value at offset 8"),
        (b"\xdf\x00\x0f\x00\x00", "truncated message: data ends inside the value at offset 5"),
    ],
)
def test_malformed_input(impl, data, text):
    assert unpack_error(impl, data) == text


@pytest.mark.parametrize(
    "limits, message, text",
    [
        (Limits(max_str_len=3), {"abcd": 1}, "str of length 4 at offset 1 exceeds max_str_len=3"),
        (Limits(max_bin_len=3), {"a": b"abcd"}, "bin of length 4 at offset 3 exceeds max_bin_len=3"),
        (Limits(max_bin_len=3), {"a": msgpack.ExtType(1, b"abcd")}, "ext of length 4 at offset 3 exceeds max_bin_len=3"),
        (Limits(max_array_len=2), {"a": [1, 2, 3]}, "array of length 3 at offset 3 exceeds max_array_len=2"),
        (Limits(max_map_len=2), {"a": 1, "b": 2, "c": 3}, "map of length 3 at offset 0 exceeds max_map_len=2"),
        (Limits(max_depth=2), {"a": [[1]]}, "nesting deeper than max_depth=2 at offset 4"),
        (Limits(max_depth=1), {"a": {}}, "nesting deeper than max_depth=1 at offset 3"),
    ],
)
def test_limits_name_the_limit(impl, limits, message, text):
    data = reference(message)
    assert unpack_error(impl, data, limits) == text
    assert impl.unpack_message(data) == message


def test_limits_at_the_edge_pass(impl):
    limits = Limits(max_str_len=4, max_bin_len=4, max_array_len=3, max_map_len=3, max_depth=3)
    message = {"abcd": [1, 2, b"abcd"], "x": {}}
    assert impl.unpack_message(reference(message), limits) == message


def test_default_depth_limit(impl):
    ok = b"\x81\xa1a" + b"\x91" * 511 + b"\xc0"  # 511 arrays in a map: depth 512
    assert impl.unpack_message(ok) is not None
    too_deep = b"\x81\xa1a" + b"\x91" * 512 + b"\xc0"
    assert unpack_error(impl, too_deep) == "nesting deeper than max_depth=512 at offset 514"


def test_limits_are_validated():
    assert DEFAULT_LIMITS == Limits()
    with pytest.raises(ValueError, match="max_array_len"):
        Limits(max_array_len=-1)
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=0)
    with pytest.raises(Exception):
        DEFAULT_LIMITS.max_depth = 3  # frozen


def test_interop_with_msgpack_unpackb(impl):
    message = {"app": "comlink_ipc_v4", "args": [1, "two", b"3", [4.5]], "when": dt.datetime(2021, 5, 6, tzinfo=UTC)}
    packed = impl.pack_message(message)
    assert msgpack.unpackb(packed, timestamp=3) == message


# ---------------------------------------------------------------- properties over both twins

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
clean_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
aware = st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=offsets)
int64 = st.integers(-(2**63), 2**63 - 1)
clean_scalars = (
    st.none() | st.booleans() | int64 | st.integers(-300, 300) | finite_floats | clean_text | st.binary(max_size=40)
    | aware | st.builds(msgpack.ExtType, st.integers(1, 127), st.binary(max_size=20))
)
clean_values = st.recursive(
    clean_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.tuples(inner, inner) | st.dictionaries(clean_text, inner, max_size=6),
    max_leaves=30,
)
clean_messages = st.dictionaries(clean_text, clean_values, max_size=6)


class Weird:
    def __repr__(self):
        return "Weird()"


messy_scalars = (
    clean_scalars
    | st.sampled_from([math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, 2**64, -(2**70), -0.0, True, False])
    | st.integers()
    | st.text(max_size=10)  # may hold lone surrogates
    | st.binary(max_size=10).map(bytearray)
    | st.binary(max_size=10).map(memoryview)
    | st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31))  # naive
    | st.sampled_from([{1, 2}, frozenset(), Weird(), dt.date(2020, 1, 1), 1j, msgpack.ExtType(0, b"")])
)
messy_keys = clean_text | st.text(max_size=3) | st.integers(-5, 5) | st.sampled_from([None, True, 1.5, b"k", (1, 2)])
messy_values = st.recursive(
    messy_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.dictionaries(messy_keys, inner, max_size=5),
    max_leaves=25,
)
messy_messages = st.dictionaries(messy_keys, messy_values, max_size=5)


class Unsendable(Exception):
    pass


def expected(value: object) -> object:
    """What the receiver should get for ``value``, written independently of the codec."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise Unsendable
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Unsendable from None
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, msgpack.ExtType):
        return None if value.code == 0 and not value.data else value
    if isinstance(value, (list, tuple)):
        return [expected(item) for item in value]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            text = str.__str__(key) if isinstance(key, str) else str(key)
            if text in result:
                raise Unsendable
            result[expected(text)] = expected(item)
        return result
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            raise Unsendable
        return value.astimezone(UTC)
    raise Unsendable


def outcome(function, *args):
    """The value, or (exception type, message): what the twins must agree on."""
    try:
        return ("ok", function(*args))
    except (PayloadError, ProtocolError) as exc:
        return (type(exc), str(exc))


@needs_both
@PROPERTY
@given(clean_messages)
def test_clean_data_packs_like_msgpack(message):
    assert compiled.pack_message(message) == reference(message)
    assert _codec_fallback.pack_message(message) == reference(message)


@needs_both
@PROPERTY
@given(messy_messages)
def test_twins_pack_identically(message):
    assert outcome(compiled.pack_message, message) == outcome(_codec_fallback.pack_message, message)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@PROPERTY
@given(message=messy_messages)
def test_round_trip_gives_the_sanitized_value(implementation, message):
    try:
        want = expected(message)
    except Unsendable:
        with pytest.raises(PayloadError):
            implementation.pack_message(message)
        return
    assert same(implementation.unpack_message(implementation.pack_message(message)), want)


def assert_twins_unpack_alike(data: bytes) -> None:
    results = []
    for implementation in (compiled, _codec_fallback):
        try:
            results.append(("ok", implementation.unpack_message(data)))
        except ProtocolError as exc:
            results.append(("error", str(exc)))
    assert results[0][0] == results[1][0]
    if results[0][0] == "ok":
        assert same(results[0][1], results[1][1])
    else:
        assert results[0] == results[1]


@needs_both
@PROPERTY
@given(st.binary(max_size=64))
def test_twins_unpack_arbitrary_bytes_alike(data):
    assert_twins_unpack_alike(data)
    assert_twins_unpack_alike(b"\x82" + data)


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]), st.integers(0, 10**6), st.integers(0, 255)),
    min_size=1, max_size=4,
)


@needs_both
@PROPERTY
@given(clean_messages, mutations)
def test_twins_unpack_mutated_messages_alike(message, edits):
    data = bytearray(reference(message))
    for kind, where, byte in edits:
        where %= len(data) + 1
        if kind == "flip" and where < len(data):
            data[where] = byte
        elif kind == "insert":
            data.insert(where, byte)
        elif kind == "delete" and where < len(data):
            del data[where]
        elif kind == "truncate":
            del data[where:]
    assert_twins_unpack_alike(bytes(data))


# ---------------------------------------------------------------- the compiled codec's shortcuts
#
# The compiled unpack keeps recent short ASCII strings in a cache and packs short strs,
# one-digit ints and floats in lists by shortcuts: none of it may change a result.

# Strings around the cache's edges: the protocol's keys and values, lengths 0 and 31..33
# (the longest cached is 32), near twins differing in one byte anywhere, non-ASCII, NULs.
CACHE_LIKE = [
    "", "a", "id", "app", "type", "args", "function", "namespace", "comlink_ipc_v4", "call", "default",
    "ie", "apq", "bpp", "comlink_ipc_v5", "domlink_ipc_v4", "comlinkXipc_v4", "functiom",
    "x" * 31, "x" * 32, "x" * 33, "x" * 31 + "y", "y" + "x" * 31, "x" * 15 + "y" + "x" * 16, "é", "idé", "é" * 16,
    "a\x00b", "\x00", "0123456", "01234567", "012345678", "0123456X", "X1234567", "0123X5678",
]
cache_texts = st.sampled_from(CACHE_LIKE) | st.text(st.sampled_from("ab\x00é"), max_size=34)
hashable_keys = (
    cache_texts | st.integers(-3, 3) | st.none() | st.booleans() | st.binary(max_size=3) | st.sampled_from([0.5, math.nan, -0.0])
)
wire_keys = hashable_keys | st.tuples(st.integers(0, 2))  # a tuple goes as an array: unhashable on the way back


def wire_values(keys):
    return st.recursive(
        cache_texts | st.integers(-300, 300) | st.none() | st.booleans() | finite_floats | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )


wire_messages = st.dictionaries(wire_keys, wire_values(wire_keys), max_size=6)


def interned_keys(value: object) -> bool:
    """Every str map key in ``value`` is the interned copy of itself."""
    if isinstance(value, list):
        return all(interned_keys(item) for item in value)
    if isinstance(value, dict):
        return all((type(k) is not str or k is sys.intern(k)) and interned_keys(v) for k, v in value.items())
    return True


@needs_both
@PROPERTY
@given(st.lists(wire_messages, min_size=1, max_size=4))
def test_string_cache_never_changes_results(messages):
    # decoded one after the other, so each message meets the cache the previous ones left
    for message in messages:
        data = msgpack.packb(message, use_bin_type=True)
        assert_twins_unpack_alike(data)
        try:
            decoded = compiled.unpack_message(data)
        except ProtocolError:
            continue  # an unhashable key; both twins said the same
        assert interned_keys(decoded)
        assert same(compiled.unpack_message(memoryview(bytearray(data))), decoded)


@needs_both
@PROPERTY
@given(st.lists(st.dictionaries(cache_texts, cache_texts | st.lists(cache_texts, max_size=3), max_size=5),
                min_size=1, max_size=4))
def test_string_cache_round_trip(messages):
    for message in messages:
        packed = compiled.pack_message(message)
        assert packed == _codec_fallback.pack_message(message) == reference(message)
        assert same(compiled.unpack_message(packed), message)


def sizes(value: object, depth: int = 1) -> dict[str, int]:
    """The largest str (UTF-8 bytes), bin, array and map in ``value`` and its nesting depth."""
    found = {"max_str_len": 0, "max_bin_len": 0, "max_array_len": 0, "max_map_len": 0, "max_depth": 1}

    def walk(item: object, level: int) -> None:
        if isinstance(item, str):
            found["max_str_len"] = max(found["max_str_len"], len(item.encode()))
        elif isinstance(item, bytes):
            found["max_bin_len"] = max(found["max_bin_len"], len(item))
        elif isinstance(item, (list, tuple)):
            found["max_array_len"] = max(found["max_array_len"], len(item))
            found["max_depth"] = max(found["max_depth"], level)
            for inner in item:
                walk(inner, level + 1)
        elif isinstance(item, dict):
            found["max_map_len"] = max(found["max_map_len"], len(item))
            found["max_depth"] = max(found["max_depth"], level)
            for key, inner in item.items():
                walk(key, level + 1)
                walk(inner, level + 1)

    walk(value, depth)
    return found


@needs_both
@PROPERTY
@given(st.dictionaries(hashable_keys, wire_values(hashable_keys), min_size=1, max_size=5), st.sampled_from(sorted(sizes({}))))
def test_limits_exactly_at_the_edge(message, name):
    data = msgpack.packb(message, use_bin_type=True)
    compiled.unpack_message(data)  # its short strings are in the cache now
    edge = sizes(message)[name]
    at_edge = Limits(**{name: edge})
    for limits in (at_edge, Limits(**{name: edge - 1})) if edge > (1 if name == "max_depth" else 0) else (at_edge,):
        results = [outcome(impl.unpack_message, data, limits) for impl in (compiled, _codec_fallback)]
        assert results[0][0] == results[1][0]
        assert same(results[0][1], results[1][1]) if results[0][0] == "ok" else results[0] == results[1]
        assert (results[0][0] == "ok") == (limits is at_edge), (limits, results[0])


@pytest.mark.parametrize("shift", [0, 1, 7, 31])
def test_short_strs_across_the_scratch_edge(impl, shift):
    # ~100 KiB of strs of every short length: the scratch area (64 KiB) runs out mid-way
    texts = ["p" * shift] + ["abcdefghijklmnopqrstuvwxyz0123456789é"[: i % 38] for i in range(5000)]
    message = {"s": texts, "k": {t: i for i, t in enumerate(texts[:40])}}
    packed = impl.pack_message(message)
    assert packed == reference(message)
    assert same(impl.unpack_message(packed), message)


@pytest.mark.parametrize("edge", [2**15, 2**30, 2**31, 2**32, 2**60, 2**62])
def test_ints_around_internal_digit_sizes(impl, edge):
    values = [edge - 1, edge, edge + 1, -edge + 1, -edge, -edge - 1, True, False, Color.RED]
    message = {"v": values}
    assert impl.pack_message(message) == reference({"v": [int(v) if type(v) is not bool else v for v in values]})


def test_lists_of_floats(impl):
    values = [0.5, math.nan, -math.inf, math.inf, 1e308, -0.0, 5e-324, Ratio(0.25), 7, None]
    packed = impl.pack_message({"f": values, "t": tuple(values)})
    clean = [(float(v) if math.isfinite(v) else None) if isinstance(v, float) else v for v in values]
    assert packed == reference({"f": clean, "t": clean})
    assert same(impl.unpack_message(packed), {"f": clean, "t": clean})


class Clearing(dt.tzinfo):
    """A tzinfo whose utcoffset() empties a container: code that runs in the middle of a pack."""

    def __init__(self, target):
        self.target = target

    def utcoffset(self, when):
        self.target.clear()
        return dt.timedelta(0)


@pytest.mark.parametrize("where", ["list", "dict", "list end", "dict end"])
def test_containers_emptied_while_packing(where):
    # the codec must not read freed items, and both twins must fail alike
    results = []
    for implementation in [m for m in (compiled, _codec_fallback) if m is not None]:
        target: list | dict = [0] if where.startswith("list") else {"a": 0}
        clearing = dt.datetime(2020, 1, 1, tzinfo=Clearing(target))
        if isinstance(target, list):
            target += [clearing] if where == "list end" else [clearing, [1, 2]]
            message = {"x": {"y": target}}
        else:
            target.update({"w": clearing} if where == "dict end" else {"w": clearing, "z": [1, 2]})
            message = {"x": [target]}
        del clearing  # the container holds the only reference
        try:
            results.append(("ok", implementation.pack_message(message)))
        except RuntimeError as exc:
            results.append(("error", str(exc)))
    assert results[0][0] == ("ok" if where == "list end" else "error"), results
    assert len(set(results)) == 1, results


# ---------------------------------------------------------------- the receiver's limits, checked by the sender

small_limits = st.builds(Limits, max_str_len=st.integers(0, 40), max_bin_len=st.integers(0, 40),
                         max_array_len=st.integers(0, 6), max_map_len=st.integers(1, 6),
                         max_depth=st.integers(1, 6))


@needs_both
@PROPERTY
@given(message=clean_messages, limits=small_limits)
def test_the_sender_refuses_exactly_what_the_receiver_would(message, limits):
    """Both twins pack under ``limits`` identically (bytes or error), and a message packs if
    and only if the receiver, decoding it with the same limits, accepts it."""
    outcomes = []
    for twin in (compiled, _codec_fallback):
        try:
            outcomes.append(twin.pack_message(message, limits=limits))
        except PayloadError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
    wire = reference(message)
    try:
        _codec_fallback.unpack_message(wire, limits)
        accepted = True
    except ProtocolError:
        accepted = False
    assert isinstance(outcomes[0], bytes) == accepted, (outcomes[0], limits)
    if accepted:
        assert outcomes[0] == wire
