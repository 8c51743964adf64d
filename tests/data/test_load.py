"""Minari dataset -> flat transitions: correctness, normalisation, caching and damaged data.

Exact checks against Minari's own episode reader on real datasets in the temporary root.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import minari
import numpy as np
import pytest
from ray.rllib.core.columns import Columns

from fttpo_ray.data import (
    DatasetInfo,
    check_compatible,
    collect_dataset,
    dataset_path,
    denormalize_actions,
    ensure_dataset,
    load_transitions,
    normalize_actions,
)
from fttpo_ray.data import load as load_module
from fttpo_ray.data.load import CACHE_DIR_NAME
from fttpo_ray.errors import DatasetError, EnvironmentSpecError
from tests.data.conftest import LETHAL_ID, TREATMENT_ID


def _copy_dataset(source_id: str, target_id: str) -> Path:
    """A byte copy of a dataset under a new id (metadata id rewritten), without our cache."""
    source, target = dataset_path(source_id), dataset_path(target_id)
    shutil.copytree(source / "data", target / "data")
    metadata_file = target / "data" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["dataset_id"] = target_id
    metadata_file.write_text(json.dumps(metadata))
    return target


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


def test_conversion_is_cached_on_disk(
    treatment_dataset: DatasetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_dataset(TREATMENT_ID, "test/cache-v0")
    first = load_transitions("test/cache-v0")
    cache_dirs = list((dataset_path("test/cache-v0") / CACHE_DIR_NAME).glob("transitions-*"))
    assert len(cache_dirs) == 1
    load_module._load_cached.cache_clear()

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was converted again")

    monkeypatch.setattr(load_module, "_convert", no_conversion)
    second = load_transitions("test/cache-v0")
    assert second is not first
    np.testing.assert_array_equal(second.obs, first.obs)
    assert load_transitions("test/cache-v0") is second  # in-process memo


def test_a_changed_data_file_invalidates_the_cache(treatment_dataset: DatasetInfo) -> None:
    path = _copy_dataset(TREATMENT_ID, "test/cache-stale-v0")
    before = load_transitions("test/cache-stale-v0")
    arrow = path / "data" / "0" / "part-0.arrow"
    arrow.write_bytes(arrow.read_bytes()[:100])  # truncated file
    with pytest.raises(DatasetError, match="'test/cache-stale-v0' is damaged") as err:
        load_transitions("test/cache-stale-v0")
    assert "\n" not in str(err.value) and len(before) == 1200


def test_garbage_data_file_is_a_dataset_error(treatment_dataset: DatasetInfo) -> None:
    path = _copy_dataset(TREATMENT_ID, "test/garbage-v0")
    (path / "data" / "3" / "part-0.arrow").write_bytes(b"not an arrow file" * 10)
    with pytest.raises(DatasetError, match="is damaged .*collect it again"):
        load_transitions("test/garbage-v0")


def test_garbage_metadata_is_a_dataset_error(treatment_dataset: DatasetInfo) -> None:
    path = _copy_dataset(TREATMENT_ID, "test/bad-metadata-v0")
    (path / "data" / "metadata.json").write_text("{ truncated")
    with pytest.raises(DatasetError, match="unreadable .*metadata.json"):
        load_transitions("test/bad-metadata-v0")


def test_missing_episode_is_a_dataset_error(treatment_dataset: DatasetInfo) -> None:
    path = _copy_dataset(TREATMENT_ID, "test/missing-episode-v0")
    shutil.rmtree(path / "data" / "49")
    with pytest.raises(DatasetError, match="no data file for episode 49"):
        load_transitions("test/missing-episode-v0")


def test_unknown_and_malformed_ids(minari_root: Path) -> None:
    with pytest.raises(DatasetError, match="dataset 'test/nothing-v0' not found") as err:
        load_transitions("test/nothing-v0")
    assert "fttpo collect" in str(err.value)
    with pytest.raises(DatasetError, match="malformed"):
        load_transitions("no-version")


def test_check_compatible(treatment_dataset: DatasetInfo) -> None:
    check_compatible(TREATMENT_ID, "fttpo/TreatmentSimLethal-v0")  # same spaces
    with pytest.raises(DatasetError, match="observation space .* but env 'Pendulum-v1'") as err:
        check_compatible(TREATMENT_ID, "Pendulum-v1")
    assert "\n" not in str(err.value)
    with pytest.raises(EnvironmentSpecError, match="unknown environment id"):
        check_compatible(TREATMENT_ID, "Nope-v0")


def test_ensure_dataset(minari_root: Path, treatment_dataset: DatasetInfo) -> None:
    assert ensure_dataset(TREATMENT_ID).steps == 1200  # exists: loaded, not collected
    created = ensure_dataset("fttpo/treatment-lethal/random-v0")  # a known recipe
    assert created.episodes == 50 and minari.load_dataset(created.dataset_id).total_episodes == 50
    by_env = ensure_dataset("test/on-demand-v0", env_id="fttpo/TreatmentSim-v0", episodes=2, seed=3)
    assert by_env.episodes == 2
    with pytest.raises(DatasetError, match="does not know how to create it"):
        ensure_dataset("test/unknown-recipe-v0")
    with pytest.raises(DatasetError, match="but env 'Pendulum-v1'"):
        ensure_dataset(TREATMENT_ID, env_id="Pendulum-v1")
