"""Schedulers and search algorithms from the YAML, end to end with real Ray, Tune and MLflow on
toy trainables whose results are known in closed form:

* ASHA stops the trials that are worse by construction (the toy's return grows with
  ``log10(kl_weight)``) at its first rung, and the results table keeps them apart from the
  finished one (``outcome``, ``finished`` k/N, the iteration of their last evaluation);
* PBT clones the better trial into the worse one (exploit) and perturbs ``kl_weight``: the
  exploit is recorded (MLflow tag, the perturbed value per iteration, Tune's PBT log);
* HyperBand stops paused trials without the sweep being taken for interrupted;
* Optuna's TPE proposes values inside the declared ranges, each once per seed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fttpo_ray.reporting.report import RESULTS_CSV
from fttpo_ray.tuning import tracking as tr
from tests.helpers import run_cli
from tests.tuning import pbt_trainable
from tests.tuning.toy_trainable import TOY_NAME

pytestmark = pytest.mark.slow

TREATMENT = {"env": "fttpo/TreatmentSim-v0", "id": "fttpo/treatment/random-v0"}
METRIC = "evaluation/thin/episode_return_mean"


def sweep(tmp_path: Path, name: str, data: dict[str, Any]) -> tuple[int, str, MlflowClient, list]:
    """Run ``fttpo sweep`` on ``data``; exit status, stdout, the MLflow client, trial runs."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc, stdout, _ = run_cli(
        ["sweep", str(path), "--mlflow-uri", uri, "--storage", str(tmp_path / "ray")]
    )
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRIAL}'"
    )
    return rc, stdout, client, runs


def base(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "dataset": TREATMENT,
        "evaluation": {"episodes": 1},
        "metric": METRIC,
        "mode": "max",
        "seeds": [0],
    }
    data.update(changes)
    return data


def test_asha_stops_the_worse_trials_and_the_table_keeps_them_apart(
    tmp_path: Path, ray_local: None, toy_registered: str
) -> None:
    # One trial at a time, the best first: every later trial is below the rung's median at
    # its first milestone (iteration 1) and is stopped there.
    kl_weights = [1.0, 0.1, 0.01, 0.001]
    data = base(
        max_concurrent=1,
        runs=[
            {
                "algorithm": TOY_NAME,
                "config": {"kl_weight": 0.1, "thin_q": 0.0},
                "name": "toy",
                "search": {"kl_weight": {"grid_search": kl_weights}},
            }
        ],
        scheduler={"grace_period": 1, "name": "asha", "reduction_factor": 2},
        stop={"iterations": 4},
    )
    rc, stdout, client, runs = sweep(tmp_path, "asha", data)
    assert rc == 0
    assert len(runs) == len(kl_weights)
    outcomes = {float(r.data.params["kl_weight"]): r.data.tags[tr.OUTCOME_TAG] for r in runs}
    assert outcomes == {
        1.0: tr.OUTCOME_FINISHED,
        0.1: tr.OUTCOME_STOPPED_EARLY,
        0.01: tr.OUTCOME_STOPPED_EARLY,
        0.001: tr.OUTCOME_STOPPED_EARLY,
    }
    for run in runs:
        steps = [p.step for p in client.get_metric_history(run.info.run_id, METRIC)]
        assert steps == ([1, 2, 3, 4] if float(run.data.params["kl_weight"]) == 1.0 else [1])

    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("| ").split("|")]
    assert {"outcome", "n", "finished", "iteration"} <= set(header)
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("| ").split("|")), strict=True))
        for line in lines[2:]
    ]
    thin = {float(r["kl_weight"]): r for r in rows if r["policy"] == "thin"}
    assert (thin[1.0]["outcome"], thin[1.0]["finished"], thin[1.0]["iteration"]) == (
        "finished",
        "1/1",
        "4",
    )
    for kl in (0.1, 0.01, 0.001):
        assert (thin[kl]["outcome"], thin[kl]["finished"], thin[kl]["iteration"]) == (
            "stopped_early",
            "0/1",
            "1",
        )
    report = next(tmp_path.glob("ray/asha/*/report"))
    table = pd.read_csv(report / RESULTS_CSV)
    thin_rows = table[table["policy"] == "thin"]
    assert sorted(thin_rows["outcome"]) == ["finished"] + ["stopped_early"] * 3
    # 0.5 * 4 iterations + log10(1.0): the finished trial's own last return, nothing mixed in
    finished = thin_rows[thin_rows["outcome"] == "finished"].iloc[0]
    assert finished["return_last_mean"] == pytest.approx(2.0)


def test_pbt_exploits_the_better_trial_and_records_it(tmp_path: Path, ray_local: None) -> None:
    name = pbt_trainable.register()
    data = base(
        checkpoint={"frequency": 1, "num_to_keep": 20},
        max_concurrent=2,
        runs=[
            {
                "algorithm": name,
                "config": {"kl_weight": 0.1},
                "name": "pbt",
                "search": {"kl_weight": {"grid_search": [0.001, 0.1]}},
            }
        ],
        scheduler={
            "hyperparam_mutations": {"kl_weight": {"loguniform": [0.001, 1.0]}},
            "name": "pbt",
            "perturbation_interval": 2,
            "quantile_fraction": 0.5,
            "resample_probability": 0.0,
        },
        stop={"iterations": 10},
    )
    rc, _, client, runs = sweep(tmp_path, "pbt", data)
    assert rc == 0
    assert len(runs) == 2
    worse = next(r for r in runs if r.data.params["kl_weight"] == "0.001")
    assert int(worse.data.tags[tr.EXPLOITS_TAG]) >= 1
    values = [
        p.value
        for p in sorted(
            client.get_metric_history(worse.info.run_id, f"{tr.HYPERPARAMETER_PREFIX}kl_weight"),
            key=lambda p: p.step,
        )
    ]
    assert values[0] == pytest.approx(0.001)
    # cloned from kl_weight = 0.1 (or a clone of a clone) and perturbed by 0.8 or 1.2
    assert any(v > 0.05 for v in values)
    assert {r.data.tags[tr.OUTCOME_TAG] for r in runs} == {tr.OUTCOME_FINISHED}
    (log,) = tmp_path.glob("ray/pbt/*/pbt/pbt_global.txt")
    assert log.read_text().strip()


def test_hyperband_stops_paused_trials_and_the_sweep_is_not_taken_for_interrupted(
    tmp_path: Path, ray_local: None
) -> None:
    # HyperBand (max_t 4, reduction factor 2) fills a bracket of 3 trials that all run 4
    # iterations, then a bracket of 3 that are halved after 2 iterations (2 of 3 go on). The
    # worst trial comes first in that bracket, so it normally reaches iteration 2 first, waits
    # paused for the others and is stopped while paused: its last result is not marked done,
    # yet Tune completed it, and the sweep ends normally (exit 0, a table).
    name = pbt_trainable.register()
    data = base(
        checkpoint={"frequency": 1, "num_to_keep": 4},
        runs=[
            {
                "algorithm": name,
                "config": {"kl_weight": 0.1},
                "name": "hb",
                "search": {"kl_weight": {"grid_search": [1.0, 0.5, 0.2, 0.001, 0.1, 0.03]}},
            }
        ],
        scheduler={"name": "hyperband", "reduction_factor": 2},
        stop={"iterations": 4},
    )
    rc, stdout, client, runs = sweep(tmp_path, "hb", data)
    assert rc == 0
    assert "Results of 'hb'" in stdout
    outcomes = {float(r.data.params["kl_weight"]): r.data.tags[tr.OUTCOME_TAG] for r in runs}
    assert outcomes == {
        1.0: tr.OUTCOME_FINISHED,
        0.5: tr.OUTCOME_FINISHED,
        0.2: tr.OUTCOME_FINISHED,
        0.001: tr.OUTCOME_STOPPED_EARLY,  # gain -3 per iteration
        0.1: tr.OUTCOME_FINISHED,
        0.03: tr.OUTCOME_FINISHED,
    }
    worst = next(r for r in runs if r.data.params["kl_weight"] == "0.001")
    assert [p.step for p in client.get_metric_history(worst.info.run_id, METRIC)] == [1, 2]


def test_optuna_proposes_values_inside_the_ranges_once_per_seed(
    tmp_path: Path, ray_local: None, toy_registered: str
) -> None:
    data = base(
        max_concurrent=2,
        num_samples=4,
        runs=[
            {
                "algorithm": TOY_NAME,
                "config": {"kl_weight": 0.1, "thin_q": 0.0},
                "name": "tpe",
                "search": {
                    "kl_weight": {"loguniform": [0.01, 1.0]},
                    "thin_q": {"uniform": [-1.0, 0.5]},
                },
            }
        ],
        search_alg={"name": "optuna", "seed": 0},
        seeds=[0, 1],
        stop={"iterations": 2},
    )
    rc, _, _, runs = sweep(tmp_path, "tpe", data)
    assert rc == 0
    assert len(runs) == 8
    seeds_of = defaultdict(set)
    for run in runs:
        kl, thin_q = float(run.data.params["kl_weight"]), float(run.data.params["thin_q"])
        assert 0.01 <= kl <= 1.0
        assert -1.0 <= thin_q <= 0.5
        seeds_of[(kl, thin_q)].add(int(run.data.params["seed"]))
    assert len(seeds_of) == 4
    assert all(seeds == {0, 1} for seeds in seeds_of.values())
    assert all(not math.isclose(kl, 0.1) for kl, _ in seeds_of)  # proposed, not the default
