# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled codec: the fast twin of ``multifrost._codec_fallback``.

It writes msgpack straight into a C buffer (a reused scratch area, moved into a
bytes object only when the message outgrows it) and reads with typed pointer
arithmetic straight from the caller's buffer. The hot paths work on borrowed
``PyObject*`` and build results through the C API; short ASCII strings (map keys,
the app id, ...) come from a cache instead of being decoded again. Errors and
their messages come from the pure-Python module's helpers, so both twins fail the
same way.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport PyDateTime_Check, import_datetime
from cpython.dict cimport PyDict_Check
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches, PyErr_Fetch, PyErr_NormalizeException, PyErr_Restore
from cpython.object cimport PyObject
from libc.math cimport isfinite
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from msgpack import ExtType

from ._codec_slow import (
    Unsendable,
    check_data,
    check_key_collisions,
    checked_ext,
    ext_bytes,
    ext_value,
    key_string,
    over_limit,
    payload_error,
    timestamp_ext,
    too_long_for,
    truncated,
    utf8_detail,
)
from ._limits import DEFAULT_LIMITS, Limits, check_max_depth
from ._pieces import GATHER_MAX, GATHER_MIN, Pieces
from .errors import PayloadError, ProtocolError

cdef extern from *:
    """
    /* Big-endian loads and stores; compilers turn these shifts into one bswap. */
    static inline void mf_store16(char* p, uint64_t v) { p[0] = (char)(v >> 8); p[1] = (char)v; }
    static inline void mf_store32(char* p, uint64_t v) {
        p[0] = (char)(v >> 24); p[1] = (char)(v >> 16); p[2] = (char)(v >> 8); p[3] = (char)v;
    }
    static inline void mf_store64(char* p, uint64_t v) { mf_store32(p, v >> 32); mf_store32(p + 4, v); }
    static inline uint64_t mf_load_be(const unsigned char* p, int size) {
        switch (size) {
        case 1: return p[0];
        case 2: return ((uint64_t)p[0] << 8) | p[1];
        case 4: return ((uint64_t)p[0] << 24) | ((uint64_t)p[1] << 16) | ((uint64_t)p[2] << 8) | p[3];
        default:
            return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) | ((uint64_t)p[3] << 32)
                 | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) | ((uint64_t)p[6] << 8) | p[7];
        }
    }

    /* Up to 8 bytes of p[:n] (n > 0) in one word: overlapping loads, so every byte is in it. */
    static inline uint64_t mf_word(const unsigned char* p, Py_ssize_t n) {
        uint64_t w;
        uint32_t a, b;
        if (n >= 8) {
            memcpy(&w, p + n - 8, 8);
        } else if (n >= 4) {
            memcpy(&a, p, 4);
            memcpy(&b, p + n - 4, 4);
            w = ((uint64_t)b << 32) | a;
        } else {
            w = (uint64_t)p[0] | ((uint64_t)p[n >> 1] << 8) | ((uint64_t)p[n - 1] << 16);
        }
        return w;
    }

    /* memcpy for n < 32 with fixed-size (overlapping) moves instead of a call. */
    static inline void mf_copy_short(char* dst, const char* src, Py_ssize_t n) {
        uint64_t a, b, c, d;
        uint32_t e, f;
        if (n >= 16) {
            memcpy(&a, src, 8); memcpy(&b, src + 8, 8);
            memcpy(&c, src + n - 16, 8); memcpy(&d, src + n - 8, 8);
            memcpy(dst, &a, 8); memcpy(dst + 8, &b, 8);
            memcpy(dst + n - 16, &c, 8); memcpy(dst + n - 8, &d, 8);
        } else if (n >= 8) {
            memcpy(&a, src, 8); memcpy(&b, src + n - 8, 8);
            memcpy(dst, &a, 8); memcpy(dst + n - 8, &b, 8);
        } else if (n >= 4) {
            memcpy(&e, src, 4); memcpy(&f, src + n - 4, 4);
            memcpy(dst, &e, 4); memcpy(dst + n - 4, &f, 4);
        } else if (n > 0) {
            dst[0] = src[0]; dst[n >> 1] = src[n >> 1]; dst[n - 1] = src[n - 1];
        }
    }

    /* Hash of a short byte string for the string cache (its top bits are the best mixed);
       *ascii tells whether every byte is < 0x80. */
    static inline uint64_t mf_short_hash(const unsigned char* p, Py_ssize_t n, int* ascii) {
        uint64_t h = (uint64_t)(n + 1) * 0x9E3779B97F4A7C15ULL, acc = 0, w = 0;
        Py_ssize_t i = 0;
        for (; i + 8 < n; i += 8) {
            memcpy(&w, p + i, 8);
            acc |= w;
            h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
            h ^= h >> 32;
        }
        if (n) {
            w = mf_word(p, n);  /* the last (up to) 8 bytes */
            acc |= w;
        }
        *ascii = (acc & 0x8080808080808080ULL) == 0;
        return (h ^ w) * 0xD6E8FEB86659FD93ULL;
    }

    /* p[:n] == q[:n] for short strings, without a call to memcmp. */
    static inline int mf_same_bytes(const unsigned char* p, const unsigned char* q, Py_ssize_t n) {
        uint64_t a, b;
        Py_ssize_t i = 0;
        if (n == 0) return 1;
        for (; i + 8 < n; i += 8) {
            memcpy(&a, p + i, 8);
            memcpy(&b, q + i, 8);
            if (a != b) return 0;
        }
        return mf_word(p, n) == mf_word(q, n);
    }

    static inline int mf_is_str(PyObject* o) { return Py_IS_TYPE(o, &PyUnicode_Type); }
    static inline int mf_is_int(PyObject* o) { return Py_IS_TYPE(o, &PyLong_Type); }
    static inline int mf_is_float(PyObject* o) { return Py_IS_TYPE(o, &PyFloat_Type); }
    static inline int mf_is_dict(PyObject* o) { return Py_IS_TYPE(o, &PyDict_Type); }
    static inline int mf_is_list(PyObject* o) { return Py_IS_TYPE(o, &PyList_Type); }
    static inline int mf_is_tuple(PyObject* o) { return Py_IS_TYPE(o, &PyTuple_Type); }
    static inline int mf_is_ascii(PyObject* o) { return PyUnicode_IS_COMPACT_ASCII(o); }
    static inline char* mf_ascii_data(PyObject* o) { return (char*)PyUnicode_DATA(o); }
    static inline Py_ssize_t mf_str_len(PyObject* o) { return PyUnicode_GET_LENGTH(o); }

    /* The value of an int that fits one internal digit (most ints); 0 when it does not. */
    static inline int mf_small_int(PyObject* o, long long* v) {
    #if CYTHON_COMPILING_IN_CPYTHON && PY_VERSION_HEX >= 0x030C0000
        if (!PyUnstable_Long_IsCompact((PyLongObject*)o)) return 0;
        *v = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
        return 1;
    #elif CYTHON_COMPILING_IN_CPYTHON && PY_VERSION_HEX >= 0x030B0000
        Py_ssize_t size = Py_SIZE(o);
        if (size < -1 || size > 1) return 0;
        *v = size == 0 ? 0 : (long long)size * (long long)((PyLongObject*)o)->ob_digit[0];
        return 1;
    #else
        return 0;
    #endif
    }

    static inline PyObject* mf_new_ref(PyObject* o) { Py_INCREF(o); return o; }
    static inline void mf_incref(PyObject* o) { Py_INCREF(o); }
    static inline void mf_decref(PyObject* o) { Py_DECREF(o); }
    static inline void mf_xdecref(PyObject* o) { Py_XDECREF(o); }

    /* A dict with room for n items, so filling it never resizes. */
    static inline PyObject* mf_new_dict(Py_ssize_t n) {
    #if CYTHON_COMPILING_IN_CPYTHON
        return n > 5 ? _PyDict_NewPresized(n) : PyDict_New();
    #else
        return PyDict_New();
    #endif
    }

    /* Insert and let go of the value: the dict keeps its own reference. */
    static inline int mf_dict_set_steal(PyObject* d, PyObject* k, PyObject* v) {
        int rc = PyDict_SetItem(d, k, v);
        Py_DECREF(v);
        return rc;
    }
    """
    void mf_store16(char* p, uint64_t v)
    void mf_store32(char* p, uint64_t v)
    void mf_store64(char* p, uint64_t v)
    void mf_copy_short(char* dst, const char* src, Py_ssize_t n)
    uint64_t mf_load_be(const uint8_t* p, int size)
    uint64_t mf_short_hash(const uint8_t* p, Py_ssize_t n, int* ascii)
    bint mf_same_bytes(const uint8_t* p, const uint8_t* q, Py_ssize_t n)
    bint mf_is_str(PyObject* o)
    bint mf_is_int(PyObject* o)
    bint mf_is_float(PyObject* o)
    bint mf_is_dict(PyObject* o)
    bint mf_is_list(PyObject* o)
    bint mf_is_tuple(PyObject* o)
    bint mf_is_ascii(PyObject* o)
    char* mf_ascii_data(PyObject* o)
    Py_ssize_t mf_str_len(PyObject* o)
    bint mf_small_int(PyObject* o, long long* v)
    PyObject* mf_new_ref(PyObject* o)
    void mf_incref(PyObject* o)
    void mf_decref(PyObject* o)
    void mf_xdecref(PyObject* o)
    object mf_new_dict(Py_ssize_t n)
    int mf_dict_set_steal(object d, object k, PyObject* v) except -1

cdef extern from "Python.h":
    # Raw forms: borrowed PyObject* in, new reference (or NULL with an exception set) out.
    PyObject* mf_long "PyLong_FromLong"(long v)
    PyObject* mf_longlong "PyLong_FromLongLong"(long long v)
    PyObject* mf_ulonglong "PyLong_FromUnsignedLongLong"(unsigned long long v)
    PyObject* mf_float "PyFloat_FromDouble"(double v)
    PyObject* mf_bytes "PyBytes_FromStringAndSize"(const char* data, Py_ssize_t n)
    PyObject* mf_unicode_new "PyUnicode_New"(Py_ssize_t n, uint32_t maxchar)
    PyObject* mf_decode_utf8 "PyUnicode_DecodeUTF8"(const char* data, Py_ssize_t n, const char* errors)
    object mf_new_list "PyList_New"(Py_ssize_t n)
    void mf_list_set "PyList_SET_ITEM"(object items, Py_ssize_t i, PyObject* item)
    Py_ssize_t mf_list_len "PyList_GET_SIZE"(PyObject* items)
    PyObject* mf_list_item "PyList_GET_ITEM"(PyObject* items, Py_ssize_t i)
    Py_ssize_t mf_tuple_len "PyTuple_GET_SIZE"(PyObject* items)
    PyObject* mf_tuple_item "PyTuple_GET_ITEM"(PyObject* items, Py_ssize_t i)
    Py_ssize_t mf_dict_len "PyDict_GET_SIZE"(PyObject* mapping)
    bint mf_dict_next "PyDict_Next"(PyObject* mapping, Py_ssize_t* pos, PyObject** key, PyObject** value)
    double mf_float_value "PyFloat_AS_DOUBLE"(PyObject* value)
    PyObject* Py_None
    PyObject* Py_True
    PyObject* Py_False
    bint PyLong_Check(object value)
    bint PyByteArray_Check(object value)
    bint PyMemoryView_Check(object value)
    bint PyFloat_Check(object value)
    bint PyUnicode_Check(object value)
    bint PyList_Check(object value)
    bint PyTuple_Check(object value)
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object value, int* overflow) except? -1
    int _PyBytes_Resize(PyObject** data, Py_ssize_t size) except -1
    object PyMemoryView_FromMemory(char* mem, Py_ssize_t size, int flags)
    int PyBUF_WRITE
    void PyUnicode_InternInPlace(PyObject** text)

import_datetime()

IMPLEMENTATION = "cython"

cdef enum:
    SCRATCH_SIZE = 65536
    CACHE_SET_BITS = 9       # 512 sets of two entries per cache
    CACHE_MAX_LEN = 32       # longer strings are not cached (a uuid is 36)


cdef char _scratch[SCRATCH_SIZE]
cdef bint _scratch_busy = False

# Short ASCII strings seen recently: a string's hash picks a set of two entries, the
# most recently used first; a new string takes the first entry and pushes the other
# out. The stored hash spares a look at the string itself on a miss. Map keys have
# their own table, and are interned like every key. Only code holding the GIL, and
# running no Python code meanwhile, touches the tables.
cdef struct CacheEntry:
    uint64_t hash
    PyObject* text       # owned; NULL while empty

cdef CacheEntry _key_cache[2 << CACHE_SET_BITS]
cdef CacheEntry _value_cache[2 << CACHE_SET_BITS]

cdef object _DEFAULT_LIMITS = DEFAULT_LIMITS
cdef object _Pieces = Pieces
cdef Py_ssize_t _GATHER_MIN = GATHER_MIN
cdef int _GATHER_MAX = GATHER_MAX
cdef object _Unsendable = Unsendable


# ---------------------------------------------------------------- output buffer


cdef struct Buf:
    char* data         # the scratch area, or the inside of `out`
    Py_ssize_t len
    Py_ssize_t cap
    PyObject* out      # owned bytes object once the message outgrew the scratch, else NULL
    Py_ssize_t short_str  # strs up to this length take the fast path: min(31, max_str)
    Py_ssize_t max_str  # the receiver's limits: a longer value is not packed
    Py_ssize_t max_bin
    Py_ssize_t max_array
    Py_ssize_t max_map
    int max_depth
    PyObject* limits   # borrowed: the Limits object the numbers came from
    PyObject* parts    # owned list of the parts cut so far (gather), else NULL
    Py_ssize_t cut     # bytes in those parts
    int gather         # how many more bytes values may become parts of their own


cdef int _grow(Buf* b, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = b.cap * 2
    cdef Py_ssize_t wanted = (b.len + need) + (b.len + need) // 4
    if cap < wanted:
        cap = wanted
    if cap < 1024:
        cap = 1024
    if b.out == NULL:
        fresh = PyBytes_FromStringAndSize(NULL, cap)
        if b.len:
            memcpy(PyBytes_AS_STRING(fresh), b.data, b.len)
        b.out = mf_new_ref(<PyObject*>fresh)
    else:
        _PyBytes_Resize(&b.out, cap)
    b.data = PyBytes_AS_STRING(<object>b.out)
    b.cap = cap
    return 0


cdef inline char* _reserve(Buf* b, Py_ssize_t n) except NULL:
    """Room for ``n`` more bytes; returns where they go (b.len moves when they are written)."""
    if b.len + n > b.cap:
        _grow(b, n)
    return b.data + b.len


cdef inline int _put_head(Buf* b, Py_ssize_t n, uint8_t fix, Py_ssize_t fix_max,
                          uint8_t head8, uint8_t head16, uint8_t head32) except -1:
    """The smallest header for a length: fix form, then 8 (when head8), 16 or 32 bits."""
    cdef char* p = _reserve(b, 5)
    if n <= fix_max:
        p[0] = <char>(fix | n)
        b.len += 1
    elif head8 and n <= 0xFF:
        p[0] = <char>head8
        p[1] = <char>n
        b.len += 2
    elif n <= 0xFFFF:
        p[0] = <char>head16
        mf_store16(p + 1, n)
        b.len += 3
    else:
        p[0] = <char>head32
        mf_store32(p + 1, n)
        b.len += 5
    return 0


cdef inline int _put_bytes(Buf* b, const char* data, Py_ssize_t n) except -1:
    cdef char* p = _reserve(b, n)
    memcpy(p, data, n)
    b.len += n
    return 0


cdef inline int _put1(Buf* b, uint8_t c) except -1:
    _reserve(b, 1)[0] = <char>c
    b.len += 1
    return 0


# ---------------------------------------------------------------- pack


cdef Buf _default_buf  # the receiver's default limits, as pack_message starts from them
_default_buf.max_str = DEFAULT_LIMITS.max_str_len
_default_buf.max_bin = DEFAULT_LIMITS.max_bin_len
_default_buf.max_array = DEFAULT_LIMITS.max_array_len
_default_buf.max_map = DEFAULT_LIMITS.max_map_len
_default_buf.max_depth = DEFAULT_LIMITS.max_depth
_default_buf.limits = <PyObject*>_DEFAULT_LIMITS


# The containers call _pack through this unchecked pointer: a failed item returns -1
# with the exception set, and the container adds its step to the path before passing
# it on (a try/except around every item would save the exception state each time).
ctypedef int (*_packer)(Buf*, PyObject*, int, int) noexcept
cdef _packer _pack_item


def pack_message(message, *, max_depth=None, limits=None, bint gather=False):
    """Encode one message (a dict) as msgpack, turning values into their wire form on the way.

    ``limits`` are the receiver's decoding limits (default ``DEFAULT_LIMITS``): a value the
    receiver would refuse is not packed; ``max_depth`` overrides ``limits.max_depth``.
    ``gather``: a ``bytes`` value of ``GATHER_MIN`` bytes or more is not copied; the result is
    then a ``Pieces`` (``_pieces``) holding it, for an end that writes with ``sendmsg``.
    Raises PayloadError naming the path and type of the first value that cannot be sent.
    """
    global _scratch_busy
    cdef Buf b
    cdef int depth_limit, rc
    cdef bint own_scratch
    if not PyDict_Check(message):
        raise PayloadError(f"a message must be a dict, not {type(message).__name__}")
    if limits is None or limits is _DEFAULT_LIMITS:
        b = _default_buf  # the limits' numbers, read once at import
    elif isinstance(limits, Limits):
        b.max_str = limits.max_str_len
        b.max_bin = limits.max_bin_len
        b.max_array = limits.max_array_len
        b.max_map = limits.max_map_len
        b.max_depth = limits.max_depth
        b.limits = <PyObject*>limits
    else:
        raise TypeError(f"limits must be a multifrost.codec.Limits, not {type(limits).__name__}")
    b.short_str = b.max_str if b.max_str < 31 else 31
    if max_depth is None:
        depth_limit = b.max_depth
    else:
        check_max_depth(max_depth, "max_depth")
        depth_limit = max_depth
    b.len = 0
    b.out = NULL
    b.parts = NULL
    b.cut = 0
    b.gather = _GATHER_MAX if gather else 0
    own_scratch = not _scratch_busy
    if own_scratch:
        _scratch_busy = True
        b.data = _scratch
        b.cap = SCRATCH_SIZE
    else:
        b.data = NULL
        b.cap = 0
    rc = _pack_item(&b, <PyObject*>message, 1, depth_limit)
    if own_scratch:
        _scratch_busy = False
    if rc < 0:
        mf_xdecref(b.out)
        mf_xdecref(b.parts)
        _raise_failure(depth_limit)
    if b.parts != NULL:
        return _gathered(&b)
    if b.out == NULL:
        return PyBytes_FromStringAndSize(b.data, b.len)
    _PyBytes_Resize(&b.out, b.len)
    result = <object>b.out
    mf_decref(b.out)
    return result


cdef object _gathered(Buf* b):
    """The Pieces of a message that referenced values: the parts cut, then the bytes written since."""
    parts = <list>b.parts  # a reference of this frame's own: the Buf's can go
    mf_decref(b.parts)
    if b.len:
        parts.append(PyBytes_FromStringAndSize(b.data, b.len))
    mf_xdecref(b.out)
    return _Pieces(parts, b.cut + b.len)


cdef int _refer(Buf* b, object value, Py_ssize_t n) except -1:
    """``value`` (bytes, header written) becomes a part of its own: what was written before it is
    cut into a part, and writing starts again at the front of the same buffer."""
    if b.parts == NULL:
        fresh = []
        b.parts = mf_new_ref(<PyObject*>fresh)
    parts = <list>b.parts
    parts.append(PyBytes_FromStringAndSize(b.data, b.len))
    parts.append(value)
    b.cut += b.len + n
    b.len = 0
    b.gather -= 1
    return 0


cdef int _raise_failure(int max_depth) except -1:
    """Pass on the error of a failed pack, an Unsendable turned into the caller's PayloadError."""
    cdef PyObject* kind
    cdef PyObject* value
    cdef PyObject* tb
    if not PyErr_ExceptionMatches(_Unsendable):
        return -1
    PyErr_Fetch(&kind, &value, &tb)
    PyErr_NormalizeException(&kind, &value, &tb)
    exc = <object>value
    mf_decref(kind)
    mf_decref(value)
    mf_xdecref(tb)
    raise payload_error(exc, max_depth) from None


cdef int _note_step(PyObject* container, object key, bint is_index) except -1:
    """Add this container's step to the Unsendable on its way out (other errors pass as they are)."""
    cdef PyObject* kind
    cdef PyObject* value
    cdef PyObject* tb
    if not PyErr_ExceptionMatches(_Unsendable):
        return -1
    PyErr_Fetch(&kind, &value, &tb)
    PyErr_NormalizeException(&kind, &value, &tb)
    try:
        (<object>value).steps.append((<object>container, key, is_index))
    finally:
        PyErr_Restore(kind, value, tb)
    return -1


cdef int _pack(Buf* b, PyObject* obj, int depth, int max_depth) except -1:
    cdef long long v
    if mf_is_str(obj):
        if mf_is_ascii(obj):
            return _put_str(b, mf_ascii_data(obj), mf_str_len(obj), obj)
        return _pack_str(b, obj)
    if mf_is_int(obj):
        if mf_small_int(obj, &v):
            return _put_int(b, v)
        return _pack_int(b, <object>obj)
    if mf_is_float(obj):
        return _pack_float(b, mf_float_value(obj))
    if obj == Py_None:
        return _put1(b, 0xC0)
    if obj == Py_True:
        return _put1(b, 0xC3)
    if obj == Py_False:
        return _put1(b, 0xC2)
    if mf_is_dict(obj):
        return _pack_dict(b, obj, depth, max_depth)
    if mf_is_list(obj):
        return _pack_array(b, obj, True, depth, max_depth)
    if mf_is_tuple(obj):
        return _pack_array(b, obj, False, depth, max_depth)
    return _pack_other(b, obj, depth, max_depth)


_pack_item = <_packer>_pack


cdef inline int _pack_float(Buf* b, double d) except -1:
    cdef uint64_t bits
    cdef char* p = _reserve(b, 9)
    if isfinite(d):
        memcpy(&bits, &d, 8)
        p[0] = <char>0xCB
        mf_store64(p + 1, bits)
        b.len += 9
    else:
        p[0] = <char>0xC0
        b.len += 1
    return 0


cdef int _pack_int(Buf* b, object value) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        raise Unsendable(value, "out of the signed 64-bit range [-2**63, 2**63-1]")
    return _put_int(b, v)


cdef inline int _put_int(Buf* b, long long v) except -1:
    """An int in its smallest encoding."""
    cdef char* p = _reserve(b, 9)
    if 0 <= v < 0x80 or -32 <= v < 0:
        p[0] = <char>v
        b.len += 1
    elif v >= 0:
        if v <= 0xFF:
            p[0] = <char>0xCC
            p[1] = <char>v
            b.len += 2
        elif v <= 0xFFFF:
            p[0] = <char>0xCD
            mf_store16(p + 1, <uint64_t>v)
            b.len += 3
        elif v <= 0xFFFFFFFF:
            p[0] = <char>0xCE
            mf_store32(p + 1, <uint64_t>v)
            b.len += 5
        else:
            p[0] = <char>0xCF
            mf_store64(p + 1, <uint64_t>v)
            b.len += 9
    elif v >= -0x80:
        p[0] = <char>0xD0
        p[1] = <char>v
        b.len += 2
    elif v >= -0x8000:
        p[0] = <char>0xD1
        mf_store16(p + 1, <uint64_t>v)
        b.len += 3
    elif v >= -0x80000000:
        p[0] = <char>0xD2
        mf_store32(p + 1, <uint64_t>v)
        b.len += 5
    else:
        p[0] = <char>0xD3
        mf_store64(p + 1, <uint64_t>v)
        b.len += 9
    return 0


cdef inline int _put_str(Buf* b, const char* data, Py_ssize_t n, PyObject* owner) except -1:
    """A str of ``n`` UTF-8 bytes; ``owner`` is what a too-long error names."""
    cdef char* p
    if n <= b.short_str and b.len + 32 <= b.cap:  # the common case: a short str, room to spare
        p = b.data + b.len
        p[0] = <char>(0xA0 | n)
        mf_copy_short(p + 1, data, n)
        b.len += 1 + n
        return 0
    return _put_long_str(b, data, n, owner)


cdef int _put_long_str(Buf* b, const char* data, Py_ssize_t n, PyObject* owner) except -1:
    if n > b.max_str:
        return _too_long(b, "str", n, owner)
    _put_head(b, n, 0xA0, 31, 0xD9, 0xDA, 0xDB)
    return _put_bytes(b, data, n)


cdef int _too_long(Buf* b, str kind, Py_ssize_t n, PyObject* owner) except -1:
    raise Unsendable(<object>owner, too_long_for(kind, n, <object>b.limits))


cdef int _pack_str(Buf* b, PyObject* text) except -1:
    cdef Py_ssize_t n
    cdef const char* p
    if mf_is_ascii(text):
        return _put_str(b, mf_ascii_data(text), mf_str_len(text), text)
    value = <object>text
    try:
        p = PyUnicode_AsUTF8AndSize(value, &n)
    except UnicodeEncodeError as exc:
        raise Unsendable(value, utf8_detail(exc)) from None
    return _put_str(b, p, n, text)


cdef int _pack_key(Buf* b, object mapping, object key, bint convert) except -1:
    cdef Py_ssize_t n
    cdef const char* p
    text = key_string(key) if convert else key
    try:
        p = PyUnicode_AsUTF8AndSize(text, &n)
    except UnicodeEncodeError as exc:
        raise Unsendable(mapping, f"key {key!r} is {utf8_detail(exc)}", True) from None
    return _put_str(b, p, n, <PyObject*>mapping)


cdef int _pack_bin(Buf* b, object value) except -1:
    cdef Py_buffer view
    if PyBytes_CheckExact(value):
        return _put_bin(b, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), value)
    try:
        PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
    except BufferError:  # a non-contiguous memoryview
        return _pack_bin(b, bytes(value))
    try:
        _put_bin(b, <const char*>view.buf, view.len, value)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _put_bin(Buf* b, const char* data, Py_ssize_t n, object value) except -1:
    if n > b.max_bin:
        return _too_long(b, "bin", n, <PyObject*>value)
    _put_head(b, n, 0xC4, -1, 0xC4, 0xC5, 0xC6)
    if b.gather and n >= _GATHER_MIN and PyBytes_CheckExact(value):
        return _refer(b, value, n)
    return _put_bytes(b, data, n)


cdef int _pack_array(Buf* b, PyObject* seq, bint is_list, int depth, int max_depth) except -1:
    cdef Py_ssize_t n, i
    cdef PyObject* item
    keep = <object>seq  # alive while we read its items, whatever the items' own code does
    if depth > max_depth:
        raise Unsendable(keep, None)
    n = mf_list_len(seq) if is_list else mf_tuple_len(seq)
    if n > b.max_array:
        return _too_long(b, "array", n, seq)
    _put_head(b, n, 0x90, 15, 0, 0xDC, 0xDD)
    for i in range(n):
        if is_list:
            if i >= mf_list_len(seq):
                raise RuntimeError("list changed size while it was being packed")
            item = mf_list_item(seq, i)
        else:
            item = mf_tuple_item(seq, i)
        if mf_is_float(item):
            _pack_float(b, mf_float_value(item))
        elif _pack_item(b, item, depth + 1, max_depth) < 0:
            return _note_step(seq, i, True)
    return 0


cdef int _pack_dict(Buf* b, PyObject* mapping, int depth, int max_depth) except -1:
    cdef Py_ssize_t n, pos = 0, count = 0
    cdef PyObject* kp
    cdef PyObject* vp
    cdef bint converted = False
    keep = <object>mapping  # alive while we read it, whatever the values' own code does
    if depth > max_depth:
        raise Unsendable(keep, None)
    n = mf_dict_len(mapping)
    if n > b.max_map:
        return _too_long(b, "map", n, mapping)
    _put_head(b, n, 0x80, 15, 0, 0xDE, 0xDF)
    while mf_dict_next(mapping, &pos, &kp, &vp):
        count += 1
        if not converted and mf_is_str(kp) and mf_is_ascii(kp):
            _put_str(b, mf_ascii_data(kp), mf_str_len(kp), mapping)
            mf_incref(kp)  # the path of an error names it, even if the value's code deleted it
            if _pack_item(b, vp, depth + 1, max_depth) < 0:
                key = <object>kp
                mf_decref(kp)
                return _note_step(mapping, key, False)
            mf_decref(kp)
            continue
        # The slow way runs Python code (str() of a key): hold the key and the value.
        key = <object>kp
        value = <object>vp
        if not converted and not mf_is_str(kp):
            check_key_collisions(keep)
            converted = True
        _pack_key(b, keep, key, converted)
        if _pack_item(b, <PyObject*>value, depth + 1, max_depth) < 0:
            return _note_step(mapping, key, False)
    if count != n or mf_dict_len(mapping) != n:
        raise RuntimeError("dictionary changed size during iteration")
    return 0


cdef int _pack_other(Buf* b, PyObject* ptr, int depth, int max_depth) except -1:
    """Subclasses and the rarer types, in the order the pure-Python twin tests them."""
    obj = <object>ptr  # held: the code of these types may drop the container's reference
    if PyLong_Check(obj):
        return _pack_int(b, obj)
    if PyFloat_Check(obj):
        return _pack_float(b, mf_float_value(ptr))
    if PyUnicode_Check(obj):
        return _pack_str(b, ptr)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _pack_bin(b, obj)
    if isinstance(obj, ExtType):
        ext = checked_ext(obj, ext_bytes(obj), <object>b.limits)
        return _put_bytes(b, PyBytes_AS_STRING(ext), PyBytes_GET_SIZE(ext))
    if PyList_Check(obj):
        return _pack_array(b, ptr, True, depth, max_depth)
    if PyTuple_Check(obj):
        return _pack_array(b, ptr, False, depth, max_depth)
    if PyDict_Check(obj):
        return _pack_dict(b, ptr, depth, max_depth)
    if PyDateTime_Check(obj):
        ext = checked_ext(obj, timestamp_ext(obj), <object>b.limits)
        return _put_bytes(b, PyBytes_AS_STRING(ext), PyBytes_GET_SIZE(ext))
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
        return _unpack_top(&r, limits)
    if not (PyByteArray_Check(data) or PyMemoryView_Check(data)):
        check_data(data)  # raises the TypeError
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BufferError:  # a non-contiguous memoryview
        return unpack_message(bytes(data), limits)
    try:
        r.p = <const uint8_t*>view.buf
        r.end = view.len
        return _unpack_top(&r, limits)
    finally:
        PyBuffer_Release(&view)


cdef object _unpack_top(Reader* r, object limits):
    cdef uint8_t first
    cdef PyObject* value
    if limits is None or limits is _DEFAULT_LIMITS:
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
    result = <object>value
    mf_decref(value)
    if r.pos != r.end:
        raise ProtocolError(f"{r.end - r.pos} trailing bytes after the message at offset {r.pos}")
    return result


cdef inline uint64_t _uint(Reader* r, int size) except? 0xFFFFFFFFFFFFFFFF:
    """Read a big-endian unsigned int of ``size`` bytes at r.pos and move past it."""
    cdef uint64_t v
    if r.end - r.pos < size:
        raise truncated(r.pos)
    v = mf_load_be(r.p + r.pos, size)
    r.pos += size
    return v


cdef inline const uint8_t* _take(Reader* r, Py_ssize_t n) except NULL:
    cdef const uint8_t* p
    if r.end - r.pos < n:
        raise truncated(r.pos)
    p = r.p + r.pos
    r.pos += n
    return p


cdef inline PyObject* _float64(const uint8_t* p) except NULL:
    """The float (or None, when not finite) of 8 big-endian bytes."""
    cdef uint64_t u = mf_load_be(p, 8)
    cdef double d
    memcpy(&d, &u, 8)
    return mf_float(d) if isfinite(d) else mf_new_ref(Py_None)


cdef PyObject* _read(Reader* r, int depth) except NULL:
    """The value at r.pos, as a new reference; r.pos moves past it."""
    cdef Py_ssize_t start = r.pos
    cdef uint8_t b
    cdef uint64_t u
    cdef uint32_t bits32
    cdef float f
    cdef Py_ssize_t n
    cdef int size
    cdef const uint8_t* p
    if r.pos >= r.end:
        raise truncated(r.pos)
    b = r.p[r.pos]
    r.pos += 1
    if b <= 0x7F:
        return mf_long(b)
    if b >= 0xE0:
        return mf_long(<long>b - 0x100)
    if b < 0xC0:
        if b >= 0xA0:
            return _read_str(r, b & 0x1F, start, False)
        if b >= 0x90:
            return _read_array(r, b & 0x0F, start, depth)
        return _read_map(r, b & 0x0F, start, depth)
    if b == 0xC0:
        return mf_new_ref(Py_None)
    elif b == 0xC2:
        return mf_new_ref(Py_False)
    elif b == 0xC3:
        return mf_new_ref(Py_True)
    elif b == 0xCB:
        return _float64(_take(r, 8))
    elif b == 0xCA:
        bits32 = <uint32_t>mf_load_be(_take(r, 4), 4)
        memcpy(&f, &bits32, 4)
        return mf_float(f) if isfinite(f) else mf_new_ref(Py_None)
    elif b == 0xCC or b == 0xCD or b == 0xCE or b == 0xCF:
        return mf_ulonglong(_uint(r, 1 << (b - 0xCC)))
    elif b == 0xD0 or b == 0xD1 or b == 0xD2 or b == 0xD3:
        size = 1 << (b - 0xD0)
        u = _uint(r, size)
        if size == 1:
            return mf_long(<int8_t>u)
        if size == 2:
            return mf_long(<int16_t>u)
        if size == 4:
            return mf_long(<int32_t>u)
        return mf_longlong(<int64_t>u)
    elif b == 0xD9 or b == 0xDA or b == 0xDB:
        return _read_str(r, _uint(r, 1 << (b - 0xD9)), start, False)
    elif b == 0xC4 or b == 0xC5 or b == 0xC6:
        n = _uint(r, 1 << (b - 0xC4))
        if n > r.max_bin_len:
            raise over_limit("bin", n, "max_bin_len", r.max_bin_len, start)
        return mf_bytes(<const char*>_take(r, n), n)
    elif b == 0xDC or b == 0xDD:
        return _read_array(r, _uint(r, 2 if b == 0xDC else 4), start, depth)
    elif b == 0xDE or b == 0xDF:
        return _read_map(r, _uint(r, 2 if b == 0xDE else 4), start, depth)
    return _read_ext(r, b, start)


cdef PyObject* _read_ext(Reader* r, uint8_t b, Py_ssize_t start) except NULL:
    cdef Py_ssize_t n
    cdef const uint8_t* p
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
    value = ext_value(code, PyBytes_FromStringAndSize(<const char*>p, n))
    return mf_new_ref(<PyObject*>value)


cdef PyObject* _read_str(Reader* r, Py_ssize_t n, Py_ssize_t start, bint is_key) except NULL:
    """A str of ``n`` bytes at r.pos (its header at ``start``); keys come back interned."""
    cdef const uint8_t* p
    cdef PyObject* text
    cdef CacheEntry* entries
    cdef CacheEntry swap
    cdef int ascii
    cdef uint64_t h
    if n > r.max_str_len:
        raise over_limit("str", n, "max_str_len", r.max_str_len, start)
    p = _take(r, n)
    if n <= CACHE_MAX_LEN:
        h = mf_short_hash(p, n, &ascii)
        if ascii:
            entries = (&_key_cache[0] if is_key else &_value_cache[0]) + 2 * (h >> (64 - CACHE_SET_BITS))
            if _holds(&entries[0], h, p, n):
                return mf_new_ref(entries[0].text)
            if _holds(&entries[1], h, p, n):
                swap = entries[0]
                entries[0] = entries[1]
                entries[1] = swap
                return mf_new_ref(entries[0].text)
            return _cache_new(entries, h, p, n, is_key)
    text = mf_decode_utf8(<const char*>p, n, NULL)
    if text == NULL:
        _utf8_error(start)
    if is_key:
        PyUnicode_InternInPlace(&text)
    return text


cdef inline bint _holds(CacheEntry* entry, uint64_t h, const uint8_t* p, Py_ssize_t n) noexcept:
    return (entry.hash == h and entry.text != NULL and mf_str_len(entry.text) == n
            and mf_same_bytes(p, <const uint8_t*>mf_ascii_data(entry.text), n))


cdef PyObject* _cache_new(CacheEntry* entries, uint64_t h, const uint8_t* p, Py_ssize_t n, bint intern) except NULL:
    """A new ASCII str of ``p[:n]``, which also goes first in its set of cache entries."""
    cdef PyObject* text = mf_unicode_new(n, 127)
    if text == NULL:
        return NULL
    memcpy(mf_ascii_data(text), p, n)
    if intern:
        PyUnicode_InternInPlace(&text)
    if mf_is_ascii(text):
        mf_incref(text)
        mf_xdecref(entries[1].text)
        entries[1] = entries[0]
        entries[0].hash = h
        entries[0].text = text
    return text


cdef int _utf8_error(Py_ssize_t start) except -1:
    """Turn the UnicodeDecodeError just raised into a ProtocolError (other errors pass)."""
    if PyErr_ExceptionMatches(UnicodeDecodeError):
        PyErr_Clear()
        raise ProtocolError(f"invalid UTF-8 in the str at offset {start}") from None
    return -1


cdef inline int _container_checks(Reader* r, Py_ssize_t n, Py_ssize_t per_item, Py_ssize_t start, int depth) except -1:
    cdef Py_ssize_t limit = r.max_array_len if per_item == 1 else r.max_map_len
    if depth > r.max_depth or n > limit or n * per_item > r.end - r.pos:
        _container_error(r, n, per_item, start, depth)
    return 0


cdef int _container_error(Reader* r, Py_ssize_t n, Py_ssize_t per_item, Py_ssize_t start, int depth) except -1:
    kind = "array" if per_item == 1 else "map"
    if depth > r.max_depth:
        raise ProtocolError(f"nesting deeper than max_depth={r.max_depth} at offset {start}")
    limit = r.max_array_len if per_item == 1 else r.max_map_len
    if n > limit:
        raise over_limit(kind, n, f"max_{kind}_len", limit, start)
    raise truncated(r.pos)


cdef PyObject* _read_array(Reader* r, Py_ssize_t n, Py_ssize_t start, int depth) except NULL:
    cdef Py_ssize_t i
    cdef PyObject* item
    _container_checks(r, n, 1, start, depth)
    items = mf_new_list(n)
    for i in range(n):
        # every item takes at least one byte and the checks above saw n of them left
        if r.p[r.pos] == 0xCB and r.end - r.pos >= 9:
            item = _float64(r.p + r.pos + 1)
            r.pos += 9
        else:
            item = _read(r, depth + 1)
        mf_list_set(items, i, item)
    return mf_new_ref(<PyObject*>items)


cdef PyObject* _read_map(Reader* r, Py_ssize_t n, Py_ssize_t start, int depth) except NULL:
    cdef Py_ssize_t i
    _container_checks(r, n, 2, start, depth)
    result = mf_new_dict(n)
    for i in range(n):
        key = _read_key(r, depth + 1)
        mf_dict_set_steal(result, key, _read(r, depth + 1))
    return mf_new_ref(<PyObject*>result)


cdef object _read_key(Reader* r, int depth):
    """A map key: str keys interned, unhashable ones refused."""
    cdef Py_ssize_t start = r.pos
    cdef PyObject* raw
    cdef uint8_t b = r.p[r.pos]  # _container_checks saw two bytes per entry left
    if 0xA0 <= b <= 0xBF:
        r.pos += 1
        raw = _read_str(r, b & 0x1F, start, True)
    elif b == 0xD9:
        r.pos += 1
        raw = _read_str(r, _uint(r, 1), start, True)
    else:
        raw = _read(r, depth)
        if mf_is_str(raw):
            PyUnicode_InternInPlace(&raw)
    key = <object>raw
    mf_decref(raw)
    if mf_is_list(raw) or mf_is_dict(raw):
        raise ProtocolError(f"unhashable map key of type {type(key).__name__} at offset {start}")
    return key


# ---------------------------------------------------------------- receive


def bytes_to_fill(Py_ssize_t size):
    """``(view, done)``: a writable memoryview of ``size`` bytes, and ``done()`` returning them as
    bytes once filled. Here the view is the memory of a new bytes object, so a transport
    receives a large frame straight into the bytes it hands out, without the copy
    ``bytes(buffer)`` costs. Fill all of it before calling ``done()``."""
    if size < 2:  # bytes of 0 or 1 byte may be shared singletons: never write into them
        raise ValueError(f"bytes_to_fill needs a size of 2 or more, not {size}")
    payload = PyBytes_FromStringAndSize(NULL, size)
    return PyMemoryView_FromMemory(PyBytes_AS_STRING(payload), size, PyBUF_WRITE), lambda: payload
