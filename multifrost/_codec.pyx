# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled codec: the fast twin of ``multifrost._codec_fallback``.

It writes msgpack straight into a C buffer (a reused scratch area, moved into a
bytes object only when the message outgrows it) and reads with typed pointer
arithmetic. Errors and their messages come from the pure-Python module's
helpers, so both twins fail the same way.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport PyDateTime_Check, import_datetime
from cpython.dict cimport PyDict_CheckExact, PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact, PyFloat_FromDouble
from cpython.list cimport PyList_CheckExact, PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_CheckExact, PyLong_FromLong, PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_CheckExact
from libc.math cimport isfinite
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from msgpack import ExtType

from ._codec_fallback import (
    Unsendable,
    check_data,
    check_key_collisions,
    ext_bytes,
    ext_value,
    key_string,
    over_limit,
    payload_error,
    timestamp_ext,
    too_long,
    truncated,
    utf8_detail,
)
from ._limits import DEFAULT_LIMITS, check_max_depth
from .errors import PayloadError, ProtocolError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object value, int* overflow) except? -1
    int _PyBytes_Resize(PyObject** data, Py_ssize_t size) except -1
    void PyUnicode_InternInPlace(PyObject** text)
    object PyUnicode_DecodeUTF8(const char* data, Py_ssize_t size, const char* errors)
    bint PyLong_Check(object value)
    bint PyFloat_Check(object value)
    bint PyUnicode_Check(object value)
    bint PyList_Check(object value)
    bint PyTuple_Check(object value)
    bint PyDict_Check(object value)

import_datetime()

IMPLEMENTATION = "cython"

cdef enum:
    SCRATCH_SIZE = 65536

cdef Py_ssize_t LEN32_MAX = 0xFFFFFFFF

cdef char _scratch[SCRATCH_SIZE]
cdef bint _scratch_busy = False


# ---------------------------------------------------------------- output buffer


cdef struct Buf:
    char* data         # the scratch area, the shared large buffer, or a private one
    Py_ssize_t len
    Py_ssize_t cap
    bint shared        # this message may use the scratch and the shared large buffer
    bint private       # data was malloc'd for this message alone (freed at the end)


# Messages that outgrow the scratch are built in one large buffer that is kept between
# messages (up to _LARGE_KEEP bytes), then copied once into an exactly sized bytes object.
# Growing a bytes object and shrinking it at the end instead made glibc hand out fresh
# mmap'd memory for every large message: a page fault per 4 KiB, ten times the copy's cost.
cdef char* _large = NULL
cdef Py_ssize_t _large_cap = 0
cdef Py_ssize_t _LARGE_KEEP = 16 * 1024 * 1024


cdef int _grow(Buf* b, Py_ssize_t need) except -1:
    global _large, _large_cap
    cdef Py_ssize_t cap = b.cap * 2
    cdef Py_ssize_t wanted = (b.len + need) + (b.len + need) // 4
    cdef char* fresh
    if cap < wanted:
        cap = wanted
    if cap < 1024:
        cap = 1024
    if b.shared and (b.data == _scratch or b.data == NULL):  # leaving the scratch
        if _large_cap < cap:
            PyMem_RawFree(_large)
            _large = <char*>PyMem_RawMalloc(cap)
            _large_cap = cap if _large != NULL else 0
            if _large == NULL:
                raise MemoryError()
        if b.len:
            memcpy(_large, b.data, b.len)
        b.data = _large
        b.cap = _large_cap
        return 0
    if b.shared:  # growing the shared large buffer
        fresh = <char*>PyMem_RawRealloc(_large, cap)
        if fresh == NULL:
            raise MemoryError()
        _large = b.data = fresh
        _large_cap = b.cap = cap
        return 0
    fresh = <char*>PyMem_RawRealloc(b.data if b.private else NULL, cap)
    if fresh == NULL:
        raise MemoryError()
    b.data = fresh
    b.private = True
    b.cap = cap
    return 0


cdef inline int _put(Buf* b, const char* src, Py_ssize_t n) except -1:
    if b.len + n > b.cap:
        _grow(b, n)
    memcpy(b.data + b.len, src, n)
    b.len += n
    return 0


cdef inline int _put1(Buf* b, uint8_t c) except -1:
    if b.len + 1 > b.cap:
        _grow(b, 1)
    b.data[b.len] = <char>c
    b.len += 1
    return 0


cdef inline int _put_be(Buf* b, uint8_t head, uint64_t v, int size) except -1:
    """Write ``head`` then the low ``size`` bytes of ``v``, big-endian."""
    cdef int i
    cdef char* p
    if b.len + 1 + size > b.cap:
        _grow(b, 1 + size)
    p = b.data + b.len
    p[0] = <char>head
    for i in range(size):
        p[size - i] = <char>(v & 0xFF)
        v >>= 8
    b.len += 1 + size
    return 0


# ---------------------------------------------------------------- pack


def pack_message(message, *, max_depth=512):
    """Encode one message (a dict) as msgpack, turning values into their wire form on the way.

    Raises PayloadError naming the path and type of the first value that cannot be sent.
    """
    global _scratch_busy
    cdef Buf b
    cdef int depth_limit
    cdef bint own_scratch
    if not PyDict_Check(message):
        raise PayloadError(f"a message must be a dict, not {type(message).__name__}")
    if type(max_depth) is not int or max_depth != 512:
        check_max_depth(max_depth, "max_depth")
    depth_limit = max_depth
    global _large, _large_cap
    b.len = 0
    b.private = False
    own_scratch = not _scratch_busy
    b.shared = own_scratch
    if own_scratch:
        _scratch_busy = True
        b.data = _scratch
        b.cap = SCRATCH_SIZE
    else:
        b.data = NULL
        b.cap = 0
    try:
        _pack(&b, message, 1, depth_limit)
        return PyBytes_FromStringAndSize(b.data, b.len)
    except Unsendable as exc:
        raise payload_error(exc, depth_limit) from None
    finally:
        if b.private:
            PyMem_RawFree(b.data)
        if own_scratch:
            if _large_cap > _LARGE_KEEP:
                PyMem_RawFree(_large)
                _large = NULL
                _large_cap = 0
            _scratch_busy = False


cdef int _pack_str_header(Buf* b, Py_ssize_t n, object value) except -1:
    if n < 32:
        _put1(b, 0xA0 | n)
    elif n <= 0xFF:
        _put_be(b, 0xD9, n, 1)
    elif n <= 0xFFFF:
        _put_be(b, 0xDA, n, 2)
    elif n <= LEN32_MAX:
        _put_be(b, 0xDB, n, 4)
    else:
        raise Unsendable(value, too_long("str", n))
    return 0


cdef int _pack_str(Buf* b, object text) except -1:
    cdef Py_ssize_t n
    cdef const char* p
    try:
        p = PyUnicode_AsUTF8AndSize(text, &n)
    except UnicodeEncodeError as exc:
        raise Unsendable(text, utf8_detail(exc)) from None
    _pack_str_header(b, n, text)
    _put(b, p, n)
    return 0


cdef int _pack_key(Buf* b, object mapping, object key, bint convert) except -1:
    cdef Py_ssize_t n
    cdef const char* p
    text = key_string(key) if convert else key
    try:
        p = PyUnicode_AsUTF8AndSize(text, &n)
    except UnicodeEncodeError as exc:
        raise Unsendable(mapping, f"key {key!r} is {utf8_detail(exc)}", True) from None
    _pack_str_header(b, n, mapping)
    _put(b, p, n)
    return 0


cdef int _pack_int(Buf* b, object value) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        raise Unsendable(value, "out of the signed 64-bit range [-2**63, 2**63-1]")
    if v >= 0:
        if v < 0x80:
            _put1(b, <uint8_t>v)
        elif v <= 0xFF:
            _put_be(b, 0xCC, <uint64_t>v, 1)
        elif v <= 0xFFFF:
            _put_be(b, 0xCD, <uint64_t>v, 2)
        elif v <= 0xFFFFFFFF:
            _put_be(b, 0xCE, <uint64_t>v, 4)
        else:
            _put_be(b, 0xCF, <uint64_t>v, 8)
    elif v >= -32:
        _put1(b, <uint8_t>(v & 0xFF))
    elif v >= -0x80:
        _put_be(b, 0xD0, <uint64_t>v, 1)
    elif v >= -0x8000:
        _put_be(b, 0xD1, <uint64_t>v, 2)
    elif v >= -0x80000000:
        _put_be(b, 0xD2, <uint64_t>v, 4)
    else:
        _put_be(b, 0xD3, <uint64_t>v, 8)
    return 0


cdef inline int _pack_float(Buf* b, double d) except -1:
    cdef uint64_t bits
    if isfinite(d):
        memcpy(&bits, &d, 8)
        _put_be(b, 0xCB, bits, 8)
    else:
        _put1(b, 0xC0)
    return 0


cdef int _pack_bin(Buf* b, object value) except -1:
    cdef Py_buffer view
    cdef Py_ssize_t n
    if PyBytes_CheckExact(value):
        n = PyBytes_GET_SIZE(value)
        _pack_bin_header(b, n, value)
        _put(b, PyBytes_AS_STRING(value), n)
        return 0
    try:
        PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
    except BufferError:  # a non-contiguous memoryview
        return _pack_bin(b, bytes(value))
    try:
        _pack_bin_header(b, view.len, value)
        _put(b, <const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _pack_bin_header(Buf* b, Py_ssize_t n, object value) except -1:
    if n <= 0xFF:
        _put_be(b, 0xC4, n, 1)
    elif n <= 0xFFFF:
        _put_be(b, 0xC5, n, 2)
    elif n <= LEN32_MAX:
        _put_be(b, 0xC6, n, 4)
    else:
        raise Unsendable(value, too_long("bin", n))
    return 0


cdef int _pack_array(Buf* b, object seq, bint is_list, int depth, int max_depth) except -1:
    cdef Py_ssize_t n, i = 0
    if depth > max_depth:
        raise Unsendable(seq, None)
    n = PyList_GET_SIZE(seq) if is_list else PyTuple_GET_SIZE(seq)
    if n <= 0x0F:
        _put1(b, 0x90 | n)
    elif n <= 0xFFFF:
        _put_be(b, 0xDC, n, 2)
    elif n <= LEN32_MAX:
        _put_be(b, 0xDD, n, 4)
    else:
        raise Unsendable(seq, too_long("array", n))
    try:
        if is_list:
            while i < n:
                if i >= PyList_GET_SIZE(seq):
                    raise RuntimeError("list changed size while it was being packed")
                _pack(b, <object>PyList_GET_ITEM(seq, i), depth + 1, max_depth)
                i += 1
        else:
            while i < n:
                _pack(b, <object>PyTuple_GET_ITEM(seq, i), depth + 1, max_depth)
                i += 1
    except Unsendable as exc:
        exc.steps.append((seq, i, True))
        raise
    return 0


cdef int _pack_dict(Buf* b, object mapping, int depth, int max_depth) except -1:
    cdef Py_ssize_t n, pos = 0, count = 0
    cdef PyObject* kp
    cdef PyObject* vp
    cdef bint converted = False
    if depth > max_depth:
        raise Unsendable(mapping, None)
    n = PyDict_Size(mapping)
    if n <= 0x0F:
        _put1(b, 0x80 | n)
    elif n <= 0xFFFF:
        _put_be(b, 0xDE, n, 2)
    elif n <= LEN32_MAX:
        _put_be(b, 0xDF, n, 4)
    else:
        raise Unsendable(mapping, too_long("map", n))
    key = None
    try:
        while PyDict_Next(mapping, &pos, &kp, &vp):
            key = <object>kp
            value = <object>vp
            if not converted and not PyUnicode_CheckExact(key):
                check_key_collisions(mapping)
                converted = True
            _pack_key(b, mapping, key, converted)
            _pack(b, value, depth + 1, max_depth)
            count += 1
    except Unsendable as exc:
        if not (exc.in_key and exc.value is mapping):
            exc.steps.append((mapping, key, False))
        raise
    if count != n:
        raise RuntimeError("dictionary changed size during iteration")
    return 0


cdef int _pack(Buf* b, object obj, int depth, int max_depth) except -1:
    if PyUnicode_CheckExact(obj):
        return _pack_str(b, obj)
    if PyLong_CheckExact(obj):
        return _pack_int(b, obj)
    if PyFloat_CheckExact(obj):
        return _pack_float(b, PyFloat_AS_DOUBLE(obj))
    if obj is None:
        return _put1(b, 0xC0)
    if obj is True:
        return _put1(b, 0xC3)
    if obj is False:
        return _put1(b, 0xC2)
    if PyDict_CheckExact(obj):
        return _pack_dict(b, obj, depth, max_depth)
    if PyList_CheckExact(obj):
        return _pack_array(b, obj, True, depth, max_depth)
    if PyTuple_CheckExact(obj):
        return _pack_array(b, obj, False, depth, max_depth)
    return _pack_other(b, obj, depth, max_depth)


cdef int _pack_other(Buf* b, object obj, int depth, int max_depth) except -1:
    """Subclasses and the rarer types, in the order the pure-Python twin tests them."""
    if PyLong_Check(obj):
        return _pack_int(b, obj)
    if PyFloat_Check(obj):
        return _pack_float(b, PyFloat_AS_DOUBLE(obj))
    if PyUnicode_Check(obj):
        return _pack_str(b, obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _pack_bin(b, obj)
    if isinstance(obj, ExtType):
        ext = ext_bytes(obj)
        return _put(b, PyBytes_AS_STRING(ext), PyBytes_GET_SIZE(ext))
    if PyList_Check(obj):
        return _pack_array(b, obj, True, depth, max_depth)
    if PyTuple_Check(obj):
        return _pack_array(b, obj, False, depth, max_depth)
    if PyDict_Check(obj):
        return _pack_dict(b, obj, depth, max_depth)
    if PyDateTime_Check(obj):
        ext = timestamp_ext(obj)
        return _put(b, PyBytes_AS_STRING(ext), PyBytes_GET_SIZE(ext))
    raise Unsendable(obj, "unsupported type")


# ---------------------------------------------------------------- unpack


cdef struct Reader:
    const uint8_t* p
    Py_ssize_t pos
    Py_ssize_t end
    Py_ssize_t max_str_len
    Py_ssize_t max_bin_len
    Py_ssize_t max_array_len
    Py_ssize_t max_map_len
    int max_depth


cdef Reader _default_reader
_default_reader.max_str_len = DEFAULT_LIMITS.max_str_len
_default_reader.max_bin_len = DEFAULT_LIMITS.max_bin_len
_default_reader.max_array_len = DEFAULT_LIMITS.max_array_len
_default_reader.max_map_len = DEFAULT_LIMITS.max_map_len
_default_reader.max_depth = DEFAULT_LIMITS.max_depth


def unpack_message(data, limits=None):
    """Decode one message; anything but a well-formed map within ``limits`` is a ProtocolError."""
    cdef Reader r
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        r.p = <const uint8_t*>PyBytes_AS_STRING(data)
        r.end = PyBytes_GET_SIZE(data)
        return _unpack_top(&r, limits, data)
    check_data(data)
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BufferError:  # a non-contiguous memoryview
        return unpack_message(bytes(data), limits)
    try:
        r.p = <const uint8_t*>view.buf
        r.end = view.len
        return _unpack_top(&r, limits, data)
    finally:
        PyBuffer_Release(&view)


cdef object _unpack_top(Reader* r, object limits, object data):
    cdef uint8_t first
    if limits is None or limits is DEFAULT_LIMITS:
        r.max_str_len = _default_reader.max_str_len
        r.max_bin_len = _default_reader.max_bin_len
        r.max_array_len = _default_reader.max_array_len
        r.max_map_len = _default_reader.max_map_len
        r.max_depth = _default_reader.max_depth
    else:
        r.max_str_len = limits.max_str_len
        r.max_bin_len = limits.max_bin_len
        r.max_array_len = limits.max_array_len
        r.max_map_len = limits.max_map_len
        r.max_depth = limits.max_depth
    if r.end == 0:
        raise ProtocolError("empty message")
    first = r.p[0]
    if not (0x80 <= first <= 0x8F or first == 0xDE or first == 0xDF):
        raise ProtocolError(f"a message must be a msgpack map; it starts with byte 0x{first:02x}")
    r.pos = 0
    value = _read(r, 1)
    if r.pos != r.end:
        raise ProtocolError(f"{r.end - r.pos} trailing bytes after the message at offset {r.pos}")
    return value


cdef inline uint64_t _load_be(const uint8_t* p, int size) nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(size):
        v = (v << 8) | p[i]
    return v


cdef inline uint64_t _uint(Reader* r, int size) except? 0xFFFFFFFFFFFFFFFF:
    """Read a big-endian unsigned int of ``size`` bytes at r.pos and move past it."""
    cdef uint64_t v
    if r.end - r.pos < size:
        raise truncated(r.pos)
    v = _load_be(r.p + r.pos, size)
    r.pos += size
    return v


cdef inline const uint8_t* _take(Reader* r, Py_ssize_t n) except NULL:
    cdef const uint8_t* p
    if r.end - r.pos < n:
        raise truncated(r.pos)
    p = r.p + r.pos
    r.pos += n
    return p


cdef object _read(Reader* r, int depth):
    cdef Py_ssize_t start = r.pos
    cdef uint8_t b
    cdef uint64_t u
    cdef uint32_t bits32
    cdef float f
    cdef double d
    cdef Py_ssize_t n
    cdef int size
    cdef const uint8_t* p
    if r.pos >= r.end:
        raise truncated(r.pos)
    b = r.p[r.pos]
    r.pos += 1
    if b <= 0x7F:
        return PyLong_FromLong(b)
    if b >= 0xE0:
        return PyLong_FromLong(<long>b - 0x100)
    if 0xA0 <= b <= 0xBF:
        return _read_str(r, b & 0x1F, start)
    if 0x90 <= b <= 0x9F:
        return _read_array(r, b & 0x0F, start, depth)
    if 0x80 <= b <= 0x8F:
        return _read_map(r, b & 0x0F, start, depth)
    if b == 0xC0:
        return None
    if b == 0xC2:
        return False
    if b == 0xC3:
        return True
    if 0xCC <= b <= 0xCF:
        return PyLong_FromUnsignedLongLong(_uint(r, 1 << (b - 0xCC)))
    if 0xD0 <= b <= 0xD3:
        size = 1 << (b - 0xD0)
        u = _uint(r, size)
        if size == 1:
            return PyLong_FromLong(<int8_t>u)
        if size == 2:
            return PyLong_FromLong(<int16_t>u)
        if size == 4:
            return PyLong_FromLong(<int32_t>u)
        return PyLong_FromLongLong(<int64_t>u)
    if b == 0xCB:
        p = _take(r, 8)
        u = _load_be(p, 8)
        memcpy(&d, &u, 8)
        return PyFloat_FromDouble(d) if isfinite(d) else None
    if b == 0xCA:
        p = _take(r, 4)
        bits32 = <uint32_t>_load_be(p, 4)
        memcpy(&f, &bits32, 4)
        return PyFloat_FromDouble(f) if isfinite(f) else None
    if 0xD9 <= b <= 0xDB:
        return _read_str(r, _uint(r, 1 << (b - 0xD9)), start)
    if 0xC4 <= b <= 0xC6:
        n = _uint(r, 1 << (b - 0xC4))
        if n > r.max_bin_len:
            raise over_limit("bin", n, "max_bin_len", r.max_bin_len, start)
        p = _take(r, n)
        return PyBytes_FromStringAndSize(<const char*>p, n)
    if b == 0xDC or b == 0xDD:
        return _read_array(r, _uint(r, 2 if b == 0xDC else 4), start, depth)
    if b == 0xDE or b == 0xDF:
        return _read_map(r, _uint(r, 2 if b == 0xDE else 4), start, depth)
    if 0xD4 <= b <= 0xD8:
        n = 1 << (b - 0xD4)
    elif 0xC7 <= b <= 0xC9:
        n = _uint(r, 1 << (b - 0xC7))
    else:
        raise ProtocolError(f"invalid msgpack byte 0x{b:02x} at offset {start}")
    if n > r.max_bin_len:
        raise over_limit("ext", n, "max_bin_len", r.max_bin_len, start)
    code = <int8_t>_uint(r, 1)
    p = _take(r, n)
    return ext_value(code, PyBytes_FromStringAndSize(<const char*>p, n))


cdef object _read_str(Reader* r, Py_ssize_t n, Py_ssize_t start):
    cdef const uint8_t* p
    if n > r.max_str_len:
        raise over_limit("str", n, "max_str_len", r.max_str_len, start)
    p = _take(r, n)
    try:
        return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)
    except UnicodeDecodeError:
        raise ProtocolError(f"invalid UTF-8 in the str at offset {start}") from None


cdef int _container_checks(Reader* r, str kind, Py_ssize_t n, Py_ssize_t per_item, Py_ssize_t start, int depth) except -1:
    cdef Py_ssize_t limit
    if depth > r.max_depth:
        raise ProtocolError(f"nesting deeper than max_depth={r.max_depth} at offset {start}")
    limit = r.max_array_len if per_item == 1 else r.max_map_len
    if n > limit:
        raise over_limit(kind, n, f"max_{kind}_len", limit, start)
    if n * per_item > r.end - r.pos:
        raise truncated(r.pos)
    return 0


cdef object _read_array(Reader* r, Py_ssize_t n, Py_ssize_t start, int depth):
    cdef Py_ssize_t i
    _container_checks(r, "array", n, 1, start, depth)
    items = PyList_New(n)
    for i in range(n):
        item = _read(r, depth + 1)
        Py_INCREF(item)
        PyList_SET_ITEM(items, i, item)
    return items


cdef object _read_map(Reader* r, Py_ssize_t n, Py_ssize_t start, int depth):
    cdef Py_ssize_t i, key_pos
    cdef PyObject* interned
    _container_checks(r, "map", n, 2, start, depth)
    result = {}
    for i in range(n):
        key_pos = r.pos
        key = _read(r, depth + 1)
        if PyUnicode_CheckExact(key):
            interned = <PyObject*>key
            Py_INCREF(key)
            PyUnicode_InternInPlace(&interned)
            key = <object>interned
            Py_DECREF(key)
        elif PyList_CheckExact(key) or PyDict_CheckExact(key):
            raise ProtocolError(f"unhashable map key of type {type(key).__name__} at offset {key_pos}")
        value = _read(r, depth + 1)
        PyDict_SetItem(result, key, value)
    return result
