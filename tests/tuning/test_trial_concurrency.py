"""How many trials of a run Tune may start at once: RLlib's built-in algorithms reserve CPUs for
Ray Data only where they stream their dataset through it; in memory they run as many at once as
FtTPO's trials (a sweep on N cores runs N one-CPU trials). FtTPO's trials reuse their actors
under the FIFO and ASHA schedulers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
import yaml

from fttpo_ray.algorithms.offline_data import InMemoryOfflineData
from fttpo_ray.tuning.schema import load_experiment, validate_experiment
from fttpo_ray.tuning.space import RAY_DATA_RESERVED_CPUS, plan_run, prepare_dataset
from fttpo_ray.tuning.sweep import reuses_actors, trial_concurrency
from tests.helpers import run_cli, tiny_yaml

REPO = Path(__file__).resolve().parents[2]


def test_in_memory_builtins_are_not_limited_and_streaming_ones_leave_ray_data_its_cpus(
    treatment_dataset: object, ray_local: None
) -> None:
    spec = load_experiment(REPO / "tune_configs" / "quickstart.yaml")
    dataset = prepare_dataset(spec)
    plans = {run.name: plan_run(spec, run, dataset) for run in spec.runs}
    for name in ("iql", "cql", "fttpo"):
        config = plans[name].algorithm_config
        if name != "fttpo":
            assert config.offline_data_class is InMemoryOfflineData
        assert trial_concurrency(plans[name], spec, 0) is None
        assert trial_concurrency(plans[name], spec, 3) == 3
    streaming = plans["iql"]
    streaming.algorithm_config.offline_data_class = None  # RLlib's own (Ray Data) reader
    cpus = int(ray.cluster_resources()["CPU"])
    expected = max(1, cpus - RAY_DATA_RESERVED_CPUS)
    assert trial_concurrency(streaming, spec, 0) == expected


@pytest.mark.parametrize(
    ("scheduler", "fttpo_reuses"),
    [
        (None, True),
        ({"name": "asha", "grace_period": 1}, True),
        ({"name": "hyperband"}, False),
        ({"name": "pbt", "hyperparam_mutations": {"gamma": {"uniform": [0.85, 0.95]}}}, False),
    ],
)
def test_fttpo_trials_reuse_actors_where_the_scheduler_only_starts_and_stops_them(
    treatment_dataset: object, scheduler: dict | None, fttpo_reuses: bool
) -> None:
    path = REPO / "tune_configs" / "quickstart.yaml"
    data = yaml.safe_load(path.read_text())
    if scheduler:
        data["scheduler"] = scheduler
        data["metric"], data["mode"] = "evaluation/fat/episode_return_mean", "max"
        data["checkpoint"]["frequency"] = 1  # PBT and HyperBand restore from checkpoints
    spec = validate_experiment(data, path)
    dataset = prepare_dataset(spec)
    plans = {run.name: plan_run(spec, run, dataset) for run in spec.runs}
    assert reuses_actors(plans["fttpo"], spec) is fttpo_reuses
    assert reuses_actors(plans["tawac"], spec) is fttpo_reuses
    assert not reuses_actors(plans["iql"], spec)
    assert not reuses_actors(plans["cql"], spec)
    data["resources"] = {"reuse_actors": False}
    spec = validate_experiment(data, path)
    plan = plan_run(spec, spec.run("fttpo"), dataset)
    assert not reuses_actors(plan, spec)


@pytest.mark.slow
def test_a_sweep_runs_its_fttpo_trials_one_after_another_in_one_actor(
    tmp_path: Path, ray_local: None
) -> None:
    """Three FtTPO trials, one at a time: one process trained them all (Tune's ``pid`` of every
    result), each from its own config (its ``kl_weight``) and its own first iteration."""
    kl_weights = [0.01, 0.1, 1.0]
    config = tiny_yaml(
        tmp_path / "reuse.yaml",
        search={"kl_weight": {"grid_search": kl_weights}},
        max_concurrent=1,
        stop={"iterations": 2},
    )
    rc = run_cli(
        [
            "sweep",
            str(config),
            "--mlflow-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--storage",
            str(tmp_path / "ray"),
        ]
    ).rc
    assert rc == 0
    results = [
        [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted((tmp_path / "ray").glob("reuse/*/fttpo/*/result.json"))
    ]
    assert len(results) == len(kl_weights)
    assert len({r["pid"] for trial in results for r in trial}) == 1
    assert sorted(trial[0]["config"]["kl_weight"] for trial in results) == kl_weights
    for trial in results:
        assert [r["training_iteration"] for r in trial] == [1, 2]
