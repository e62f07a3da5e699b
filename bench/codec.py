"""Benchmark of the codec against the msgpack libraries of Python, in the same run (not a test).

Per payload, every codec packs and unpacks the same message: the compiled codec (its
pack sanitizes on the way), its pure-Python twin, the naive way (a Python walk that
makes a sanitized copy, then msgpack), and msgpack-python, msgspec and ormsgpack
(those three pack an already clean copy; all give the same bytes). Reports medians of
interleaved repetitions, in µs per message, with ratios against msgspec (the target:
at most 1.0x) and msgpack-python (each the median of the ratios within a repetition). msgspec and ormsgpack come with the ``bench`` extra;
without them their rows are left out.

    python bench/codec.py [--reps 101]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import uuid
from typing import Callable

import msgpack

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's multifrost

from multifrost import _codec_fallback  # noqa: E402

try:
    from multifrost import _codec as compiled
except ImportError:
    compiled = None
try:
    import msgspec
except ImportError:
    msgspec = None
try:
    import ormsgpack
except ImportError:
    ormsgpack = None

PAYLOADS = ("tiny", "typical", "large floats", "large bytes")
TARGET = 1.0  # the compiled codec against msgspec, pack and unpack, on these payloads:
TARGET_PAYLOADS = ("tiny", "typical", "large floats")  # (1 MiB of bytes is a memcpy for everyone)
COMPILED = "multifrost (Cython)"
MSGPACK = "msgpack-python"
MSGSPEC = "msgspec"


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
    return dict(zip(PAYLOADS, (
        envelope([1, 2]),
        envelope([row]),
        envelope([[i / 3 for i in range(10_000)]]),
        envelope([os.urandom(1 << 20)]),
    )))


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


def codecs() -> dict[str, tuple[Callable, Callable, bool]]:
    """Row label -> (pack, unpack, whether pack gets the message itself rather than a clean copy).

    The compiled codec and msgspec come first, next to each other in every rep.
    """
    rows = {}
    if compiled:
        rows[COMPILED] = (compiled.pack_message, compiled.unpack_message, True)
    if msgspec:
        rows[MSGSPEC] = (msgspec.msgpack.encode, msgspec.msgpack.decode, False)
    if ormsgpack:
        rows["ormsgpack"] = (ormsgpack.packb, ormsgpack.unpackb, False)
    rows[MSGPACK] = (lambda m: msgpack.packb(m, use_bin_type=True, datetime=True),
                     lambda d: msgpack.unpackb(d, strict_map_key=False, timestamp=3), False)
    rows["multifrost twin (pure Python)"] = (_codec_fallback.pack_message, _codec_fallback.unpack_message, True)
    rows["naive: Python walk + msgpack"] = (naive_pack, naive_unpack, True)
    return rows


def calibrate(function, arg) -> int:
    """Loop count for about 0.5 ms per measurement: short, so most escape the other processes of a busy machine."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            function(arg)
        if time.perf_counter() - start > 0.0005:
            return loops
        loops *= 2


def measure(rows: dict[str, tuple[Callable, object]], reps: int) -> dict[str, list[float]]:
    """µs per call of each ``function(arg)``, one sample per rep; every rep times every row in turn."""
    loops = {name: calibrate(function, arg) for name, (function, arg) in rows.items()}
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(reps):
        for name, (function, arg) in rows.items():
            n = loops[name]
            start = time.perf_counter()
            for _ in range(n):
                function(arg)
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    return samples


def header(reps: int) -> str:
    versions = [f"msgpack {'.'.join(map(str, msgpack.version))}",
                f"msgspec {msgspec.__version__}" if msgspec else "msgspec NOT INSTALLED",
                f"ormsgpack {ormsgpack.__version__}" if ormsgpack else "ormsgpack NOT INSTALLED"]
    return f"compiled codec: {'yes' if compiled else 'NO (not built)'}; {', '.join(versions)}; {reps} reps"


def run(reps: int = 9, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Measure every payload: one dict per payload with ``pack`` and ``unpack`` samples (µs) per codec row."""
    results = []
    rows = codecs()
    for number, (name, message) in enumerate(payloads().items(), 1):
        if progress:
            progress(f"payload {number}/{len(PAYLOADS)} ({name})")
        clean = naive_sanitize(message)
        data = _codec_fallback.pack_message(message)
        decoded = _codec_fallback.unpack_message(data)
        for label, (pack, unpack, sanitizes) in rows.items():  # the same work, or the comparison means nothing
            assert pack(message if sanitizes else clean) == data, label
            assert unpack(data) == decoded, label
        packed = measure({label: (pack, message if sanitizes else clean) for label, (pack, _, sanitizes) in rows.items()}, reps)
        unpacked = measure({label: (unpack, data) for label, (_, unpack, _) in rows.items()}, reps)
        results.append({"payload": name, "bytes": len(data), "pack": packed, "unpack": unpacked})  # samples
    return results


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def ratio(samples: dict[str, list[float]], label: str, base: str) -> float | None:
    """Median over the reps of label/base timed in the same rep (steadier than a ratio of medians)."""
    if base not in samples:
        return None
    return statistics.median(a / b for a, b in zip(samples[label], samples[base]))


def targets(result: dict) -> str | None:
    """How the compiled codec stands against msgspec (the target) on one payload."""
    if COMPILED not in result["pack"] or MSGSPEC not in result["pack"]:
        return None
    pack = ratio(result["pack"], COMPILED, MSGSPEC)
    unpack = ratio(result["unpack"], COMPILED, MSGSPEC)
    if result["payload"] not in TARGET_PAYLOADS:
        return f"no target: pack {pack:.2f}x msgspec, unpack {unpack:.2f}x msgspec"
    verdict = "met" if max(pack, unpack) <= TARGET else "MISSED"
    return f"targets ({verdict}): pack {pack:.2f}x msgspec (<= {TARGET}), unpack {unpack:.2f}x msgspec (<= {TARGET})"


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def report(results: list[dict]) -> list[str]:
    """The Markdown lines of one table per payload, then the summary."""
    lines = []
    for result in results:
        pack, unpack = result["pack"], result["unpack"]
        lines += ["", f"## {result['payload']} ({result['bytes']} bytes)",
                  "| codec | pack µs | vs msgspec | vs msgpack | unpack µs | vs msgspec | vs msgpack |",
                  "|---|---|---|---|---|---|---|"]
        for label in pack:
            lines.append(f"| {label} | {median(pack[label]):.2f} | {_x(ratio(pack, label, MSGSPEC))} | "
                         f"{_x(ratio(pack, label, MSGPACK))} | {median(unpack[label]):.2f} | "
                         f"{_x(ratio(unpack, label, MSGSPEC))} | {_x(ratio(unpack, label, MSGPACK))} |")
        if targets(result):
            lines.append(targets(result))
    return lines + ["", "## Summary (µs per message)", *summary(results)]


def summary(results: list[dict]) -> list[str]:
    """One line per payload and direction: every codec side by side (the README table)."""
    labels = list(results[0]["pack"])
    lines = ["| payload | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for result in results:
        for direction in ("pack", "unpack"):
            times = result[direction]
            cells = [f"{median(times[label]):.2f}" + (f" ({_x(ratio(times, label, MSGSPEC))})" if label == COMPILED and MSGSPEC in times else "")
                     for label in labels]
            lines.append(f"| {result['payload']} ({result['bytes']} B) {direction} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=101)
    options = parser.parse_args()
    print(header(options.reps))
    print("\n".join(report(run(options.reps))))


if __name__ == "__main__":
    main()
