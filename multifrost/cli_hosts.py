"""The CLI's pieces for services across hosts: the instance table of a lease registry,
``multifrost keygen``, and the CURVE options of ``call`` and ``ping``."""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import MultifrostError
from .registry import Registry

if TYPE_CHECKING:
    from .registry_redis import RedisRegistry

Out = Callable[[str], None]


def print_table(rows: Sequence[Sequence[str]], out: Out) -> None:
    """Columns padded to their widest cell (the last one left as it is)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        out("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


def list_instances(registry: RedisRegistry, as_json: bool, out: Out) -> int:
    """Every live instance in a lease registry, one line each, with the host it runs on."""
    instances = registry.all_instances()
    if as_json:
        by_id: dict[str, list] = {}
        for e in instances:
            by_id.setdefault(e.service_id, []).append(e.to_lease())
        out(json.dumps(by_id, ensure_ascii=False))
        return 0
    if not instances:
        out(f"no services registered in {registry.location}")
        return 0
    rows = [("SERVICE", "INSTANCE", "HOST", "PORT", "PID", "HOSTNAME", "CURVE", "STARTED")]
    rows += [(e.service_id, e.instance, e.host, str(e.port), str(e.pid), e.hostname,
              "yes" if e.curve_public_key else "no", e.started) for e in instances]
    print_table(rows, out)
    return 0


def keygen(path: str, out: Out) -> int:
    """``multifrost keygen PATH``: write PATH.key and PATH.key_secret (0600), never overwriting."""
    from .transports import curve_keys

    try:
        public, secret = curve_keys().write_keypair(path)
    except (FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise MultifrostError(f"keygen: {exc}") from None
    out(f"public key: {public} (give it to the other side)")
    out(f"secret key: {secret} (mode 0600; keep it here)")
    return 0


def add_curve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curve-secret-key", metavar="FILE", help="this client's CURVE .key_secret file")
    parser.add_argument("--curve-server-key", metavar="KEY_OR_FILE",
                        help="pin the service's CURVE public key (default: the one in the registry)")


def curve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ParentWorker.connect`` CURVE keyword arguments of ``call`` and ``ping``."""
    return {"curve_secret_key": args.curve_secret_key, "curve_server_key": args.curve_server_key}
