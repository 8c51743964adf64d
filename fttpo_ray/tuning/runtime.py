"""Ray start-up / connection and the storage directory, with one-line errors for bad input."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
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
#: Ray's switch between a node that others can join and a single machine: "0" (Ray's default on
#: macOS and Windows) makes a node take 127.0.0.1 as its address, and its servers (GCS, raylet,
#: object manager, workers, agents) then listen on loopback only; read when Ray is imported.
RAY_CLUSTER_MODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Folder, in Ray's temporary directory, holding one record per running driver that started a
#: local Ray (:func:`end_leftovers`).
DRIVERS_DIR_NAME = "fttpo_drivers"
#: Seconds the Ray processes of a dead driver get to end after SIGTERM (Ray's agents ignore it).
LEFTOVER_TERM_S = 3.0
#: Where Linux describes processes.
PROC = Path("/proc")
#: Field of /proc/PID/stat (after the command) holding the process's start time: 22 - 3.
STAT_START_FIELD = 19
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


# ---- the local Ray: loopback only, and what a killed driver left ------------------------------


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """While Ray starts a local node: the node takes 127.0.0.1 as its address, so that its
    servers listen on loopback only (:data:`RAY_CLUSTER_MODE_ENV`, as Ray does by itself on
    macOS and Windows; ``ray.init(_node_ip_address="127.0.0.1")`` is replaced by the machine's
    routable address). The driver's Ray module read the variable when it was imported: its
    value is set for the call too."""
    from ray._private import ray_constants

    saved_env = os.environ.get(RAY_CLUSTER_MODE_ENV)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[RAY_CLUSTER_MODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(RAY_CLUSTER_MODE_ENV, None)
        else:
            os.environ[RAY_CLUSTER_MODE_ENV] = saved_env


def drivers_dir() -> Path:
    """The folder of the records of drivers that started a local Ray (:func:`end_leftovers`)."""
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir()) / DRIVERS_DIR_NAME


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), None if there is none."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[STAT_START_FIELD])


def _record_driver(session_dir: str) -> None:
    """Record that this process drives the local Ray whose session folder is ``session_dir``."""
    start = _start_time(os.getpid())
    if start is None:  # no /proc: nothing to clean up later either
        return
    record = {"pid": os.getpid(), "start": start, "session_dir": session_dir}
    try:
        folder = drivers_dir()
        folder.mkdir(parents=True, exist_ok=True)
        # Written whole (a reader never sees half a record, see end_leftovers).
        partial = folder / f".{os.getpid()}.json.partial"
        partial.write_text(json.dumps(record), encoding="utf-8")
        partial.replace(folder / f"{os.getpid()}.json")
    except OSError as err:
        logger.debug("Cannot record the local Ray of this driver: %s", err)


def _forget_driver() -> None:
    with contextlib.suppress(OSError):
        (drivers_dir() / f"{os.getpid()}.json").unlink(missing_ok=True)


def _session_processes(session_dir: str) -> list[int]:
    """Pids of this user's processes of the Ray session ``session_dir``: those that name it on
    their command line (GCS, raylet, monitors) or hold a file open in it (every Ray process holds
    its log files; the agents rename their command line, so only this finds them)."""
    inside = session_dir.rstrip("/") + "/"
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            found = inside.encode() in (entry / "cmdline").read_bytes()
            found = found or any(
                os.readlink(fd).startswith(inside) for fd in (entry / "fd").iterdir()
            )
        except OSError:  # gone meanwhile, or another user's
            continue
        if found:
            pids.append(int(entry.name))
    return pids


def _end(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL for what still runs after :data:`LEFTOVER_TERM_S`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + LEFTOVER_TERM_S
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _start_time(pid) is not None]
            time.sleep(0.05)
        if not pids:
            return


def end_leftovers() -> int:
    """End the Ray processes of local Ray nodes whose driver died without stopping them (a
    SIGKILL leaves Ray's dashboard and runtime-env agents running, reparented to init, one
    listening on the network); returns how many were ended.

    Every driver that starts a local Ray records its pid, start time and Ray session folder
    (:func:`drivers_dir`) and removes the record when it stops Ray; a record whose driver no
    longer runs names a session whose processes are left over: those (this user's processes of
    that session) are ended as ``ray stop`` would, for that session only.
    """
    folder = drivers_dir()
    if not folder.is_dir():
        return 0
    ended = 0
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, start = int(record["pid"]), int(record["start"])
            session_dir = str(record["session_dir"])
        except OSError:
            continue
        except (ValueError, KeyError, TypeError):  # not a record of this version: of no use
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if _start_time(pid) == start:
            continue
        pids = _session_processes(session_dir)
        if pids:
            logger.info(
                "Ending %d Ray process(es) left by driver %d, which was killed (Ray session %s)",
                len(pids),
                pid,
                session_dir,
            )
            _end(pids)
            ended += len(pids)
        with contextlib.suppress(OSError):
            path.unlink()
    return ended


def start_ray(address: str | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray; True if started here.

    An address that does not answer within a few seconds is a :class:`ConfigError` (Ray itself
    would keep retrying for a long time). A local Ray listens on loopback only
    (:func:`_loopback_only`); the Ray processes a killed driver left are ended first
    (:func:`end_leftovers`).
    """
    import ray

    # Our progress lines (fttpo_ray.tuning.progress) replace Tune's status tables.
    os.environ.setdefault(TUNE_NEW_OUTPUT_ENV, "0")
    os.environ.setdefault(TUNE_SNAPSHOT_WARNING_ENV, "0")
    if ray.is_initialized():
        return False
    end_leftovers()
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
    with _loopback_only():
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    _record_driver(ray._private.worker._global_node.get_session_dir_path())
    logger.info("Started a local Ray instance (%s CPUs)", ray.cluster_resources().get("CPU"))
    return True


def stop_ray(started: bool) -> None:
    """Shut Ray down if this process started or connected it."""
    import ray

    if started and ray.is_initialized():
        ray.shutdown()
        _forget_driver()
