"""One experiment sweeping two environments (the treatment simulator and its lethal variant): a
list of dataset blocks is a search axis. Real Ray, Tune and MLflow: first the toy trainable
(seconds of work per trial), then FtTPO itself on both datasets (tiny: two iterations of five
gradient steps), whose normalised scores put both environments on one scale.

Each trial's MLflow run names its environment and dataset (params and the run name), the table
``fttpo sweep`` prints has an ``env`` column, and ``fttpo report`` writes one section per
environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fttpo_ray.reporting.report import RESULTS_CSV, RESULTS_MD
from fttpo_ray.tuning import tracking as tr
from tests.helpers import run_cli
from tests.tuning.toy_trainable import TOY_NAME

pytestmark = pytest.mark.slow

TREATMENT = {"env": "fttpo/TreatmentSim-v0", "id": "fttpo/treatment/random-v0"}
LETHAL = {"env": "fttpo/TreatmentSimLethal-v0", "id": "fttpo/treatment-lethal/random-v0"}
ENVS = {TREATMENT["env"]: TREATMENT["id"], LETHAL["env"]: LETHAL["id"]}


def sweep(tmp_path: Path, name: str, data: dict[str, Any]) -> tuple[str, str, list]:
    """``fttpo sweep`` of ``data``: its stdout, the MLflow URI and the trial runs."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc, stdout, _ = run_cli(
        ["sweep", str(path), "--mlflow-uri", uri, "--storage", str(tmp_path / "ray")]
    )
    assert rc == 0, stdout
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRIAL}'"
    )
    return stdout, uri, runs


def table_rows(stdout: str) -> list[dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("| ").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("| ").split("|")), strict=True))
        for line in lines[2:]
    ]


def test_one_experiment_sweeps_two_environments(
    tmp_path: Path, ray_local: None, toy_registered: str
) -> None:
    data = {
        "dataset": [TREATMENT, LETHAL],
        "evaluation": {"episodes": 1},
        "runs": [
            {
                "algorithm": TOY_NAME,
                "config": {"kl_weight": 0.1, "thin_q": 0.0},
                "name": "toy",
                "search": {"kl_weight": {"grid_search": [0.1, 1.0]}},
            }
        ],
        "seeds": [0],
        "stop": {"iterations": 2},
    }
    stdout, uri, runs = sweep(tmp_path, "toy_envs", data)
    assert len(runs) == 4
    seen = {
        (r.data.params["env"], r.data.params["dataset_id"], r.data.params["kl_weight"])
        for r in runs
    }
    assert seen == {(env, ds, kl) for env, ds in ENVS.items() for kl in ("0.1", "1.0")}
    for run in runs:
        name = run.info.run_name.split()
        assert name[0] == "toy" and run.data.params["dataset_id"] in name, run.info.run_name
    (sweep_dir,) = tmp_path.glob("ray/toy_envs/*")
    assert (sweep_dir / "toy.fttpo_treatment_random-v0").is_dir()
    assert (sweep_dir / "toy.fttpo_treatment-lethal_random-v0").is_dir()

    rows = table_rows(stdout)
    assert {(r["env"], r["kl_weight"]) for r in rows if r["policy"] == "thin"} == {
        (env, kl) for env in ENVS for kl in ("0.1", "1.0")
    }

    out = tmp_path / "report"
    rc = run_cli(["report", "--experiment", "toy_envs", "--mlflow-uri", uri, "--out", str(out)]).rc
    assert rc == 0
    text = (out / RESULTS_MD).read_text()
    assert f"## {TREATMENT['env']}" in text
    assert f"## {LETHAL['env']}" in text
    table = pd.read_csv(out / RESULTS_CSV)
    assert list(table.columns[:2]) == ["env", "dataset_id"]
    assert set(table["env"]) == set(ENVS)


def test_fttpo_across_the_treatment_environments_with_normalised_scores(
    tmp_path: Path, ray_local: None
) -> None:
    data = {
        "dataset": [TREATMENT, LETHAL],
        "evaluation": {"episodes": 2},
        "runs": [
            {
                "algorithm": "FtTPO",
                "config": {
                    "fat_q": 2.0,
                    "kl_weight": 0.1,
                    "model_config": {"fcnet_hiddens": [16, 16]},
                    "num_gradient_steps_per_iteration": 5,
                    "thin_q": 0.0,
                    "train_batch_size_per_learner": 32,
                },
                "name": "fttpo",
            }
        ],
        "seeds": [0],
        "stop": {"iterations": 2},
    }
    stdout, _, runs = sweep(tmp_path, "fttpo_envs", data)
    assert {(r.data.params["env"], r.data.params["dataset_id"]) for r in runs} == set(ENVS.items())
    for run in runs:
        assert "evaluation/thin/normalized_score" in run.data.metrics
        assert run.data.tags[tr.OUTCOME_TAG] == tr.OUTCOME_FINISHED
    rows = [r for r in table_rows(stdout) if r["policy"] == "thin"]
    assert {r["env"] for r in rows} == set(ENVS)
    for row in rows:
        assert row["norm. score (last)"] != "–"
        assert row["finished"] == "1/1"
