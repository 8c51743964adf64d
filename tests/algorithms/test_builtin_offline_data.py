"""RLlib's BC/MARWIL/IQL/CQL on in-memory data: the sampler, MARWIL's targets, the split shared
with FtTPO, real training."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from fttpo_ray.algorithms.baselines.builtin_offline import configure_builtin_offline
from fttpo_ray.algorithms.baselines.lean_iql import LeanIQLTorchLearner
from fttpo_ray.algorithms.offline_data import (
    DATASET_ID_KWARG,
    VALUE_TARGETS,
    InMemoryOfflineData,
    UniformSampler,
    discounted_returns_to_go,
    in_memory_input_kwargs,
)
from fttpo_ray.data import DatasetInfo, load_transitions
from fttpo_ray.data.split import held_out_mask
from fttpo_ray.errors import ConfigError
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
    sampler = UniformSampler(TREATMENT_ID, seed=3, value_targets_gamma=None, held_out_fraction=0.0)
    batches = sampler.iter_torch_batches(batch_size=64, device=None, prefetch_batches=1)
    first = next(batches)
    assert first[f"default_policy/{Columns.OBS}"].shape == (64, 8)
    assert first[f"default_policy/{Columns.TERMINATEDS}"].dtype == torch.bool
    again = UniformSampler(TREATMENT_ID, 3, None, held_out_fraction=0.0)
    again = next(again.iter_torch_batches(batch_size=64))
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
    assert config.offline_data_class is InMemoryOfflineData
    assert config.input_read_method_kwargs == in_memory_input_kwargs(TREATMENT_ID, 0.2, 0)
    algo = config.build_algo()
    try:
        data = algo.offline_data
        assert data.num_rows == 960  # 40 of the 50 episodes of 24 steps: 10 held out
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


def test_yaml_runs_of_builtins_use_the_in_memory_sampler_and_lean_iql(
    treatment_dataset: DatasetInfo,
) -> None:
    from pathlib import Path

    from fttpo_ray.tuning.schema import load_experiment
    from fttpo_ray.tuning.space import DatasetRef, algorithm_config

    spec = load_experiment(Path(__file__).resolve().parents[2] / "tune_configs/quickstart.yaml")
    config = algorithm_config(
        spec, spec.run("iql"), DatasetRef(TREATMENT_ID, "fttpo/TreatmentSim-v0"), seed=0
    )
    assert config.offline_data_class is InMemoryOfflineData
    assert config.input_read_method_kwargs[DATASET_ID_KWARG] == TREATMENT_ID
    fttpo = algorithm_config(
        spec, spec.run("fttpo"), DatasetRef(TREATMENT_ID, "fttpo/TreatmentSim-v0"), seed=3
    )
    assert config.input_read_method_kwargs == in_memory_input_kwargs(
        TREATMENT_ID, fttpo.held_out_fraction, fttpo.split_seed
    )
    # The same gradient steps per iteration as FtTPO's runs, with the lean IQL learner.
    assert (
        config.dataset_num_iters_per_learner
        == spec.run("iql").config["dataset_num_iters_per_learner"]
        == spec.run("fttpo").config["num_gradient_steps_per_iteration"]
    )
    assert config.learner_class is LeanIQLTorchLearner


def test_fttpo_and_the_builtins_train_on_the_same_episodes(
    treatment_dataset: DatasetInfo, ray_local: None
) -> None:
    """FtTPO (seed 1) and RLlib's BC and IQL (seed 2), built for real on the same dataset and
    split: their samplers draw from the same training episodes, the held-out ones excluded,
    and a per-learner sampler (what IQL's learner pulls from) holds the same rows."""
    from ray.rllib.algorithms.bc import BCConfig
    from ray.rllib.algorithms.iql import IQLConfig

    from fttpo_ray import FtTPOConfig

    transitions = load_transitions(TREATMENT_ID)
    held = held_out_mask(transitions.episode_ids, 0.2, 0)
    expected = np.unique(transitions.episode_ids[~held])
    assert len(expected) == 40

    fttpo = (
        FtTPOConfig()
        .dataset(TREATMENT_ID)
        .training(num_gradient_steps_per_iteration=1, train_batch_size_per_learner=8)
        .rl_module(model_config={"fcnet_hiddens": [8]})
        .evaluation(evaluation_interval=None)
        .debugging(seed=1)
        .build_algo()
    )
    try:
        ids = {"FtTPO": fttpo.offline_data.train_episode_ids}
        np.testing.assert_array_equal(fttpo.prepared.train_episode_ids, expected)
    finally:
        fttpo.stop()
    for name, config_class in (("BC", BCConfig), ("IQL", IQLConfig)):
        config = (
            config_class()
            .training(train_batch_size_per_learner=8)
            .rl_module(model_config={"fcnet_hiddens": [8]})
            .learners(num_learners=0)
            .env_runners(num_env_runners=0)
            .debugging(seed=2)
        )
        algo = configure_builtin_offline(config, TREATMENT_ID).build_algo()
        try:
            data = algo.offline_data
            ids[name] = data.train_episode_ids
            (sampler,) = data.sample(num_samples=8, num_shards=1, return_iterator=True)
            assert len(sampler.table[Columns.REWARDS]) == data.num_rows == int((~held).sum())
        finally:
            algo.stop()
    for name, episode_ids in ids.items():
        np.testing.assert_array_equal(episode_ids, expected, err_msg=name)
    # Another split seed holds out other episodes.
    other = InMemoryOfflineData(
        BCConfig().offline_data(
            input_read_method_kwargs=in_memory_input_kwargs(TREATMENT_ID, 0.2, 1)
        )
    )
    assert not np.array_equal(other.train_episode_ids, expected)
    # A config of before the split (a checkpoint's: the dataset id alone) held nothing out.
    before = InMemoryOfflineData(
        BCConfig().offline_data(input_read_method_kwargs={DATASET_ID_KWARG: TREATMENT_ID})
    )
    assert before.num_rows == 1200 and len(before.train_episode_ids) == 50


def test_a_streamed_dataset_cannot_hold_episodes_out(treatment_dataset: DatasetInfo) -> None:
    from ray.rllib.algorithms.bc import BCConfig

    with pytest.raises(ConfigError, match="`held_out_fraction`=0.2 needs the dataset in memory"):
        configure_builtin_offline(BCConfig(), TREATMENT_ID, in_memory=False)
    with pytest.raises(ConfigError, match="`split_seed` must be an integer >= 0; got -1"):
        configure_builtin_offline(BCConfig(), TREATMENT_ID, split_seed=-1)
