"""End to end with real Ray, Tune, RLlib and MLflow on tiny data: ``fttpo sweep`` on a shrunk
quickstart (FtTPO and RAR, RLlib's IQL; one seed, two iterations of five gradient steps), then
what it left in MLflow, ``fttpo report``, ``fttpo eval`` and ``fttpo train``.
One sweep is shared by the module (about a minute on two cores)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fttpo_ray.reporting.report import RESULTS_CSV, RESULTS_MD, TRIALS_CSV
from fttpo_ray.tuning import tracking as tr
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "tiny_quickstart"
ITERATIONS = 2
TRIALS = 3  # fttpo, rar (one seed) + iql

pytestmark = pytest.mark.slow


@dataclass
class Sweep:
    yaml: Path
    uri: str
    storage: Path
    rc: int
    stdout: str
    client: MlflowClient


def tiny_quickstart(path: Path) -> Path:
    """quickstart.yaml with the fttpo run (fttpo, rar) and iql, shrunk to seconds."""
    data = yaml.safe_load((REPO / "tune_configs" / "quickstart.yaml").read_text())
    runs = {run["name"]: run for run in data["runs"]}
    fttpo, iql = runs["fttpo"], runs["iql"]
    fttpo["search"]["variant"] = {"grid_search": ["fttpo", "rar"]}
    fttpo.setdefault("config", {}).update(
        num_gradient_steps_per_iteration=5,
        train_batch_size_per_learner=32,
        model_config={"fcnet_hiddens": [16, 16]},
    )
    iql["config"].update(
        dataset_num_iters_per_learner=5,
        train_batch_size_per_learner=32,
        model_config={"fcnet_hiddens": [16, 16]},
    )
    data["runs"] = [fttpo, iql]
    data["seeds"] = [0]
    data["evaluation"]["episodes"] = 3
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> Sweep:
    root = tmp_path_factory.mktemp("sweep")
    path = tiny_quickstart(root / f"{EXPERIMENT}.yaml")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    storage = root / "ray_results"
    rc, stdout, _ = run_cli(
        [
            "sweep",
            str(path),
            "--mlflow-uri",
            uri,
            "--storage",
            str(storage),
            "--iterations",
            str(ITERATIONS),
        ]
    )
    return Sweep(path, uri, storage, rc, stdout, MlflowClient(uri))


def runs_of(sweep: Sweep, kind: str) -> list:
    experiment = sweep.client.get_experiment_by_name(EXPERIMENT)
    return sweep.client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tr.KIND_TAG}` = '{kind}'"
    )


def test_sweep_prints_the_table_and_where_to_look(sweep: Sweep) -> None:
    assert sweep.rc == 0
    assert f"Results of '{EXPERIMENT}' ({TRIALS} trials, 0 failed" in sweep.stdout
    table = [line for line in sweep.stdout.splitlines() if line.startswith("| ")]
    rows = {tuple(c.strip() for c in line.strip("| ").split("|")[:2]) for line in table[2:]}
    assert rows == {("fttpo", "fttpo"), ("fttpo", "rar"), ("iql", "iql")}
    assert any("| fttpo | fttpo" in line and "| thin" in line for line in table)
    assert any("| iql" in line and "| fat" in line for line in table)
    assert f"mlflow ui --backend-store-uri {sweep.uri}" in sweep.stdout
    exp_id = sweep.client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=" in sweep.stdout
    assert str(sweep.storage / EXPERIMENT) in sweep.stdout


def test_one_sweep_run_and_one_top_level_run_per_trial(sweep: Sweep) -> None:
    (parent,) = runs_of(sweep, tr.KIND_SWEEP)
    trials = runs_of(sweep, tr.KIND_TRIAL)
    assert len(trials) == TRIALS
    assert parent.info.status == tr.FINISHED
    for run in trials:
        assert run.data.tags[tr.SWEEP_RUN_ID_TAG] == parent.info.run_id
        assert tr.PARENT_RUN_ID_TAG not in run.data.tags  # listed and charted on first open
        assert run.info.status == tr.FINISHED
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "fttpo/treatment/random-v0"
    names = sorted(run.info.run_name for run in trials)
    assert names == [
        "fttpo fat_q=2 thin_q=0 kl_weight=0.1 seed=0",
        "fttpo rar fat_q=2 thin_q=0 kl_weight=0.1 seed=0",
        "iql seed=0",
    ]


def test_trial_params_are_the_yaml_keys_plus_identity(sweep: Sweep) -> None:
    trials = runs_of(sweep, tr.KIND_TRIAL)
    variants = sorted(run.data.params["variant"] for run in trials)
    assert variants == ["fttpo", "iql", "rar"]
    fttpo = next(run for run in trials if run.data.params["variant"] == "fttpo")
    params = fttpo.data.params
    assert params["algorithm"] == "FtTPO"
    assert params["run"] == "fttpo"
    assert params["env"] == "fttpo/TreatmentSim-v0"
    assert params["dataset_id"] == "fttpo/treatment/random-v0"
    assert params["seed"] == "0"
    assert (params["fat_q"], params["thin_q"], params["kl_weight"]) == ("2.0", "0.0", "0.1")
    assert params["num_gradient_steps_per_iteration"] == "5"
    assert json.loads(params["model_config"]) == {"fcnet_hiddens": [16, 16]}
    assert len(params) < 40  # what the YAML sets, not RLlib's few hundred config keys
    iql = next(run for run in trials if run.data.params["algorithm"] == "IQL")
    assert iql.data.params["beta"] == "1.0"  # set by the YAML (its expectile is the default)


def test_metrics_per_iteration_with_the_documented_names(sweep: Sweep) -> None:
    trials = runs_of(sweep, tr.KIND_TRIAL)
    allowed = set(tr.tracked_metric_names())
    for run in trials:
        sections = ("selection/", "selected/") if run.data.params["algorithm"] == "FtTPO" else ()
        assert {k for k in run.data.metrics if not k.startswith(sections)} <= allowed
        key = (
            "evaluation/fat/episode_return_mean"
            if run.data.params["algorithm"] == "IQL"
            else "evaluation/thin/episode_return_mean"
        )
        history = sweep.client.get_metric_history(run.info.run_id, key)
        assert sorted(point.step for point in history) == list(range(1, ITERATIONS + 1))
        assert "evaluation/thin/violation_rate" in run.data.metrics or key.startswith(
            "evaluation/fat"
        )
        assert "learner/critic_loss" in run.data.metrics
    fttpo = next(run for run in trials if run.data.params["variant"] == "fttpo")
    for name in (
        "evaluation/fat/violation_rate",
        "evaluation/thin/support_halfwidth_mean",
        "learner/thin_loss",
        "learner/grad_steps_per_s",
        "selection/td_error",
        "selected/iteration",
    ):
        assert name in fttpo.data.metrics


def test_artifacts_config_json_and_final_checkpoint(sweep: Sweep, tmp_path: Path) -> None:
    for run in runs_of(sweep, tr.KIND_TRIAL):
        names = {a.path for a in sweep.client.list_artifacts(run.info.run_id)}
        assert {tr.CONFIG_ARTIFACT, tr.CHECKPOINT_ARTIFACT_DIR} <= names
        local = Path(sweep.client.download_artifacts(run.info.run_id, tr.CONFIG_ARTIFACT, tmp_path))
        config = json.loads(local.read_text())
        assert config["seed"] == 0
        ckpt = {a.path for a in sweep.client.list_artifacts(run.info.run_id, "checkpoint")}
        assert "checkpoint/rllib_checkpoint.json" in ckpt


def test_report_command_writes_tables_and_plots(sweep: Sweep, tmp_path: Path) -> None:
    out = tmp_path / "report"
    rc, stdout, _ = run_cli(
        ["report", "--experiment", EXPERIMENT, "--mlflow-uri", sweep.uri, "--out", str(out)]
    )
    assert rc == 0
    for name in (RESULTS_MD, RESULTS_CSV, TRIALS_CSV, "learning_curves.png", "densities.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / RESULTS_CSV)
    thin = table[(table["policy"] == "thin")]
    assert sorted(thin["variant"]) == ["fttpo", "rar"]
    assert set(table["n"]) == {1}
    assert table["return_last_mean"].notna().all()
    assert "| fttpo" in stdout
    # reference rows and the return/violation frontier (docs/algorithm.md §5)
    assert (out / "frontier_fttpo-TreatmentSim-v0.png").is_file()
    assert "best constant dose (a = " in (out / RESULTS_MD).read_text()


def test_eval_command_prints_json_metrics(sweep: Sweep) -> None:
    (checkpoint,) = [
        p for p in sweep.storage.glob(f"{EXPERIMENT}/*/fttpo/*variant=fttpo*/checkpoint_*")
    ]
    rc, stdout, _ = run_cli(["eval", str(checkpoint), "--episodes", "2"])
    assert rc == 0
    results = json.loads(stdout)
    assert set(results) == {"thin", "fat"}
    assert results["thin"]["episodes"] == 2.0
    assert 0.0 <= results["thin"]["violation_rate"] <= 1.0


def test_train_command_logs_a_run_and_writes_a_checkpoint(sweep: Sweep, tmp_path: Path) -> None:
    rc, stdout, _ = run_cli(
        [
            "train",
            str(sweep.yaml),
            "--set",
            "fat_q=1.5",
            "--iterations",
            "1",
            "--mlflow-uri",
            sweep.uri,
            "--storage",
            str(tmp_path),
        ]
    )
    assert rc == 0
    (run,) = runs_of(sweep, tr.KIND_TRAIN)
    assert run.data.params["fat_q"] == "1.5"
    assert run.info.status == tr.FINISHED
    assert "evaluation/thin/episode_return_mean" in run.data.metrics
    assert list(tmp_path.glob(f"{EXPERIMENT}/train-*/checkpoint/rllib_checkpoint.json"))
    metrics = json.loads(stdout[: stdout.index("\n}\n") + 2])
    assert "evaluation/thin/violation_rate" in metrics
