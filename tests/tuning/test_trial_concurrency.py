"""How many trials of a run Tune may start at once: RLlib's built-in algorithms reserve CPUs for
Ray Data only where they stream their dataset through it; in memory they run as many at once as
FtTPO's trials (a sweep on N cores runs N one-CPU trials)."""

from __future__ import annotations

from pathlib import Path

import ray

from fttpo_ray.algorithms.offline_data import InMemoryOfflineData
from fttpo_ray.tuning.schema import load_experiment
from fttpo_ray.tuning.space import RAY_DATA_RESERVED_CPUS, plan_run, prepare_dataset
from fttpo_ray.tuning.sweep import trial_concurrency

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
