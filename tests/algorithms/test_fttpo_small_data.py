"""FtTPO's small-data options (docs/algorithm.md §2.1–§2.2) with real Ray/RLlib on the treatment
dataset: observation standardisation stored in the module (and in checkpoints), and offline model
selection on held-out episodes that never reads an evaluation episode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from fttpo_ray import FtTPO, FtTPOConfig
from fttpo_ray.algorithms.fttpo.selection import held_out_criteria
from fttpo_ray.algorithms.learner_module import learner_module
from fttpo_ray.data import ensure_dataset, load_transitions
from fttpo_ray.data.split import held_out_mask
from fttpo_ray.errors import ConfigError
from tests.helpers import TREATMENT_ID, tiny_fttpo_config

#: The module's FtTPO (``trained``: three iterations of it).
TRAINED_SETTINGS = {
    "num_gradient_steps_per_iteration": 15,
    "held_out_fraction": 0.2,
    "split_seed": 3,
    "seed": 3,
}
TRAINED_ITERATIONS = 3


def loc(module, obs: torch.Tensor) -> torch.Tensor:
    out = module.forward_inference({Columns.OBS: obs})
    return out[Columns.ACTION_DIST_INPUTS][:, :1]


def test_observation_statistics_are_the_training_episodes_and_survive_a_checkpoint(
    trained, tmp_path
):
    """The module standardises with the mean/std of the training episodes' observations
    (held-out episodes excluded); an algorithm checkpoint and the module's own checkpoint
    restore the same statistics and act the same on raw observations."""
    algo, _ = trained
    transitions = load_transitions(TREATMENT_ID)
    train = ~held_out_mask(transitions.episode_ids, 0.2, 3)
    expected_mean = transitions.obs[train].astype(np.float64).mean(axis=0)
    expected_std = transitions.obs[train].astype(np.float64).std(axis=0)
    module = algo.get_module()
    np.testing.assert_allclose(module.obs_shift.numpy(), expected_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(module.obs_scale.numpy(), expected_std, rtol=1e-6)
    assert not np.allclose(expected_mean, transitions.obs.mean(axis=0), atol=1e-7)

    obs = torch.as_tensor(transitions.obs[:32])
    path = algo.save_to_path(str(tmp_path / "checkpoint"))
    restored = FtTPO.from_checkpoint(path)
    try:
        again = restored.get_module()
        torch.testing.assert_close(again.obs_shift, module.obs_shift, rtol=0, atol=0)
        torch.testing.assert_close(again.obs_scale, module.obs_scale, rtol=0, atol=0)
        torch.testing.assert_close(loc(again, obs), loc(module, obs), rtol=0, atol=0)
        assert restored.selected_iteration() == algo.selected_iteration()
    finally:
        restored.stop()
    alone = RLModule.from_checkpoint(f"{path}/learner_group/learner/rl_module/{DEFAULT_MODULE_ID}")
    torch.testing.assert_close(alone.obs_scale, module.obs_scale, rtol=0, atol=0)
    torch.testing.assert_close(loc(alone, obs), loc(module, obs), rtol=0, atol=0)
    # The transform is applied: shifting the statistics moves the action.
    with torch.no_grad():
        alone.obs_shift += 1.0
    assert not torch.allclose(loc(alone, obs), loc(module, obs))


def test_learner_samples_only_training_episodes_and_scores_the_held_out_ones(trained):
    algo, results = trained
    transitions = load_transitions(TREATMENT_ID)
    held = held_out_mask(transitions.episode_ids, 0.2, 3)
    data = algo.offline_data
    assert data.num_rows == int((~held).sum())
    np.testing.assert_array_equal(data.held_out[Columns.OBS].numpy(), transitions.obs[held])
    np.testing.assert_array_equal(data._table[Columns.OBS].numpy(), transitions.obs[~held])
    np.testing.assert_array_equal(data.train_episode_ids, np.unique(transitions.episode_ids[~held]))
    assert algo.prepared.in_memory and algo.prepared.held_out.sum() == held.sum()
    criteria = held_out_criteria(learner_module(algo), data.held_out, 0.9)
    last = results[-1]
    assert last["selection"]["td_error"] == pytest.approx(criteria["td_error"], rel=1e-6)
    assert last["selection"]["held_out_transitions"] == int(held.sum())
    errors = [r["selection"]["td_error"] for r in results]
    best = int(np.argmin(errors)) + 1
    assert last["selected"]["iteration"] == best == algo.selected_iteration()
    assert last["selected"]["criterion"] == min(errors)


def test_selection_does_not_depend_on_the_evaluation(ray_local):
    """Two runs that differ only in their evaluation (other episodes, other count) score and
    select identically: the criterion never reads an evaluation episode."""
    runs = []
    for evaluation in ({"evaluation_seed": 5, "evaluation_duration": 2}, {"evaluation_seed": 9}):
        ensure_dataset(TREATMENT_ID)
        algo = tiny_fttpo_config(TRAINED_SETTINGS, **evaluation).build_algo()
        try:
            results = [algo.train() for _ in range(2)]
            runs.append(
                (
                    [r["selection"]["td_error"] for r in results],
                    [r["selection"]["policy_q"] for r in results],
                    algo.selected_iteration(),
                    [r["evaluation"]["thin"]["episode_return_mean"] for r in results],
                )
            )
        finally:
            algo.stop()
    assert runs[0][:3] == runs[1][:3]
    assert runs[0][3] != runs[1][3]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("held_out_fraction", 1.0),
        ("held_out_fraction", -0.1),
        ("selection_criterion", "return"),
        ("critic_aggregation", "max"),
        ("critic_kappa", -1.0),
        ("critic_weight_decay", -1e-3),
        ("critic_layer_norm", 1),
        ("normalize_observations", "yes"),
    ],
)
def test_small_data_fields_are_validated(field, value):
    config = FtTPOConfig().dataset(TREATMENT_ID)
    setattr(config, field, value)
    with pytest.raises(ConfigError, match=f"`{field}`") as info:
        config.validate()
    assert "\n" not in str(info.value)


def test_relative_td_error_does_not_change_with_the_critics_scale(trained):
    """Rewards and critics times k multiply the TD error by k² and leave the relative one (TD
    error over the targets' variance) as it was: the criterion compares fits, not scales."""
    algo, results = trained
    module, held = learner_module(algo), algo.offline_data.held_out
    base = held_out_criteria(module, held, 0.9)
    assert results[-1]["selection"]["relative_td_error"] == pytest.approx(
        base["relative_td_error"], rel=1e-6
    )
    assert 0.0 < base["relative_td_error"] < math.inf

    k = 7.0
    original = module.q_aggregate

    class Scaled:
        def __getattr__(self, name):
            return getattr(module, name)

        def q_aggregate(self, *args, **kwargs):
            return k * original(*args, **kwargs)

    scaled_held = {**held, Columns.REWARDS: k * held[Columns.REWARDS]}
    scaled = held_out_criteria(Scaled(), scaled_held, 0.9)
    assert scaled["td_error"] == pytest.approx(k * k * base["td_error"], rel=1e-4)
    assert scaled["relative_td_error"] == pytest.approx(base["relative_td_error"], rel=1e-4)
