"""Connect mode, service side: refuse an unprotected network bind, bind (with CURVE when asked),
announce the instance in its registry, and take the announcement back when serving ends."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from .errors import RegistryError
from .hostaddr import advertised_host, is_loopback
from .registries import announce, close_opened, open_registry
from .runner import FLUSH_LINGER
from .transports import ChildEnd, Curve, curve_keys, open_child_end

if TYPE_CHECKING:
    from .child import ChildWorker

log = logging.getLogger(__name__)



class ServiceConfigError(ValueError):
    """The service's network or security settings cannot be used (e.g. a bind beyond loopback
    without CURVE and without ``insecure=True``, an unreadable key file)."""


class ServiceStopError(RegistryError):
    """The service stopped cleanly but could not take its registration back."""


def server_curve(secret_key: str | os.PathLike[str] | None,
                 authorized_keys: str | os.PathLike[str] | None) -> Curve | None:
    """The service's CURVE settings from its ``.key_secret`` file and authorized-keys directory."""
    if secret_key is None:
        if authorized_keys is not None:
            raise ServiceConfigError("curve_authorized_keys needs curve_secret_key (the service's own .key_secret file)")
        return None
    keys = curve_keys()
    try:
        public, secret = keys.load_keypair(secret_key)
        allowed = keys.load_authorized_keys(authorized_keys) if authorized_keys is not None else None
    except ValueError as exc:
        raise ServiceConfigError(str(exc)) from None
    return Curve(public, secret, authorized_keys=allowed)


def check_exposure(host: str, curve: Curve | None, insecure: bool) -> None:
    """Refuse (ServiceConfigError, one line) a bind beyond loopback that has no CURVE and no ``insecure=True``."""
    if curve is None and not insecure and not is_loopback(host):
        raise ServiceConfigError(
            f"refusing to serve on {host} without CURVE: make keys with 'multifrost keygen PATH' and pass "
            f"curve_secret_key='PATH.key_secret' (or pass insecure=True to expose every public method unprotected)")


def _bind_url(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


@contextmanager
def serving(worker: ChildWorker) -> Iterator[ChildEnd]:
    """The bound, announced end of ``worker`` (a ChildWorker with a service_id) while the block runs."""
    service_id = worker.service_id
    if service_id is None:
        raise ValueError("only a ChildWorker with a service_id serves as a registered service")
    curve = server_curve(worker.curve_secret_key, worker.curve_authorized_keys)
    check_exposure(worker.host, curve, worker.insecure)
    registry = open_registry(worker.registry)
    try:
        end = open_child_end(_bind_url(worker.host, worker.port), bind=True, **({"curve": curve} if curve else {}))
    except BaseException:
        close_opened(registry, worker.registry)
        raise
    try:
        port = int(end.endpoint.rsplit(":", 1)[1])
        host = advertised_host(worker.host, worker.advertise)
        public_key = curve.public_key.decode() if curve is not None else None
        registration = announce(registry, service_id, port, host=host, curve_public_key=public_key,
                                lease_ttl=worker.lease_ttl)
        try:
            log.info("service %r serving on %s (dial %s:%d%s) registered in %s", worker.service_id, end.endpoint,
                     host, port, ", CURVE" if curve else "", registry.location)
            yield end
        finally:
            try:
                registration.close()
            except RegistryError as exc:
                raise ServiceStopError(str(exc)) from None
    finally:
        end.close(linger=FLUSH_LINGER)
        close_opened(registry, worker.registry)
