"""Sweeps on a Ray cluster of real processes (``ray start`` head and worker nodes on this machine,
1 CPU each, token authentication as docs/tuning.md shows; see tests/tuning/ray_cluster.py):

- FtTPO trials on both nodes, neither node having the dataset on its disk (the table comes from
  Ray's object store), the node of each trial recorded in Tune's results and in MLflow;
- a worker node killed (its raylet) while its trial runs: the trial restarts from its last
  checkpoint on the surviving node and the sweep finishes, one MLflow run per trial, each step
  logged once;
- the driver killed with SIGKILL mid-sweep, then ``--resume``: finished trials are not re-run,
  MLflow holds every step of every trial exactly once.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fttpo_ray.tuning import tracking as tr
from tests.tuning.ray_cluster import (
    RAY_AUTH_MODE,
    RAY_AUTH_TOKEN,
    LocalCluster,
    checkpointing_yaml,
    driver,
    end_driver,
    minari_files,
    release,
    start_pids,
    starts,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RETURN_KEY = "evaluation/thin/episode_return_mean"
SWEEP_TIMEOUT_S = 420
POLL_S = 0.5
#: Seconds between the checkpointing trainable's reports (the kills wait for events, not time).
SLEEP_S = 0.2


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """A fresh cluster (a head node) per test: a worker node another test added would otherwise
    stay in the cluster and take trials (or a restarted trial) that a test expects elsewhere."""
    ray_cluster = LocalCluster()
    try:
        ray_cluster.start_head()
        yield ray_cluster
    finally:
        ray_cluster.stop()


def trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRIAL}'"
    )


def steps(uri: str, run_id: str, key: str = tr.TRAINING_ITERATION) -> list[tuple[int, float]]:
    history = MlflowClient(uri).get_metric_history(run_id, key)
    return sorted((int(point.step), point.value) for point in history)


def wait_for(condition, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the driver ended before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(POLL_S)


def finish(proc: subprocess.Popen, log: Path) -> int:
    try:
        return proc.wait(timeout=SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        end_driver(proc)
        raise AssertionError(f"the sweep did not finish:\n{log.read_text()[-4000:]}") from None


def test_a_driver_without_the_token_is_refused_with_the_fix(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    path = checkpointing_yaml(
        tmp_path / "no_token.yaml", seeds=[0], iterations=1, marker_dir=tmp_path, sleep_s=0.0
    )
    env = cluster.env(tmp_path)
    del env[RAY_AUTH_MODE], env[RAY_AUTH_TOKEN]
    done = subprocess.run(
        [sys.executable, "-m", "tests.tuning.ray_cluster", "sweep", path, "--address",
         cluster.address, "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("fttpo sweep: error:")]
    assert len(lines) == 1
    assert f"cannot connect to the Ray cluster at '{cluster.address}'" in lines[0]
    assert "RAY_AUTH_MODE=token" in lines[0] and "RAY_AUTH_TOKEN" in lines[0]


def tiny_fttpo_yaml(path: Path) -> Path:
    data = {
        # Two trials at once, one per node: a trial of a few seconds must not take over the
        # other's actor (reuse) before that one has started on the second node.
        "resources": {"reuse_actors": False},
        "checkpoint": {"at_end": True, "frequency": 1, "num_to_keep": 1},
        "dataset": {
            "env": "fttpo/TreatmentSim-v0",
            "episodes": 5,
            "id": "fttpo/treatment/random-v0",
        },
        "evaluation": {"episodes": 2},
        "runs": [
            {
                "algorithm": "FtTPO",
                "config": {
                    "model_config": {"fcnet_hiddens": [16, 16]},
                    "num_gradient_steps_per_iteration": 5,
                    "train_batch_size_per_learner": 32,
                },
                "name": "fttpo",
            }
        ],
        "seeds": [0, 1],
        "stop": {"iterations": 2},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


def result_node_ids(storage: Path) -> dict[str, set[str]]:
    """Tune's ``node_id`` result field of every trial (its result.json lines), by trial id."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for path in storage.rglob("result.json"):
        for line in path.read_text().splitlines():
            result = json.loads(line)
            found[result["trial_id"]].add(result[tr.NODE_ID])
    return dict(found)


def test_fttpo_sweep_on_two_nodes_without_the_dataset_on_any_node(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    worker = cluster.add_worker("worker")
    driver_root = tmp_path / "minari-driver"
    driver_root.mkdir()
    path = tiny_fttpo_yaml(tmp_path / "two_nodes.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "results"
    fttpo = Path(sys.executable).with_name("fttpo")
    done = subprocess.run(
        [fttpo, "sweep", path, "--address", cluster.address, "--mlflow-uri", uri,
         "--storage", storage],
        env=cluster.env(driver_root),
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "shared through Ray's object store" in done.stderr
    # The driver collected the dataset on its own disk; neither node has a file of it.
    assert minari_files(driver_root)
    for node in cluster.nodes:
        assert minari_files(node.minari_root) == [], node.name
    assert worker in cluster.nodes

    by_trial = result_node_ids(storage)
    assert len(by_trial) == 2 and all(len(ids) == 1 for ids in by_trial.values())
    node_ids = {next(iter(ids)) for ids in by_trial.values()}
    assert len(node_ids) == 2, "the two trials ran on the same node"
    runs = trial_runs(uri, "two_nodes")
    assert len(runs) == 2
    assert {run.data.tags[tr.NODE_ID_TAG] for run in runs} == node_ids
    for run in runs:
        assert run.info.status == tr.FINISHED
        assert run.data.tags[tr.HOSTNAME_TAG]
        assert run.data.tags[tr.NODES_TAG] == run.data.tags[tr.NODE_ID_TAG]
        assert [step for step, _ in steps(uri, run.info.run_id)] == [1, 2]


def ended(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts: nothing may reap it here)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def seed_steps(uri: str, experiment: str, seed: int) -> list[int]:
    """The iterations MLflow holds for the trial of ``seed`` (none before its run exists)."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRIAL}' and params.seed = '{seed}'",
    )
    return [step for run in runs for step, _ in steps(uri, run.info.run_id, RETURN_KEY)]


def test_a_trial_survives_the_death_of_its_node(cluster: LocalCluster, tmp_path: Path) -> None:
    iterations, held_after = 8, 3
    victim = cluster.add_worker("victim")
    head = cluster.nodes[0]
    markers = tmp_path / "markers"
    markers.mkdir()
    # Both trials (one per node) hold after iteration 3 until released: the victim dies with
    # its trial at a known iteration, never after the trial has ended.
    path = checkpointing_yaml(
        tmp_path / "node_death.yaml", seeds=[0, 1], iterations=iterations, marker_dir=markers,
        sleep_s=SLEEP_S, hold_iteration=held_after + 1,
    )  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = tmp_path / "driver.log"
    args = ["sweep", str(path), "--address", cluster.address, "--mlflow-uri", uri,
            "--storage", str(tmp_path / "results")]  # fmt: skip
    proc = driver(args, cluster.env(tmp_path), log)
    try:

        def driver_logged_the_victims_iteration_3() -> bool:
            on_victim = [s for s, _, root in starts(markers) if root == str(victim.minari_root)]
            return bool(on_victim) and held_after in seed_steps(uri, "node_death", on_victim[0])

        wait_for(driver_logged_the_victims_iteration_3,
                 "the driver to log iteration 3 of the trial on the worker node",
                 proc, log)  # fmt: skip
        (pid,) = start_pids(markers, str(victim.minari_root))
        cluster.kill_node(victim)
        # The trial's process outlives its raylet for a moment; released before it is gone, the
        # trial would finish on the dead node (the driver talks to it directly).
        wait_for(lambda: ended(pid), "the trial on the killed node to end",
                 proc, log)  # fmt: skip
        release(markers)
        assert finish(proc, log) == 0, log.read_text()[-4000:]
    finally:
        end_driver(proc)

    started = starts(markers)
    on_victim = [seed for seed, _, root in started if root == str(victim.minari_root)]
    assert len(on_victim) == 1
    seed = on_victim[0]
    restarts = sorted((start, root) for s, start, root in started if s == seed)
    assert len(restarts) == 2
    (first, _), (resumed_from, root) = restarts
    # Restarted on the head from the last checkpoint the driver had registered: iteration 3's,
    # or iteration 2's when the kill landed between the driver logging result 3 and registering
    # its checkpoint (Tune registers a checkpoint after the result's callbacks; it processes
    # result 3 only once checkpoint 2 is registered).
    assert first == 0 and resumed_from in (held_after - 1, held_after)
    assert root == str(head.minari_root)

    runs = trial_runs(uri, "node_death")
    assert sorted(int(run.data.params["seed"]) for run in runs) == [0, 1]
    for run in runs:
        assert run.info.status == tr.FINISHED
        run_seed = int(run.data.params["seed"])
        # Every iteration logged exactly once, values continuous across the restart.
        assert steps(uri, run.info.run_id, RETURN_KEY) == [
            (i, pytest.approx(i + 0.1 * run_seed)) for i in range(1, iterations + 1)
        ]
        nodes = run.data.tags[tr.NODES_TAG].split(",")
        assert len(nodes) == (2 if run_seed == seed else 1)


def snapshot_statuses(run_dir: Path) -> dict[str, str]:
    """Trial id -> status in the latest experiment state Tune saved under ``run_dir``."""
    states = sorted(run_dir.rglob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (OSError, ValueError):  # being replaced
        return {}
    found = {}
    for entry in data.get("trial_data", []):
        trial = json.loads(entry[0]) if isinstance(entry, list) else entry
        found[trial["trial_id"]] = trial["status"]
    return found


def test_a_driver_killed_with_sigkill_resumes(cluster: LocalCluster, tmp_path: Path) -> None:
    seeds, iterations = [0, 1, 2, 3, 4], 4
    markers = tmp_path / "markers"
    markers.mkdir()
    # One trial at a time; the third to start holds before its first report until released, so
    # the driver is killed with exactly two trials finished, whatever the machine's load.
    path = checkpointing_yaml(
        tmp_path / "driver_kill.yaml", seeds=seeds, iterations=iterations, marker_dir=markers,
        sleep_s=SLEEP_S, max_concurrent=1, hold_iteration=1, hold_after_seeds=2,
    )  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "results"
    log = tmp_path / "driver.log"
    args = ["sweep", str(path), "--address", cluster.address, "--mlflow-uri", uri,
            "--storage", str(storage)]  # fmt: skip
    env = cluster.env(tmp_path)
    proc = driver(args, env, log)
    saved: dict[str, str] = {}
    try:

        def two_finished_in_saved_state() -> bool:
            saved.update(snapshot_statuses(storage))
            return sum(status == "TERMINATED" for status in saved.values()) == 2

        wait_for(two_finished_in_saved_state, "two finished trials in Tune's saved state",
                 proc, log)  # fmt: skip
    finally:
        end_driver(proc)  # SIGKILL: no handler runs, nothing is saved
    assert proc.returncode == -9
    release(markers)

    resumed = driver([*args, "--resume"], env, log)
    try:
        assert finish(resumed, log) == 0, log.read_text()[-4000:]
    finally:
        end_driver(resumed)

    finished_before = {tid for tid, status in saved.items() if status == "TERMINATED"}
    assert len(finished_before) == 2
    runs = trial_runs(uri, "driver_kill")
    assert sorted(int(run.data.params["seed"]) for run in runs) == seeds
    count = collections.Counter(seed for seed, _, _ in starts(markers))
    for run in runs:
        seed = int(run.data.params["seed"])
        assert run.info.status == tr.FINISHED
        assert steps(uri, run.info.run_id, RETURN_KEY) == [
            (i, pytest.approx(i + 0.1 * seed)) for i in range(1, iterations + 1)
        ]
        if run.data.tags[tr.TRIAL_ID_TAG] in finished_before:
            assert count[seed] == 1, f"finished trial (seed {seed}) was run again"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("driver_kill")
    sweeps = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tr.KIND_TAG}` = '{tr.KIND_SWEEP}'"
    )
    assert [run.info.status for run in sweeps] == [tr.FINISHED]
