"""RLlib's BC/MARWIL/IQL/CQL on in-memory data: the sampler, MARWIL's targets, real training."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from fttpo_ray.algorithms.builtin_offline_data import (
    DATASET_ID_KWARG,
    VALUE_TARGETS,
    BuiltinInMemoryOfflineData,
    UniformSampler,
    configure_builtin_offline,
    discounted_returns_to_go,
)
from fttpo_ray.algorithms.lean_iql import LeanIQLTorchLearner
from fttpo_ray.data import DatasetInfo, load_transitions
from tests.helpers import TREATMENT_ID

REWARDS = f"default_policy/{Columns.REWARDS}"


def test_discounted_returns_to_go_by_hand() -> None:
    rewards = np.array([1.0, 2.0, 3.0, 10.0, 20.0], np.float32)
    episodes = np.array([0, 0, 0, 1, 1])
    expected = [1 + 0.5 * (2 + 0.5 * 3), 2 + 0.5 * 3, 3, 10 + 0.5 * 20, 20]
    assert discounted_returns_to_go(rewards, episodes, 0.5) == pytest.approx(expected)


def test_sampler_draws_uniform_seeded_batches_and_pickles_without_its_table(
    treatment_dataset: DatasetInfo,
) -> None:
    sampler = UniformSampler(TREATMENT_ID, seed=3, value_targets_gamma=None)
    batches = sampler.iter_torch_batches(batch_size=64, device=None, prefetch_batches=1)
    first = next(batches)
    assert first[f"default_policy/{Columns.OBS}"].shape == (64, 8)
    assert first[f"default_policy/{Columns.TERMINATEDS}"].dtype == torch.bool
    again = next(UniformSampler(TREATMENT_ID, 3, None).iter_torch_batches(batch_size=64))
    assert torch.equal(first[REWARDS], again[REWARDS])
    assert pickle.loads(pickle.dumps(sampler))._table is None
    # Uniform: over 200 batches of 64 every one of the 1 200 rows has p = 1/1200 per draw, so
    # the mean reward is the dataset's within 4 s.e. (s.e. = sd / sqrt(12 800)).
    rewards = torch.cat([next(batches)[REWARDS] for _ in range(200)])
    table = load_transitions(TREATMENT_ID).rewards
    assert abs(rewards.mean().item() - table.mean()) < 4 * table.std() / np.sqrt(len(rewards))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["BC", "MARWIL", "IQL", "CQL"])
def test_builtins_train_in_memory(
    algorithm: str, treatment_dataset: DatasetInfo, ray_local: None
) -> None:
    from ray.tune.registry import get_trainable_cls

    config = (
        get_trainable_cls(algorithm)
        .get_default_config()
        .training(train_batch_size_per_learner=32)
        .learners(num_learners=0)
        .env_runners(num_env_runners=0)
        .debugging(seed=0)
    )
    if algorithm == "CQL":
        config.training(lr=None)
    configure_builtin_offline(config, TREATMENT_ID, dataset_num_iters_per_learner=3)
    assert config.offline_data_class is BuiltinInMemoryOfflineData
    assert config.input_read_method_kwargs == {DATASET_ID_KWARG: TREATMENT_ID}
    algo = config.build_algo()
    try:
        data = algo.offline_data
        assert data.num_rows == 1200
        assert (VALUE_TARGETS in data._table) == (algorithm == "MARWIL")
        before = {
            k: v.clone()
            for k, v in algo.learner_group._learner.module["default_policy"].state_dict().items()
        }
        learner = algo.train()["learners"]["default_policy"]
        assert all(np.isfinite(v) for k, v in learner.items() if k.endswith("loss"))
        after = algo.learner_group._learner.module["default_policy"].state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)  # it learned
    finally:
        algo.stop()


def test_yaml_runs_of_builtins_use_the_in_memory_sampler_and_lean_iql(treatment_dataset: DatasetInfo) -> None:
    from pathlib import Path

    from fttpo_ray.tuning.schema import load_experiment
    from fttpo_ray.tuning.space import DatasetRef, algorithm_config

    spec = load_experiment(Path(__file__).resolve().parents[2] / "tune_configs/quickstart.yaml")
    config = algorithm_config(
        spec, spec.run("iql"), DatasetRef(TREATMENT_ID, "fttpo/TreatmentSim-v0"), seed=0
    )
    assert config.offline_data_class is BuiltinInMemoryOfflineData
    assert config.input_read_method_kwargs[DATASET_ID_KWARG] == TREATMENT_ID
    # The same gradient steps per iteration as FtTPO's runs, with the lean IQL learner.
    assert (
        config.dataset_num_iters_per_learner
        == spec.run("iql").config["dataset_num_iters_per_learner"]
        == spec.run("fttpo").config["num_gradient_steps_per_iteration"]
    )
    assert config.learner_class is LeanIQLTorchLearner
