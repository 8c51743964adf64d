"""Faults of the machine around a command (issue 23, defects 4, 5, 7, 10 and 11): each ends with
one line naming the problem and the fix, a non-zero exit, no traceback, and nothing half-written.

- a full disk while the SQLite MLflow store is created: nothing is left (no half-built store),
  and the next command, once there is space, creates the store; a store an older version left
  half-built is named as such;
- two processes creating one new SQLite store at once: both use the one store, nothing lost;
- ``--address`` to a port that answers but does not speak Ray's protocol: an error within
  seconds, before any MLflow store is created;
- a driver killed with SIGKILL: the next local Ray start ends the Ray processes it left;
- a local Ray listens on loopback only.

Only loopback addresses are used.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray
import sqlalchemy
import sqlalchemy.exc
from mlflow.tracking import MlflowClient

from fttpo_ray.cli import EXIT_ERROR, main
from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning import runtime
from fttpo_ray.tuning.tracking import create_sqlite_store, open_tracking_store
from tests.helpers import small_disk

REPO = Path(__file__).resolve().parents[2]


def sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db}"


def one_error_line(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """Run ``fttpo ARGS`` in-process: exit status 2, one line on stderr, nothing on stdout."""
    capsys.readouterr()
    rc = main(args)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == EXIT_ERROR, captured
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"fttpo {args[0]}: error: ")
    assert captured.out == ""
    return lines[0]


# ---- the SQLite store: a full disk, a half-built store, two creators -----------------------------


#: Pages a SQLite file may grow to in the "full disk" tests (4 KiB each; MLflow's first tables
#: fit, its migrations do not: a fresh store takes about 230 pages).
FULL_DISK_PAGES = 40


def _limit_size(connection: sqlite3.Connection, _record: object) -> None:
    connection.execute(f"PRAGMA max_page_count = {FULL_DISK_PAGES}")


@contextlib.contextmanager
def full_disk_context() -> Iterator[None]:
    """Every SQLite database opened meanwhile stops growing at :data:`FULL_DISK_PAGES` pages,
    where SQLite fails as on a full disk (SQLITE_FULL, "database or disk is full")."""
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _limit_size)
    try:
        yield
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", _limit_size)


def test_full_disk_while_creating_the_store_leaves_nothing(tmp_path: Path) -> None:
    """The disk fills up during MLflow's schema migrations (where the old, in-place creation left
    a half-built file): one line naming the full disk, no file left; once there is space, the
    same store is created and works."""
    db = tmp_path / "ml.db"
    with full_disk_context(), pytest.raises(ConfigError) as failure:
        open_tracking_store(sqlite_uri(db))
    message = str(failure.value)
    assert "\n" not in message
    assert f"no space left on device in '{tmp_path}'" in message and "free space" in message
    assert list(tmp_path.iterdir()) == []

    client = open_tracking_store(sqlite_uri(db))
    client.create_experiment("after")
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "after"]


def test_half_built_store_is_named_with_the_fix(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """A store left half-built by an in-place creation on a full disk (MLflow's own, or an older
    fttpo), opened once there is space: one line naming it half-built, with the fix (the old
    message quoted MLflow's SQL error and suggested another --mlflow-uri)."""
    db = tmp_path / "ml.db"
    with full_disk_context(), pytest.raises(sqlalchemy.exc.OperationalError):
        MlflowClient(sqlite_uri(db)).search_experiments()
    assert db.exists()
    args = ["report", "--experiment", "x", "--mlflow-uri", sqlite_uri(db), "--out", "r"]
    line = one_error_line(capsys, args)
    assert f"'{db}' is half-built" in line and "delete it and run again" in line


TMPFS_BYTES = 256 * 1024


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (a fresh MLflow store takes about 1 MB)."""
    yield from small_disk(tmp_path / "tiny", f"{TMPFS_BYTES // 1024}k")


@pytest.mark.slow
def test_real_full_disk_while_creating_the_store(tiny_tmpfs: Path) -> None:
    """On a real full file system: nothing left, and once the file system has grown the store is
    created and works (the old creation left a file that MLflow could not open again)."""
    db = tiny_tmpfs / "ml.db"
    with pytest.raises(ConfigError, match="no space left on device"):
        open_tracking_store(sqlite_uri(db))
    assert list(tiny_tmpfs.iterdir()) == []

    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_tmpfs)], check=True)
    client = open_tracking_store(sqlite_uri(db))
    client.create_experiment("after")
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "after"]


def test_a_store_created_meanwhile_by_another_process_is_kept(tmp_path: Path) -> None:
    """A creator that finds, when its store is built, that another process created the store in
    the meantime keeps that store (and what was written in it) and leaves no file of its own."""
    db = tmp_path / "ml.db"
    first = open_tracking_store(sqlite_uri(db))
    first.create_experiment("first")
    create_sqlite_store(db, sqlite_uri(db))
    names = sorted(e.name for e in open_tracking_store(sqlite_uri(db)).search_experiments())
    assert names == ["Default", "first"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml.db"]


#: A process that creates (or opens) a store when ``go`` appears, then adds its experiment.
CREATOR = """
import sys, time
from pathlib import Path
from fttpo_ray.errors import FttpoError
from fttpo_ray.tuning.tracking import create_sqlite_store, open_tracking_store
uri, ready, go, name = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.002)
try:
    open_tracking_store(uri).create_experiment(name)
except FttpoError as err:
    sys.exit(f"error: {err}")
"""
CREATORS = 2
CREATOR_TIMEOUT_S = 120


@pytest.mark.slow
def test_processes_creating_one_store_at_once_share_it(tmp_path: Path) -> None:
    """Two processes create the same new store at the same moment (after their imports): all
    succeed, on one store that holds each one's experiment (the second creator used to fail with
    "duplicate column name" or similar raw SQL)."""
    db = tmp_path / "ml.db"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_LOGGING_LEVEL": "WARNING"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CREATOR,
                sqlite_uri(db),
                str(tmp_path / f"ready{i}"),
                str(go),
                f"sweep{i}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(CREATORS)
    ]
    deadline = time.monotonic() + CREATOR_TIMEOUT_S
    while not all((tmp_path / f"ready{i}").exists() for i in range(CREATORS)):
        assert time.monotonic() < deadline, "the creators did not start"
        time.sleep(0.01)
    go.touch()
    results = [proc.communicate(timeout=CREATOR_TIMEOUT_S) for proc in procs]
    failures = [err for proc, (_, err) in zip(procs, results, strict=True) if proc.returncode != 0]
    assert failures == []
    names = sorted(e.name for e in MlflowClient(sqlite_uri(db)).search_experiments())
    assert names == ["Default", *(f"sweep{i}" for i in range(CREATORS))]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ---- --address to a port that answers but is not Ray -------------------------------------------


class FakeServer:
    """A TCP server on 127.0.0.1 that accepts connections and then ``reply``: ``b""`` says
    nothing (and keeps the connection open), ``None`` closes it, bytes are sent once."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            if self.reply is None:
                connection.close()
                continue
            if self.reply:
                connection.sendall(self.reply)
            self.connections.append(connection)

    def close(self) -> None:
        self.sock.close()
        for connection in self.connections:
            connection.close()


HTTP_REPLY = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
#: Seconds a failing command may take (the check waits 5 s for an answer; the machine is shared).
ADDRESS_CHECK_S = 15.0


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"", "no answer to gRPC's handshake within 5 s"),
        (HTTP_REPLY, "answered gRPC's handshake with b'HTTP/1.1 "),
        (None, "closed the connection"),
    ],
    ids=["silent", "http", "closes"],
)
def test_address_that_answers_but_is_not_ray(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reply: bytes | None,
    reason: str,
) -> None:
    """A port that accepts connections but is no Ray cluster: one line within seconds, before
    any MLflow store is created or Ray started (it used to wait until killed, minutes later,
    leaving an empty store)."""
    from tests.tuning.test_cli_errors import tiny_yaml

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tiny_yaml(tmp_path / "tiny.yaml")
    server = FakeServer(reply)
    try:
        start = time.monotonic()
        line = one_error_line(capsys, ["sweep", str(path), "--address", f"127.0.0.1:{server.port}"])
        seconds = time.monotonic() - start
    finally:
        server.close()
    assert f"127.0.0.1:{server.port} answers but is not a Ray cluster" in line
    assert reason in line and "omit --address" in line
    assert seconds < ADDRESS_CHECK_S
    assert list(cwd.iterdir()) == []
    assert not ray.is_initialized()


# ---- the local Ray: loopback only, and what a killed driver leaves ------------------------------

#: A driver that starts a local Ray as the commands do, runs two tasks (so that workers start),
#: prints its session folder and waits for a line on stdin before it stops Ray.
DRIVER = """
import sys
import ray
from fttpo_ray.tuning.runtime import start_ray, stop_ray
started = start_ray(None)
ray.get([ray.remote(lambda: 0).remote() for _ in range(2)])
print(ray._private.worker._global_node.get_session_dir_path(), flush=True)
sys.stdin.readline()
stop_ray(started)
"""
DRIVER_TIMEOUT_S = 180


@contextlib.contextmanager
def local_driver() -> Iterator[tuple[subprocess.Popen, str]]:
    """A :data:`DRIVER` process (its own session) and its Ray session folder."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        session = proc.stdout.readline().strip()
        assert session, "the driver did not start Ray"
        yield proc, session
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only() -> None:
    """Every socket a local Ray's processes (the driver, GCS, raylet, agents, workers) listen on
    is bound to loopback (they used to listen on all interfaces)."""
    with local_driver() as (proc, _session):
        ray_pids = {proc.pid} | {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        listening = [
            (c.laddr.ip, psutil.Process(c.pid).name())
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in ray_pids
        ]
        proc.communicate("stop\n", timeout=DRIVER_TIMEOUT_S)
    names = {name for _, name in listening}
    assert {"gcs_server", "raylet"} <= names, listening
    assert [(ip, name) for ip, name in listening if not is_loopback(ip)] == []


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid)]


@pytest.mark.slow
def test_processes_left_by_a_killed_driver_are_ended_by_the_next_start() -> None:
    """A driver killed with SIGKILL leaves Ray's dashboard and runtime-env agents running
    (reparented to init); the next command that starts Ray ends them, and only them."""
    with local_driver() as (proc, session):
        proc.kill()
        proc.wait()
    # The GCS and the raylet die with the driver; what still runs a moment later is left over.
    time.sleep(5)
    leftovers = alive(runtime._session_processes(session))
    names = sorted(psutil.Process(pid).name() for pid in leftovers)
    assert names == ["ray::DashboardAgent", "ray::RuntimeEnvAgent"], names
    assert (runtime.drivers_dir() / f"{proc.pid}.json").exists()

    started = runtime.start_ray(None)
    try:
        assert started
        assert alive(leftovers) == []
        assert not (runtime.drivers_dir() / f"{proc.pid}.json").exists()
        own = runtime.drivers_dir() / f"{os.getpid()}.json"
        assert own.exists()
    finally:
        runtime.stop_ray(started)
    assert not own.exists()
