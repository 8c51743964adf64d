"""``fttpo sweep --mlflow-uri http://127.0.0.1:PORT``: a sweep tracked by an MLflow tracking server
run as teams run one (``mlflow server``, SQLite backend store, local artifact root, artifacts
proxied by the server), started and stopped by the test
(``fttpo_ray/reporting/mlflow_server.py``). Runs, params, metrics and artifacts (each trial's
``config.json`` and final checkpoint, the sweep's YAML and report) reach the server over HTTP
and land in its stores, none in the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fttpo_ray.reporting.mlflow_server import mlflow_server
from fttpo_ray.tuning import tracking as tr
from tests.helpers import run_cli
from tests.tuning import ray_cluster

pytestmark = pytest.mark.slow

ITERATIONS = 2
SEEDS = [0, 1]


def test_sweep_logs_to_an_mlflow_server_over_http(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray_cluster.register()
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    markers = tmp_path / "markers"
    markers.mkdir()
    path = ray_cluster.checkpointing_yaml(
        workdir / "served.yaml",
        seeds=SEEDS,
        iterations=ITERATIONS,
        marker_dir=markers,
        sleep_s=0.0,
        log_checkpoint=True,
    )
    with mlflow_server(tmp_path) as server:
        rc, stdout, _ = run_cli(
            ["sweep", str(path), "--mlflow-uri", server.uri, "--storage", "results"]
        )
        assert rc == 0, stdout
        assert server.uri in stdout

        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("served")
        runs = client.search_runs([experiment.experiment_id])
        sweeps = [r for r in runs if r.data.tags[tr.KIND_TAG] == tr.KIND_SWEEP]
        trials = [r for r in runs if r.data.tags[tr.KIND_TAG] == tr.KIND_TRIAL]
        assert len(sweeps) == 1 and len(trials) == len(SEEDS)
        assert {r.info.status for r in runs} == {tr.FINISHED}
        sweep_artifacts = {a.path for a in client.list_artifacts(sweeps[0].info.run_id)}
        assert {"experiment.yaml", "report"} <= sweep_artifacts
        for run in trials:
            assert run.data.tags[tr.SWEEP_RUN_ID_TAG] == sweeps[0].info.run_id
            assert run.data.tags[tr.NODE_ID_TAG]
            history = client.get_metric_history(run.info.run_id, tr.TRAINING_ITERATION)
            assert sorted(p.step for p in history) == list(range(1, ITERATIONS + 1))
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {tr.CONFIG_ARTIFACT, tr.CHECKPOINT_ARTIFACT_DIR} <= names
            checkpoint = client.list_artifacts(run.info.run_id, tr.CHECKPOINT_ARTIFACT_DIR)
            assert [Path(a.path).name for a in checkpoint] == [ray_cluster.STATE_FILE]

    # The artifacts are in the server's artifact root, nothing in the client's directory.
    stored = list(server.artifact_root.rglob(tr.CONFIG_ARTIFACT))
    assert len(stored) == len(SEEDS)
    assert len(list(server.artifact_root.rglob(ray_cluster.STATE_FILE))) == len(SEEDS)
    assert server.backend_store.exists()
    assert sorted(p.name for p in workdir.iterdir()) == ["results", "served.yaml"]
