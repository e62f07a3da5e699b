"""The ``multifrost`` command: list, prune, call and ping registered services; make CURVE keys; run a demo.

Every failure ends as one line on stderr and a non-zero exit status (1: the operation
failed, 2: bad command line, 130: interrupted), never as a traceback; ``-v`` shows the
library's log, and the traceback of an unexpected error.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import pprint
import statistics
import sys
import time
from datetime import date, datetime, time as dtime
from pathlib import Path
from typing import Any, NoReturn, Sequence

from .errors import (
    CallTimeoutError,
    MultifrostError,
    RegistryError,
    RemoteCallError,
    ServiceNotFoundError,
    WorkerCrashedError,
)
from .cli_hosts import add_curve_options, curve_options, keygen, list_instances, print_table
from .registries import is_shared, open_registry
from .registry import Registry, ServiceEntry

log = logging.getLogger(__name__)

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEMO_WORKER = Path(__file__).with_name("_demo_worker.py")


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and is reported by ``main``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- helpers ------------------------------------------------------------------------------


def _out(text: str = "") -> None:
    print(text, flush=True)


def parse_arg(text: str) -> Any:
    """A command-line argument as JSON when it parses (``3``, ``true``, ``[1]``), else the string.

    ``NaN`` and ``Infinity`` stay strings: they cannot cross the wire as numbers.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not portable JSON")


def to_jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold turned into something it can.

    bytes become base64 text, dates ISO-8601 text, NaN/Infinity null, other keys and
    unknown objects their string form.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    return repr(value)


def _show(value: Any, as_json: bool) -> None:
    if as_json:
        _out(json.dumps(to_jsonable(value), ensure_ascii=False))
    elif isinstance(value, str):
        _out(value)
    else:
        _out(pprint.pformat(value, sort_dicts=False))


def _registry(args: argparse.Namespace) -> Registry:
    """The registry ``--registry`` names, else ``$MULTIFROST_REGISTRY``, else the shared file."""
    try:
        return open_registry(args.registry)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _live_entry(registry: Registry, service_id: str) -> ServiceEntry:
    """The service's entry, failing at once (no discovery wait) when it is absent or dead."""
    entry = registry.lookup(service_id)
    if entry is None:
        raise ServiceNotFoundError(f"no service {service_id!r} in registry {registry.location}")
    if not entry.alive:
        raise ServiceNotFoundError(
            f"service {service_id!r} is registered but its process (pid {entry.pid}) is not running "
            f"('multifrost prune' removes such entries)"
        )
    return entry


def _describe(exc: BaseException) -> str:
    """One line saying what went wrong."""
    if isinstance(exc, WorkerCrashedError):
        text = f"worker crashed: {exc}"
    elif isinstance(exc, RemoteCallError):
        text = f"remote error: {exc.remote_type}: {exc}" if exc.remote_type else f"remote error: {exc}"
    elif isinstance(exc, CallTimeoutError):
        text = f"timeout: {exc}"
    elif isinstance(exc, RegistryError):
        text = f"registry error: {exc}"
    elif isinstance(exc, MultifrostError):
        text = str(exc)
    else:
        text = f"unexpected error: {type(exc).__name__}: {exc} (run with -v for details)"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# -- commands -----------------------------------------------------------------------------


def cmd_services(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if is_shared(registry):
        return list_instances(registry, args.json, _out)
    entries = sorted(registry.entries().values(), key=lambda e: e.service_id)
    if args.json:
        table = {e.service_id: dict(e.to_json(), alive=e.alive) for e in entries}
        _out(json.dumps(table, ensure_ascii=False))
        return 0
    if not entries:
        _out(f"no services registered in {registry.location}")
        return 0
    rows = [("SERVICE", "PORT", "PID", "STATUS", "STARTED")]
    rows += [(e.service_id, str(e.port), str(e.pid), "alive" if e.alive else "dead", e.started) for e in entries]
    print_table(rows, _out)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    removed = _registry(args).prune()
    if removed:
        _out(f"removed {len(removed)} dead service(s): {', '.join(sorted(removed))}")
    else:
        _out("no dead services")
    return 0


def _call_args(args: argparse.Namespace) -> list[Any]:
    if args.args_json is None:
        return [parse_arg(a) for a in args.args]
    if args.args:
        raise UsageError("give the arguments either as ARG ... or with --args, not both")
    try:
        value = json.loads(args.args_json)
    except ValueError as exc:
        raise UsageError(f"--args is not valid JSON: {exc}") from exc
    if not isinstance(value, list):
        raise UsageError("--args must be a JSON array of the arguments")
    return value


def cmd_call(args: argparse.Namespace) -> int:
    call_args = _call_args(args)
    registry = _registry(args)
    _live_entry(registry, args.service)
    from . import ParentWorker

    with ParentWorker.connect(args.service, timeout=args.timeout, registry=registry, **curve_options(args)) as worker:
        try:
            result = worker.call_function(args.function, call_args, timeout=args.timeout, namespace=args.namespace)
        except CallTimeoutError as exc:
            hint = f" (does the service serve namespace {args.namespace!r}?)" if args.namespace != "default" else ""
            raise CallTimeoutError(
                f"{args.service}.{args.function} did not answer within {args.timeout:g} s{hint}"
            ) from exc
    _show(result, args.json)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    registry = _registry(args)
    entry = _live_entry(registry, args.service)
    from . import ParentWorker

    with ParentWorker.connect(args.service, timeout=args.timeout, registry=registry, **curve_options(args)) as worker:
        try:
            rtt_ms = worker.ping(timeout=args.timeout)
        except CallTimeoutError as exc:
            raise CallTimeoutError(f"no heartbeat echo from {args.service!r} within {args.timeout:g} s") from exc
    where = f"{entry.host}:{entry.port}" if hasattr(entry, "host") else f"port {entry.port}"
    _out(f"{args.service}: heartbeat round trip {rtt_ms:.3f} ms ({where}, pid {entry.pid})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import ParentWorker, codec

    _out(f"codec: {codec.IMPLEMENTATION}")
    _out(f"spawning {DEMO_WORKER}")
    with ParentWorker.spawn(str(DEMO_WORKER)) as worker:
        showcase: list[tuple[str, tuple[Any, ...]]] = [
            ("add", (2, 3)),
            ("multiply", (6, 7)),
            ("fib", (90,)),
            ("greet", ("world",)),
            ("echo", ([1, "two", None],)),
            ("wire_types", ()),
        ]
        for name, call_args in showcase:
            result = getattr(worker.call, name)(*call_args)
            _out(f"  {name}({', '.join(map(repr, call_args))}) = {result!r}")
        try:
            worker.call.divide(1, 0)
        except RemoteCallError as exc:
            _out(f"  divide(1, 0) raised in the worker: {exc.remote_type}: {exc}")
        for _ in range(min(100, args.calls)):
            worker.call.add(1, 2)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(args.calls):
            start = clock()
            worker.call.add(1, 2)
            samples.append(clock() - start)
    samples.sort()
    median_us = statistics.median(samples) / 1000
    p99_us = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000
    _out(f"latency: median {median_us:.1f} µs, p99 {p99_us:.1f} µs over {args.calls} sync add(1, 2) calls")
    return 0


# -- the parser and main ------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="multifrost",
        description="Inspect and call Multifrost services (registry: $MULTIFROST_REGISTRY "
        "or ~/.multifrost/services.json).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr (-vv: debug, with every message sent and received)")
    parser.add_argument("--registry", metavar="URL_OR_PATH",
                        help="the registry: redis://host:port/db or a JSON file path (default: $MULTIFROST_REGISTRY)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("services", help="list the registered services")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.set_defaults(handler=cmd_services)

    p = sub.add_parser("call", help="call a function of a running service and print the result")
    p.add_argument("service", help="the service id")
    p.add_argument("function", help="the function to call")
    p.add_argument("args", nargs="*", default=[], metavar="ARG",
                   help="an argument: JSON if it parses (3, true, [1]), else a string")
    p.add_argument("--args", dest="args_json", metavar="JSON", help="all arguments as one JSON array instead")
    p.add_argument("--timeout", type=_positive, default=30.0, metavar="S", help="seconds to wait (default 30)")
    p.add_argument("--namespace", default="default", metavar="NS", help="the service's namespace (default 'default')")
    p.add_argument("--json", action="store_true", help="print the result as JSON (bytes as base64)")
    add_curve_options(p)
    p.set_defaults(handler=cmd_call)

    p = sub.add_parser("ping", help="measure the heartbeat round trip to a running service")
    p.add_argument("service", help="the service id")
    p.add_argument("--timeout", type=_positive, default=5.0, metavar="S", help="seconds to wait (default 5)")
    add_curve_options(p)
    p.set_defaults(handler=cmd_ping)

    p = sub.add_parser("keygen", help="write a CURVE keypair: PATH.key (public) and PATH.key_secret (private)")
    p.add_argument("path", metavar="PATH", help="where to write the two files (PATH.key, PATH.key_secret)")
    p.set_defaults(handler=lambda args: keygen(args.path, _out))

    p = sub.add_parser("prune", help="remove the entries of services whose process is gone")
    p.set_defaults(handler=cmd_prune)

    p = sub.add_parser("demo", help="spawn a demo worker, call it, and measure the call latency")
    p.add_argument("--calls", type=_count, default=1000, metavar="N", help="calls to time (default 1000)")
    p.set_defaults(handler=cmd_demo)
    for command in sub.choices.values():  # -v also after the command: "multifrost call -vv ..."
        command.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                             help="log to stderr (-vv: debug, with every message sent and received)")
    return parser


def _configure_logging(verbosity: int) -> None:
    if verbosity:
        logging.basicConfig(
            level=logging.DEBUG if verbosity > 1 else logging.INFO,
            format="%(name)s %(levelname)s: %(message)s",
            stream=sys.stderr,
        )
    else:
        # Failures are reported as one line by main(); without a handler anywhere, Python's
        # last-resort handler would print library warnings to stderr as well.
        library = logging.getLogger("multifrost")
        if not any(isinstance(h, logging.NullHandler) for h in library.handlers):
            library.addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status."""
    parser = build_parser()
    verbose = False
    try:
        args = parser.parse_args(argv)
        verbose = bool(args.verbose)
        _configure_logging(args.verbose)
        return args.handler(args)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``multifrost services | head``): no complaint at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except UsageError as exc:
        print(f"multifrost: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if verbose and not isinstance(exc, MultifrostError):
            log.exception("unexpected error")
        print(f"multifrost: {_describe(exc)}", file=sys.stderr)
        return EXIT_FAILURE
