"""``fttpo sweep tune_configs/glucose.yaml``, shrunk: every run of the shipped YAML (FtTPO with
its certificate, RAR, reverse KL, both Tsallis-AWACs, RLlib's BC, IQL and CQL) for two
iterations of a few gradient steps on a tiny glucose dataset collected on first use, one seed,
learning-curve evaluations on one patient-day and the final one on two; then what MLflow holds
and the report's glucose section. A few minutes on two cores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from fttpo_ray import metrics as m
from fttpo_ray.data import dataset_exists
from fttpo_ray.envs import GLUCOSE_ENV_ID
from fttpo_ray.envs.glucose import PATIENT_GROUPS
from fttpo_ray.reporting.report import RESULTS_MD
from fttpo_ray.tuning import tracking as tr
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "tiny_glucose"
DATASET_ID = "test/glucose/tiny-random-v0"
ITERATIONS = 2
FINAL_EPISODES = 2

pytestmark = pytest.mark.slow


@dataclass
class Sweep:
    rc: int
    stdout: str
    stderr: str
    client: MlflowClient
    storage: Path


def tiny_glucose(path: Path) -> Path:
    """glucose.yaml with every run shrunk to seconds and a tiny random dataset."""
    data = yaml.safe_load((REPO / "tune_configs" / "glucose.yaml").read_text())
    data["dataset"] = {"env": GLUCOSE_ENV_ID, "episodes": 4, "id": DATASET_ID}
    data["defaults"]["FtTPO"].update(
        num_gradient_steps_per_iteration=3,
        train_batch_size_per_learner=8,
        model_config={"fcnet_hiddens": [8]},
        certificate_members=2,
        certificate_hiddens=[8],
    )
    for run in data["runs"]:
        if run["algorithm"] != "FtTPO":
            run["config"].update(
                dataset_num_iters_per_learner=3,
                train_batch_size_per_learner=8,
                model_config={"fcnet_hiddens": [8]},
            )
    data["seeds"] = [0]
    data["evaluation"] = {"episodes": 1, "final_episodes": FINAL_EPISODES}
    data["stop"] = {"iterations": ITERATIONS}
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> Sweep:
    root = tmp_path_factory.mktemp("glucose")
    path = tiny_glucose(root / f"{EXPERIMENT}.yaml")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    storage = root / "ray_results"
    assert not dataset_exists(DATASET_ID)
    run = run_cli(["sweep", str(path), "--mlflow-uri", uri, "--storage", str(storage)])
    return Sweep(run.rc, run.stdout, run.stderr, MlflowClient(uri), storage)


def test_the_tiny_glucose_sweep_runs_end_to_end_collecting_its_dataset(sweep: Sweep) -> None:
    assert sweep.rc == 0, sweep.stderr[-3000:]
    assert dataset_exists(DATASET_ID)
    # the printed table has the clinical columns; the report the glucose reference rows
    assert "time in range % (last)" in sweep.stdout and "<54 % (last)" in sweep.stdout
    report = next(sweep.storage.glob(f"{EXPERIMENT}/*/report"))
    text = (report / RESULTS_MD).read_text()
    assert f"## Reference rows: `{GLUCOSE_ENV_ID}`" in text
    for row in ("no bolus", "basal-bolus (clean)", "best state-independent rule"):
        assert f"| {row}" in text
    assert list(report.glob("frontier_*GlucoseBolus*.png"))


def test_every_run_logs_its_final_evaluation_with_the_glucose_measures(sweep: Sweep) -> None:
    experiment = sweep.client.get_experiment_by_name(EXPERIMENT)
    trials = [
        r
        for r in sweep.client.search_runs([experiment.experiment_id])
        if r.data.tags.get(tr.KIND_TAG) == tr.KIND_TRIAL
    ]
    acting = {
        "fttpo": m.CERTIFIED,
        "thin_baselines": m.THIN,
        "tawac_gauss": m.FAT,
        "tawac_t": m.FAT,
        "bc": m.FAT,
        "iql": m.FAT,
        "cql": m.FAT,
    }
    names = sorted(r.data.tags[tr.RUN_TAG] for r in trials)
    assert names == sorted([*acting, "thin_baselines"])  # rar and reverse_kl
    for trial in trials:
        policy = acting[trial.data.tags[tr.RUN_TAG]]
        history = sweep.client.get_metric_history(
            trial.info.run_id, m.evaluation_key(policy, m.EPISODES)
        )
        assert [h.value for h in sorted(history, key=lambda h: h.step)] == [1.0, FINAL_EPISODES]
        metrics = trial.data.metrics
        for name in (m.TIME_IN_RANGE, m.TIME_BELOW_54, m.GLUCOSE_MEAN, m.VIOLATION_RATE_UB95):
            assert 0.0 <= metrics[m.evaluation_key(policy, name)] < 1000.0
        groups = {
            g
            for g in PATIENT_GROUPS
            if m.evaluation_key(policy, m.group_metric(m.TIME_IN_RANGE, g)) in metrics
        }
        assert groups  # the two final days' patients
