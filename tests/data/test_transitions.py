"""Minari dataset -> flat transitions: exact against Minari's own episode reader on real datasets
in the temporary root; RLlib column names; action normalisation and its inverse."""

from __future__ import annotations

from pathlib import Path

import minari
import numpy as np
from ray.rllib.core.columns import Columns

from fttpo_ray.data import (
    DatasetInfo,
    collect_dataset,
    denormalize_actions,
    load_transitions,
    normalize_actions,
)
from tests.data.conftest import LETHAL_ID
from tests.helpers import TREATMENT_ID


def test_transitions_match_minari_episodes(treatment_dataset: DatasetInfo) -> None:
    transitions = load_transitions(TREATMENT_ID)
    assert len(transitions) == 1200 and transitions.episodes == 50
    assert transitions.env_id == "fttpo/TreatmentSim-v0"
    for name in ("obs", "actions", "rewards", "new_obs"):
        assert getattr(transitions, name).dtype == np.float32
    assert transitions.terminateds.dtype == bool and transitions.truncateds.dtype == bool
    dataset = minari.load_dataset(TREATMENT_ID)
    for episode in dataset.iterate_episodes([0, 17, 49]):
        rows = transitions.episode_ids == episode.id
        np.testing.assert_array_equal(transitions.obs[rows], episode.observations[:-1])
        np.testing.assert_array_equal(transitions.new_obs[rows], episode.observations[1:])
        np.testing.assert_array_equal(transitions.actions[rows], episode.actions)  # bounds ±1
        np.testing.assert_array_equal(transitions.rewards[rows], episode.rewards.astype(np.float32))
        np.testing.assert_array_equal(transitions.truncateds[rows], episode.truncations)
    np.testing.assert_allclose(
        transitions.episode_returns().mean(), treatment_dataset.return_mean, rtol=1e-5
    )


def test_terminated_and_truncated_stay_apart(lethal_dataset: DatasetInfo) -> None:
    transitions = load_transitions(LETHAL_ID)
    last = np.r_[transitions.episode_ids[1:] != transitions.episode_ids[:-1], True]
    # Exactly one of the two flags on each episode's last step, neither elsewhere.
    np.testing.assert_array_equal(transitions.terminateds | transitions.truncateds, last)
    assert transitions.terminateds.any() and transitions.truncateds.any()
    # The next observation of a non-final step is the next row's observation.
    inner = np.flatnonzero(~last)
    np.testing.assert_array_equal(transitions.new_obs[inner], transitions.obs[inner + 1])


def test_as_dict_uses_rllib_column_names(treatment_dataset: DatasetInfo) -> None:
    columns = load_transitions(TREATMENT_ID).as_dict()
    assert list(columns) == [
        Columns.OBS,
        Columns.ACTIONS,
        Columns.REWARDS,
        Columns.NEXT_OBS,
        Columns.TERMINATEDS,
        Columns.TRUNCATEDS,
    ]
    assert list(columns) == ["obs", "actions", "rewards", "new_obs", "terminateds", "truncateds"]


def test_normalisation_statistics(treatment_dataset: DatasetInfo) -> None:
    transitions = load_transitions(TREATMENT_ID)
    np.testing.assert_allclose(transitions.obs_mean, transitions.obs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(transitions.obs_std, transitions.obs.std(0), rtol=1e-5)


def test_actions_are_normalised_with_the_action_bounds(minari_root: Path) -> None:
    collect_dataset("Pendulum-v1", "random", 1, "test/pendulum-random-v0", seed=2)
    transitions = load_transitions("test/pendulum-random-v0")
    raw = minari.load_dataset("test/pendulum-random-v0")[0].actions
    np.testing.assert_array_equal(transitions.action_low, [-2.0])
    np.testing.assert_allclose(transitions.actions, raw / 2.0, atol=1e-7)
    np.testing.assert_allclose(transitions.denormalize_actions(transitions.actions), raw, atol=1e-6)
    assert np.abs(transitions.actions).max() <= 1.0


def test_normalize_and_denormalize_are_inverse_and_keep_unbounded_dimensions() -> None:
    low, high = np.array([-2.0, 0.0, -np.inf]), np.array([2.0, 10.0, np.inf])
    actions = np.array([[1.0, 2.5, 7.0], [-2.0, 10.0, -3.0]])
    normalised = normalize_actions(actions, low, high)
    np.testing.assert_allclose(normalised, [[0.5, -0.5, 7.0], [-1.0, 1.0, -3.0]])
    np.testing.assert_allclose(denormalize_actions(normalised, low, high), actions, rtol=1e-6)
