"""An MLflow tracking server as teams run one: ``mlflow server`` with a SQLite backend store and a
local artifact root, proxying artifacts (``--serve-artifacts``, the default), on 127.0.0.1 and a
free port; started and stopped by the caller (a context manager). Used by the tests, the
benchmarks and ``docs/make_dashboard_screenshots.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 10


@dataclass(frozen=True)
class MlflowServer:
    uri: str
    backend_store: Path
    artifact_root: Path
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def mlflow_server(directory: Path, workers: int = 1) -> Iterator[MlflowServer]:
    """``mlflow server`` storing its runs in ``directory/mlflow.db`` and its artifacts in
    ``directory/artifacts``; yields once ``/health`` answers, stops it (SIGTERM) on exit."""
    port = free_port()
    uri = f"http://{HOST}:{port}"
    server = MlflowServer(
        uri=uri,
        backend_store=directory / "mlflow.db",
        artifact_root=directory / "artifacts",
        log=directory / "mlflow-server.log",
    )
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{server.backend_store}",
        "--artifacts-destination",
        str(server.artifact_root),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with server.log.open("ab") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(uri):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = server.log.read_text()[-3000:]
                raise RuntimeError(f"mlflow server did not start:\n{tail}")
            time.sleep(0.5)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
