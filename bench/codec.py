"""Benchmark of the codec against msgpack in the same run (not a test).

Rows per payload: the compiled codec, its pure-Python twin, msgpack on an already
clean copy (the floor), and the naive way (a Python walk that makes a sanitized
copy, then msgpack.packb). Unpack: the same against msgpack.unpackb. Reports
medians of interleaved repetitions, in µs per message and as ratios to the floor.

    python bench/codec.py [--reps 9]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import uuid
from typing import Callable

import msgpack

from multifrost import _codec_fallback

try:
    from multifrost import _codec as compiled
except ImportError:
    compiled = None

TARGETS = {"tiny": 1.25, "typical": 1.25, "large floats": 1.1, "large bytes": 1.1}


def envelope(args: list) -> dict:
    return {
        "app": "comlink_ipc_v4",
        "id": str(uuid.uuid4()),
        "type": "call",
        "timestamp": time.time(),
        "function": "add",
        "args": args,
        "namespace": "default",
        "client_name": "bench",
    }


def payloads() -> dict[str, dict]:
    row = {}
    for i in range(20):
        kind = i % 5
        if kind == 0:
            row[f"int_{i}"] = i * 7919 - 40000
        elif kind == 1:
            row[f"float_{i}"] = math.nan if i == 1 else i / 7
        elif kind == 2:
            row[f"str_{i}"] = f"value number {i}"
        elif kind == 3:
            row[f"list_{i}"] = [i, i + 1, f"x{i}"]
        else:
            row[f"flag_{i}"] = i % 2 == 0
    return {
        "tiny": envelope([1, 2]),
        "typical": envelope([row]),
        "large floats": envelope([[i / 3 for i in range(10_000)]]),
        "large bytes": envelope([os.urandom(1 << 20)]),
    }


def naive_sanitize(value: object) -> object:
    """The obvious way: copy the value, fixing what msgpack would not send as we want."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [naive_sanitize(item) for item in value]
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else str(k)): naive_sanitize(v) for k, v in value.items()}
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def naive_pack(message: dict) -> bytes:
    return msgpack.packb(naive_sanitize(message), use_bin_type=True, datetime=True)


def naive_unpack(data: bytes) -> dict:
    return naive_sanitize(msgpack.unpackb(data, strict_map_key=False, timestamp=3))


def calibrate(function, arg) -> int:
    """Loop count for about 10 ms per measurement."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            function(arg)
        if time.perf_counter() - start > 0.01:
            return loops
        loops *= 2


def measure(rows: dict, arg, reps: int) -> dict[str, float]:
    loops = {name: calibrate(function, arg) for name, function in rows.items()}
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(reps):
        for name, function in rows.items():  # interleaved: every rep times every row
            n = loops[name]
            start = time.perf_counter()
            for _ in range(n):
                function(arg)
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def header(reps: int) -> str:
    return f"compiled codec: {'yes' if compiled else 'NO (not built)'}; msgpack {msgpack.version}; {reps} reps"


def run(reps: int = 9, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Measure every payload; one dict per payload with its rows ``(label, µs, ratio to the floor)``."""
    results = []
    for number, (name, message) in enumerate(payloads().items(), 1):
        if progress:
            progress(f"payload {number}/{len(TARGETS)} ({name})")
        clean = naive_sanitize(message)
        data = _codec_fallback.pack_message(message)
        assert msgpack.packb(clean, use_bin_type=True, datetime=True) == data
        pack_rows = {}
        unpack_rows = {}
        if compiled:
            pack_rows["compiled pack_message"] = compiled.pack_message
            unpack_rows["compiled unpack_message"] = compiled.unpack_message
        pack_rows["python twin"] = _codec_fallback.pack_message
        pack_rows["naive sanitize + packb"] = naive_pack
        unpack_rows["python twin"] = _codec_fallback.unpack_message
        unpack_rows["naive unpackb + sanitize"] = naive_unpack
        packed = measure(pack_rows, message, reps)
        floor = measure({"floor": lambda m, c=clean: msgpack.packb(c, use_bin_type=True, datetime=True)}, None, reps)
        unpacked = measure(unpack_rows | {"msgpack.unpackb": lambda d: msgpack.unpackb(d, strict_map_key=False, timestamp=3)}, data, reps)
        rows = [("msgpack.packb of a clean copy", floor["floor"], 1.0)]
        rows += [("pack: " + row, value, value / floor["floor"]) for row, value in packed.items()]
        base = unpacked.pop("msgpack.unpackb")
        rows.append(("msgpack.unpackb", base, 1.0))
        rows += [("unpack: " + row, value, value / base) for row, value in unpacked.items()]
        targets = None
        if compiled:
            pack_ratio = packed["compiled pack_message"] / floor["floor"]
            naive_ratio = packed["naive sanitize + packb"] / packed["compiled pack_message"]
            unpack_ratio = unpacked["compiled unpack_message"] / base
            targets = (f"targets: pack {pack_ratio:.2f}x floor (<= {TARGETS[name]}), {naive_ratio:.1f}x faster than naive, "
                       f"unpack {unpack_ratio:.2f}x unpackb (<= 1.3)")
        results.append({"payload": name, "bytes": len(data), "rows": rows, "targets": targets})
    return results


def report(results: list[dict]) -> list[str]:
    """The Markdown lines of one table per payload."""
    lines = []
    for result in results:
        lines += ["", f"## {result['payload']} ({result['bytes']} bytes)",
                  f"| {'row':<34} | {'µs/msg':>9} | {'vs floor':>8} |",
                  f"|{'-' * 36}|{'-' * 11}|{'-' * 10}|"]
        lines += [f"| {label:<34} | {value:9.2f} | {ratio:8.2f} |" for label, value, ratio in result["rows"]]
        if result["targets"]:
            lines.append(result["targets"])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    options = parser.parse_args()
    print(header(options.reps))
    print("\n".join(report(run(options.reps))))


if __name__ == "__main__":
    main()
