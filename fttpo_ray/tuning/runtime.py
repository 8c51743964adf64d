"""Ray start-up / connection and the storage directory, with one-line errors for bad input."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning.tracking import NODE_ID, check_reachable, is_writable_dir

logger = logging.getLogger(__name__)

DEFAULT_STORAGE_DIR = "ray_results"
AUTO_ADDRESS = "auto"
RAY_CLIENT_SCHEME = "ray"
DEFAULT_RAY_PORT = 6379
DEFAULT_RAY_CLIENT_PORT = 10001
RAY_DEDUP_LOGS_ENV = "RAY_DEDUP_LOGS"
#: "0" selects Tune's classic reporter, which ``verbose=0`` silences.
TUNE_NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
#: Seconds within which repeated experiment-state snapshots make Tune warn; "0" switches the
#: warning off (it fires whenever trials checkpoint every iteration, as short sweeps do, and
#: advises on Tune settings that the YAML's ``checkpoint`` section already chooses).
TUNE_SNAPSHOT_WARNING_ENV = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
ADDRESS_FIX = "start the cluster (`ray start --head`) or omit --address to run locally"
#: Ray's GCS and its client server speak gRPC, over HTTP/2: a client opens with this preface and a
#: SETTINGS frame, a server answers with a SETTINGS frame (RFC 9113, section 3.4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HTTP2_FRAME_HEADER_BYTES = 9
HTTP2_SETTINGS_TYPE = 0x4
#: Seconds a cluster address has to answer the handshake.
HANDSHAKE_TIMEOUT_S = 5.0
#: Ray's switch for TLS between its processes (the handshake is then TLS's, not checked here).
RAY_USE_TLS_ENV = "RAY_USE_TLS"
#: Ray's token authentication: the mode and the token (or a file holding it), the same in the
#: environment of every node's `ray start` and of the driver (docs/tuning.md, "Cluster use").
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_FIX = (
    f"if the cluster uses token authentication, export {RAY_AUTH_MODE_ENV}=token and its token "
    f"as {RAY_AUTH_TOKEN_ENV} (or {RAY_AUTH_TOKEN_PATH_ENV}), as on its nodes"
)


#: Attribute marking a trainable class as already wrapped by :func:`located`.
_LOCATED_MARK = "_fttpo_located"


def located(trainable: Any) -> type:
    """A subclass of a Tune trainable (a class or a registered name) whose results carry
    :data:`~fttpo_ray.tuning.tracking.NODE_ID`, the id of the Ray node that computed them (Tune
    itself adds ``hostname`` and ``node_ip``, which nodes on one machine share).

    Same name (trial names and the registered name stay), same behaviour otherwise; wrapping a
    wrapped class returns it.
    """
    from ray.rllib.utils.annotations import override

    if isinstance(trainable, str):
        from ray.tune.registry import get_trainable_cls

        trainable = get_trainable_cls(trainable)
    if getattr(trainable, _LOCATED_MARK, False):
        return trainable

    class Located(trainable):
        @override(trainable)
        def get_auto_filled_metrics(self, *args: Any, **kwargs: Any) -> dict:
            import ray

            metrics = super().get_auto_filled_metrics(*args, **kwargs)
            metrics[NODE_ID] = ray.get_runtime_context().get_node_id()
            return metrics

    setattr(Located, _LOCATED_MARK, True)
    Located.__name__ = trainable.__name__
    return Located


def storage_root(storage: str | Path | None) -> Path:
    """The absolute storage directory (``./ray_results`` by default), checked, not created.

    It is made by the first run that writes into it, so a command that fails before leaves no
    empty directory; here its nearest existing ancestor must be a writable directory.
    """
    root = Path(storage or Path.cwd() / DEFAULT_STORAGE_DIR).expanduser().resolve()
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not is_writable_dir(existing):
        reason = "not a directory" if not existing.is_dir() else "not writable"
        raise ConfigError(
            f"cannot write to storage directory '{root}' ('{existing}' is {reason}); "
            "choose a writable directory with --storage"
        )
    return root


def _address_host_port(address: str) -> tuple[str, int] | None:
    if address == AUTO_ADDRESS:
        return None
    parsed = urlparse(address if "://" in address else f"//{address}")
    if not parsed.hostname:
        raise ConfigError(f"--address '{address}' is not HOST:PORT, ray://HOST:PORT or 'auto'")
    default_port = (
        DEFAULT_RAY_CLIENT_PORT if parsed.scheme == RAY_CLIENT_SCHEME else DEFAULT_RAY_PORT
    )
    try:
        port = parsed.port or default_port
    except ValueError:
        raise ConfigError(f"--address '{address}' has an invalid port") from None
    return parsed.hostname, port


def grpc_handshake_failure(host: str, port: int, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> str:
    """Why ``host:port`` is not a gRPC server (Ray's GCS and client server are), or "" if it is:
    it must answer HTTP/2's opening handshake within ``timeout_s``.

    Ray itself does not check: ``ray.init`` on a port that accepts connections but speaks
    another protocol (or nothing) waits for minutes.
    """
    closed = "it closed the connection at gRPC's handshake"
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            header = b""
            while len(header) < HTTP2_FRAME_HEADER_BYTES:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(HTTP2_FRAME_HEADER_BYTES - len(header))
                if not chunk:
                    return closed
                header += chunk
    except TimeoutError:
        return f"no answer to gRPC's handshake within {timeout_s:g} s"
    except ConnectionError:  # reset or broken pipe: closed before or while the preface went out
        return closed
    except OSError as err:
        return err.strerror or type(err).__name__
    if header[3] != HTTP2_SETTINGS_TYPE or header[5:] != bytes(4):
        return f"it answered gRPC's handshake with {header!r}"
    return ""


def check_address(address: str) -> None:
    """:class:`ConfigError` unless ``address`` parses and (unless ``auto``) answers quickly and
    speaks gRPC, as a Ray cluster's GCS (``HOST:PORT``) or client server (``ray://``) does."""
    host_port = _address_host_port(address)
    if host_port is None:
        return
    check_reachable(*host_port, what="the Ray cluster", fix=ADDRESS_FIX)
    if os.environ.get(RAY_USE_TLS_ENV, "0").lower() in ("1", "true"):
        return
    reason = grpc_handshake_failure(*host_port)
    if reason:
        host, port = host_port
        raise ConfigError(
            f"--address '{address}': {host}:{port} answers but is not a Ray cluster ({reason}); "
            "give the address `ray start --head` printed (HOST:6379 unless --port said "
            "otherwise) or omit --address to run locally"
        )


def start_ray(address: str | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray; True if started here.

    An address that does not answer within a few seconds is a :class:`ConfigError` (Ray itself
    would keep retrying for a long time).
    """
    import ray

    # Our progress lines (fttpo_ray.tuning.progress) replace Tune's status tables.
    os.environ.setdefault(TUNE_NEW_OUTPUT_ENV, "0")
    os.environ.setdefault(TUNE_SNAPSHOT_WARNING_ENV, "0")
    if ray.is_initialized():
        return False
    if address:
        check_address(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
            detail = " ".join(str(err).split())[:200]
            auth = "" if os.environ.get(RAY_AUTH_MODE_ENV) == "token" else f"; {AUTH_FIX}"
            raise ConfigError(
                f"cannot connect to the Ray cluster at '{address}': {detail}; {ADDRESS_FIX}{auth}"
            ) from None
        logger.info("Connected to the Ray cluster at %s", address)
        return True
    os.environ.setdefault(RAY_DEDUP_LOGS_ENV, "1")
    ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    logger.info("Started a local Ray instance (%s CPUs)", ray.cluster_resources().get("CPU"))
    return True


def stop_ray(started: bool) -> None:
    """Shut Ray down if this process started or connected it."""
    import ray

    if started and ray.is_initialized():
        ray.shutdown()
