"""A Ray cluster of real processes on this machine, made as docs/tuning.md tells a user to make
one, and a checkpointing trainable for the fault-tolerance tests.

:class:`LocalCluster` runs ``ray start --head`` and ``ray start --address`` (1 CPU per node)
with token authentication — ``RAY_AUTH_MODE=token`` and one ``RAY_AUTH_TOKEN`` in the
environment of every node and of the driver — in its own short temporary directory, each node
with its own (empty) Minari root. Ray binds its servers on every interface and advertises the
machine's address even when told 127.0.0.1, so traffic between these nodes stays on this
machine but not on the loopback interface; the token guards the ports. ``stop`` ends exactly the
processes of this cluster (found by its temporary directory), never ``ray stop``.

``python -m tests.tuning.ray_cluster sweep ...`` is ``fttpo sweep`` with the checkpointing
trainable registered (the driver of the subprocess tests).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from ray import tune

from fttpo_ray import metrics as m

RAY_AUTH_MODE = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN = "RAY_AUTH_TOKEN"
MINARI_ROOT_VARIABLE = "MINARI_DATASETS_PATH"
#: Object store per node: the tests' tables are a few hundred kilobytes.
OBJECT_STORE_BYTES = 100_000_000
START_TIMEOUT_S = 180
STOP_GRACE_S = 3.0

CHECKPOINT_TRAINABLE = "fttpo_checkpointing_toy"
#: Config keys of the checkpointing trainable.
MARKER_DIR = "marker_dir"
SLEEP_S = "sleep_s"
#: A trial holds before reporting this iteration (0: never) ...
HOLD_ITERATION = "hold_iteration"
#: ... if more than this many seeds have started (the ``max_concurrent: 1`` sweeps start one
#: trial after the other), until the test writes :data:`RELEASE_FILE` in the marker directory.
HOLD_AFTER_SEEDS = "hold_after_seeds"
RELEASE_FILE = "release"
#: A held trial that is never released fails after this long (the tests release within
#: seconds, or end the cluster).
HOLD_TIMEOUT_S = 600
HOLD_POLL_S = 0.05
STATE_FILE = "state.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ray_executable() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class Node:
    name: str
    minari_root: Path
    node_manager_port: int


@dataclass
class LocalCluster:
    """A head node and worker nodes started with ``ray start`` (see the module docstring)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="r13")))
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, minari_root: Path | None = None) -> dict[str, str]:
        """The environment of a node or of a driver: the token, and a Minari root."""
        env = dict(os.environ)
        env.update(
            {
                RAY_AUTH_MODE: "token",
                RAY_AUTH_TOKEN: self.token,
                "RAY_USAGE_STATS_ENABLED": "0",
                "OMP_NUM_THREADS": "1",
            }
        )
        if minari_root is not None:
            env[MINARI_ROOT_VARIABLE] = str(minari_root)
        return env

    def _start(self, name: str, args: list[str]) -> Node:
        minari_root = self.root / f"minari-{name}"
        minari_root.mkdir()
        node = Node(name, minari_root, free_port())
        command = [
            ray_executable(),
            "start",
            *args,
            "--num-cpus=1",
            f"--node-manager-port={node.node_manager_port}",
            f"--temp-dir={self.root / 'ray'}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
        ]
        done = subprocess.run(
            command,
            env=self.env(minari_root),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        self.nodes.append(node)
        return node

    def start_head(self) -> Node:
        return self._start(
            "head",
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                "--include-dashboard=false",
            ],
        )

    def add_worker(self, name: str) -> Node:
        return self._start(name, [f"--address={self.address}"])

    def raylet(self, node: Node) -> psutil.Process:
        """The raylet process of ``node`` (found by its node-manager port)."""
        flag = f"--node_manager_port={node.node_manager_port}"
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] == "raylet" and flag in (proc.info["cmdline"] or []):
                return proc
        raise LookupError(f"no raylet with {flag}")

    def kill_node(self, node: Node) -> None:
        """Kill the node's raylet (SIGKILL): the node dies with its workers."""
        self.raylet(node).kill()

    def processes(self) -> list[psutil.Process]:
        marker = str(self.root)
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        return found

    def stop(self) -> None:
        """End every process of this cluster (SIGTERM, then SIGKILL) and remove its files."""
        procs = self.processes()
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=STOP_GRACE_S)
        shutil.rmtree(self.root, ignore_errors=True)


def minari_files(root: Path) -> list[Path]:
    """Every file under a Minari root (an empty root stays empty when no dataset is read)."""
    return [path for path in root.rglob("*") if path.is_file()]


# ---- a trainable that checkpoints every iteration ----------------------------------------------


def release(markers: Path) -> None:
    """Let every held trial (see :data:`HOLD_ITERATION`) go on, now and later."""
    (markers / RELEASE_FILE).touch()


def hold(markers: Path) -> None:
    """Wait until :func:`release`; fail after :data:`HOLD_TIMEOUT_S`."""
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while not (markers / RELEASE_FILE).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"held for {HOLD_TIMEOUT_S} s and never released")
        time.sleep(HOLD_POLL_S)


def checkpointing_trainable(config: dict[str, Any]) -> None:
    """Reports ``evaluation/thin/episode_return_mean = iteration + 0.1 * seed`` every
    ``sleep_s`` seconds, with a checkpoint of its iteration each time; restored from a
    checkpoint it continues after that iteration. Each start leaves a marker file
    ``start_seed<seed>_from<iteration>_<pid>`` holding the node's Minari root (the nodes' roots
    differ, so the marker tells which node the trial started on).

    Before reporting iteration ``hold_iteration`` a trial holds (:func:`hold`) when more than
    ``hold_after_seeds`` seeds have started: the tests kill a node or the driver while trials
    are held at a known iteration, and release them afterwards, so that what a kill
    interrupts does not depend on timing."""
    seed = int(config["seed"])
    markers = Path(config[MARKER_DIR])
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = int(json.loads((Path(directory) / STATE_FILE).read_text())["iteration"])
    node_root = os.environ.get(MINARI_ROOT_VARIABLE, "")
    (markers / f"start_seed{seed}_from{start}_{os.getpid()}").write_text(node_root)
    hold_iteration = int(config.get(HOLD_ITERATION, 0))
    for iteration in range(start + 1, 10_000):
        if iteration == hold_iteration and started_seeds(markers) > int(
            config.get(HOLD_AFTER_SEEDS, 0)
        ):
            hold(markers)
        time.sleep(float(config[SLEEP_S]))
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / STATE_FILE).write_text(json.dumps({"iteration": iteration}))
            tune.report(
                {
                    m.EVALUATION_PREFIX: {
                        m.THIN: {m.EPISODE_RETURN_MEAN: iteration + 0.1 * seed},
                    },
                },
                checkpoint=tune.Checkpoint.from_directory(directory),
            )
        (markers / f"iter_seed{seed}_{iteration}").write_text(node_root)


def register() -> None:
    """Register :func:`checkpointing_trainable` with Tune, pickled by value for the workers."""
    import cloudpickle

    import tests.tuning.ray_cluster as module

    cloudpickle.register_pickle_by_value(module)
    tune.register_trainable(CHECKPOINT_TRAINABLE, checkpointing_trainable)


def checkpointing_yaml(
    path: Path,
    *,
    seeds: list[int],
    iterations: int,
    marker_dir: Path,
    sleep_s: float,
    max_concurrent: int = 0,
    max_failures: int = 2,
    log_checkpoint: bool = False,
    hold_iteration: int = 0,
    hold_after_seeds: int = 0,
) -> Path:
    """An experiment YAML with one run of the checkpointing trainable, one trial per seed."""
    data = {
        "dataset": {"env": "fttpo/TreatmentSim-v0", "id": "fttpo/treatment/random-v0"},
        "evaluation": {"episodes": 1},
        "max_concurrent": max_concurrent,
        "max_failures": max_failures,
        "mlflow": {"log_checkpoint": log_checkpoint},
        "runs": [
            {
                "algorithm": CHECKPOINT_TRAINABLE,
                "config": {
                    MARKER_DIR: str(marker_dir),
                    SLEEP_S: sleep_s,
                    HOLD_ITERATION: hold_iteration,
                    HOLD_AFTER_SEEDS: hold_after_seeds,
                },
                "name": "ckpt",
            }
        ],
        "seeds": seeds,
        "stop": {"iterations": iterations},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return path


def starts(markers: Path) -> list[tuple[int, int, str]]:
    """``(seed, restored iteration, node Minari root)`` of every trial start, in no order."""
    found = []
    for marker in markers.glob("start_seed*"):
        seed, start, _ = marker.name.removeprefix("start_seed").split("_")
        found.append((int(seed), int(start.removeprefix("from")), marker.read_text()))
    return found


def start_pids(markers: Path, node_root: str) -> list[int]:
    """The process ids of the trial starts on the node whose Minari root is ``node_root``."""
    return [
        int(marker.name.rsplit("_", 1)[1])
        for marker in markers.glob("start_seed*")
        if marker.read_text() == node_root
    ]


def started_seeds(markers: Path) -> int:
    """How many different seeds have started a trial."""
    return len({seed for seed, _, _ in starts(markers)})


def driver(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``fttpo sweep``-style CLI in a new process (its own process group), with the
    checkpointing trainable registered; stdout and stderr go to ``log``."""
    repo = Path(__file__).resolve().parents[2]
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.tuning.ray_cluster", *args],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def end_driver(proc: subprocess.Popen) -> None:
    """Kill a driver started by :func:`driver` and its process group, if still running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


if __name__ == "__main__":
    from fttpo_ray.cli import main

    register()
    sys.exit(main(sys.argv[1:]))
