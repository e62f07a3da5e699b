"""Run every benchmark and write the results: ``python -m bench [--quick] [--out DIR]``.

Stages: codec (bench/codec.py), transports (bench/transports.py), RPC (bench/rpc.py), the
side-by-side comparison (bench/suite.py) and multifrost among other libraries
(bench/libraries.py). Prints the comparison tables; writes every table to
DIR/results.md and, when matplotlib is installed (the ``[bench]`` extra), the latency
distributions to DIR/latency.png.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from typing import Callable

import msgpack
import zmq

from bench import codec, libraries, rpc, suite, transports
from multifrost.codec import IMPLEMENTATION

SETTINGS = {  # quick: < 60 s on 2 cores; full: about 2 minutes
    "quick": {"codec_reps": 31, "rpc_calls": 500, "rpc_reps": 3, "calls": 500, "reps": 3, "rounds": 3, "echoes": 10},
    "full": {"codec_reps": 101, "rpc_calls": 2000, "rpc_reps": 7, "calls": 2000, "reps": 5, "rounds": 5, "echoes": 100},
}


class Progress:
    """One status line on stderr, rewritten in place: stage, step, elapsed time."""

    def __init__(self, stages: int) -> None:
        self.stages = stages
        self.stage = 0
        self.name = ""
        self.started = time.monotonic()

    def begin(self, name: str) -> Callable[[str], None]:
        self.stage += 1
        self.name = name
        self.show("")
        return self.show

    def show(self, text: str) -> None:
        line = f"[{self.stage}/{self.stages} {self.name}] {text}  ({time.monotonic() - self.started:.0f} s)"
        print(f"\r{line:<78}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        print(f"\r{'':<78}\r", end="", file=sys.stderr, flush=True)



def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repetitions (< 60 s)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="directory for results.md and latency.png (default bench/results)")
    options = parser.parse_args()
    mode = "quick" if options.quick else "full"
    config = SETTINGS[mode]
    progress = Progress(5)
    started = time.monotonic()
    try:
        codec_result = codec.run(config["codec_reps"], progress.begin("codec"))
        transport_result = transports.run(options.quick, progress.begin("transports"))
        rpc_result = rpc.measure(config["rpc_calls"], config["rpc_reps"], progress.begin("rpc"))
        comparison = suite.compare(config["calls"], config["reps"], progress.begin("comparison"))
        among = libraries.run(config["rounds"], config["calls"], config["echoes"], progress.begin("libraries"))
    finally:
        progress.done()
    elapsed = time.monotonic() - started
    os.makedirs(options.out, exist_ok=True)
    png = os.path.join(options.out, "latency.png")
    charted = suite.chart(comparison, png)
    header = (f"{mode} run of {datetime.datetime.now().isoformat(timespec='seconds')} in {elapsed:.0f} s: "
              f"Python {platform.python_version()}, pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()}), "
              f"msgpack {'.'.join(map(str, msgpack.version))}, codec={IMPLEMENTATION}, {os.cpu_count()} CPUs")
    comparison_lines = suite.report(comparison)
    among_lines = libraries.report(among)
    document = ["# multifrost benchmarks", "", header, "",
                "## multifrost among the libraries Python users pick (bench/libraries.py)", "", *among_lines, "",
                "## multifrost against raw pyzmq, ProcessPoolExecutor and multiprocessing.Pipe", "",
                *comparison_lines, ""]
    if charted:
        document += ["![latency distributions per transport](latency.png)", ""]
    document += ["## RPC paths (bench/rpc.py)", "", *rpc.report(rpc_result)[2:], "",
                 "## Transports through the interface against raw pyzmq (bench/transports.py)", "", "```",
                 *transports.report(transport_result), "```", "",
                 "## Codec (bench/codec.py)", "", codec.header(config["codec_reps"]), *codec.report(codec_result), ""]
    markdown = os.path.join(options.out, "results.md")
    with open(markdown, "w") as f:
        f.write("\n".join(document))
    print(header)
    print()
    print("\n".join(comparison_lines))
    print()
    print("\n".join(among_lines))
    print()
    print(f"wrote {markdown}" + (f" and {png}" if charted else " (no chart: pip install 'multifrost[bench]')"))


if __name__ == "__main__":
    main()
