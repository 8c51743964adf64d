"""Minari dataset -> one flat transition table (RLlib column names), actions normalised, cached.

:func:`load_transitions` turns a local Minari dataset into one :class:`Transitions` table:
float32 arrays ``obs (N, obs_dim)``, ``actions (N, act_dim)``, ``rewards (N,)``,
``new_obs (N, obs_dim)`` and bool ``terminateds``/``truncateds`` ``(N,)``, with
:meth:`Transitions.as_dict` keyed by ``ray.rllib.core.columns.Columns``.

- **Actions are normalised to [-1, 1]** with the dataset's action-space bounds:
  ``a_norm = 2 (a - low) / (high - low) - 1``, then clipped to [-1, 1] (round-off); dimensions
  with an infinite bound are left as they are. :meth:`Transitions.denormalize_actions` is the
  inverse. (RLlib's env runners read module outputs as normalised actions and rescale them with
  ``normalize_actions=True``, its default; the data must be on the same scale.)
- Terminations and truncations are kept apart exactly as Minari stores them: the last step of a
  time-limited episode has ``truncateds=True, terminateds=False``; ``new_obs`` is the stored next
  observation in both cases (also the final one of a truncated episode).
- ``obs_mean``/``obs_std``: per-dimension mean and standard deviation of ``obs`` over all
  transitions (the std floored at ``OBS_STD_FLOOR`` so that dividing by it is safe).

Reading is vectorised (:func:`~fttpo_ray.data.minari_files.read_episode_columns` reads each
episode file whole); the padding row Minari appends to each episode is dropped with one mask, so
no Python runs per step. The arrays are cached on disk as the ``transitions`` entry of
:mod:`fttpo_ray.data.cache` (``<dataset dir>/fttpo_cache/transitions-<key>/*.npy``).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.core.columns import Columns

from fttpo_ray.data.cache import entry_path, files_fingerprint, read_arrays, write_arrays
from fttpo_ray.data.minari_files import (
    META_REF_MAX_SCORE,
    META_REF_MIN_SCORE,
    META_TOTAL_EPISODES,
    MINARI_DATA_DIR,
    dataset_env_id,
    dataset_path,
    dataset_spaces,
    read_episode_columns,
    read_metadata,
    read_step_infos,
)
from fttpo_ray.errors import DatasetError

logger = logging.getLogger(__name__)

#: Floor of ``Transitions.obs_std``.
OBS_STD_FLOOR = 1e-6
#: Cache entry kind of the transition arrays.
CACHE_KIND = "transitions"
#: Array fields of :class:`Transitions`, in cache order.
_ARRAY_FIELDS = ("obs", "actions", "rewards", "new_obs", "terminateds", "truncateds", "episode_ids")


@dataclass(frozen=True, eq=False)
class Transitions:
    """A dataset as flat transitions (float32 arrays; actions normalised to [-1, 1]).

    Row ``i`` is ``(obs[i], actions[i], rewards[i], new_obs[i], terminateds[i], truncateds[i])``
    of episode ``episode_ids[i]`` (0-based, in dataset order).
    """

    dataset_id: str
    #: Directory of the dataset (``<Minari root>/<dataset_id>``).
    path: str
    #: Gymnasium id of the collecting environment (``None`` if the dataset does not record it).
    env_id: str | None
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    new_obs: np.ndarray
    terminateds: np.ndarray
    truncateds: np.ndarray
    episode_ids: np.ndarray
    #: Number of episodes.
    episodes: int
    #: The dataset's action-space bounds (float32, shape ``(act_dim,)``).
    action_low: np.ndarray
    action_high: np.ndarray
    obs_mean: np.ndarray
    obs_std: np.ndarray
    #: Minari reference returns (random / expert), ``None`` if the dataset has none.
    ref_min_score: float | None
    ref_max_score: float | None

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def as_dict(self) -> dict[str, np.ndarray]:
        """The six columns under RLlib's names (``Columns.OBS`` ... ``Columns.TRUNCATEDS``)."""
        return {
            Columns.OBS: self.obs,
            Columns.ACTIONS: self.actions,
            Columns.REWARDS: self.rewards,
            Columns.NEXT_OBS: self.new_obs,
            Columns.TERMINATEDS: self.terminateds,
            Columns.TRUNCATEDS: self.truncateds,
        }

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Environment actions -> [-1, 1] (as the stored ``actions``)."""
        return normalize_actions(actions, self.action_low, self.action_high)

    def denormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions in [-1, 1] -> the environment's action bounds (inverse)."""
        return denormalize_actions(actions, self.action_low, self.action_high)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, shape ``(episodes,)`` (float64)."""
        return np.bincount(
            self.episode_ids, weights=self.rewards.astype(np.float64), minlength=self.episodes
        )

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray:
        """``(return - ref_min) / (ref_max - ref_min)`` (Minari/D4RL); needs both references."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise DatasetError(
                f"dataset '{self.dataset_id}' has no reference scores; collect it with a "
                "reference policy (fttpo collect --reference-policy ...)"
            )
        return (np.asarray(returns, np.float64) - self.ref_min_score) / (
            self.ref_max_score - self.ref_min_score
        )


def normalize_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``2 (a - low) / (high - low) - 1`` clipped to [-1, 1] where both bounds are finite."""
    a = np.asarray(actions, dtype=np.float64)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    finite = np.isfinite(low) & np.isfinite(high) & (high > low)
    span = np.where(finite, high - low, 2.0)
    scaled = np.clip(2.0 * (a - np.where(finite, low, 0.0)) / span - 1.0, -1.0, 1.0)
    return np.where(finite, scaled, a).astype(np.float32)


def denormalize_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``low + (a + 1) (high - low) / 2`` where both bounds are finite (inverse of normalising)."""
    a = np.asarray(actions, dtype=np.float64)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    finite = np.isfinite(low) & np.isfinite(high) & (high > low)
    scaled = np.where(finite, low, 0.0) + (a + 1.0) * np.where(finite, high - low, 2.0) / 2.0
    return np.where(finite, scaled, a).astype(np.float32)


#: Tables handed to this process instead of its disk (by :mod:`fttpo_ray.data.object_store`:
#: a sweep trial gets the driver's table from Ray's object store), by dataset id.
_PROVIDED: dict[str, Transitions] = {}


def provide_transitions(transitions: Transitions) -> None:
    """Make :func:`load_transitions` return ``transitions`` for its dataset id in this process."""
    _PROVIDED[transitions.dataset_id] = transitions


def load_transitions(dataset_id: str, *, use_cache: bool = True) -> Transitions:
    """The local Minari dataset ``dataset_id`` as :class:`Transitions` (see the module docstring).

    Raises :class:`DatasetError` for a malformed id, a missing dataset, damaged files or spaces
    that are not flat Boxes. Within one process, unchanged files give the *same* object back
    (a small in-memory memo): treat its arrays as read-only. A table handed to the process with
    :func:`provide_transitions` is returned without reading the disk.
    """
    if dataset_id in _PROVIDED:
        return _PROVIDED[dataset_id]
    metadata = read_metadata(dataset_id)
    path = dataset_path(dataset_id)
    if use_cache:
        return _load_cached(dataset_id, str(path), files_fingerprint(path / MINARI_DATA_DIR))
    return _build(dataset_id, path, metadata, key=None)


@functools.lru_cache(maxsize=2)
def _load_cached(dataset_id: str, path: str, key: str) -> Transitions:
    """In-process memo on top of the on-disk cache (same files -> same object)."""
    return _build(dataset_id, Path(path), read_metadata(dataset_id), key=key)


def _build(dataset_id: str, path: Path, metadata: dict[str, Any], key: str | None) -> Transitions:
    observation_space, action_space = dataset_spaces(dataset_id, metadata)
    for name, space in (("observation", observation_space), ("action", action_space)):
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise DatasetError(
                f"dataset '{dataset_id}' has a {name} space {space}; only flat Box spaces are "
                "supported; flatten the environment's spaces before collecting"
            )
    low = action_space.low.astype(np.float32)
    high = action_space.high.astype(np.float32)
    arrays = read_arrays(entry_path(path, CACHE_KIND, key), _ARRAY_FIELDS) if key else None
    if arrays is None:
        start = time.perf_counter()
        arrays = _convert(
            dataset_id, path / MINARI_DATA_DIR, metadata, observation_space, action_space
        )
        arrays["actions"] = normalize_actions(arrays["actions"], low, high)
        logger.info(
            "Converted '%s' (%d transitions) in %.2f s",
            dataset_id,
            len(arrays["rewards"]),
            time.perf_counter() - start,
        )
        if key:
            write_arrays(path, CACHE_KIND, key, arrays)
    obs = arrays["obs"]
    obs_mean = obs.mean(axis=0, dtype=np.float64).astype(np.float32)
    obs_std = np.maximum(obs.std(axis=0, dtype=np.float64), OBS_STD_FLOOR).astype(np.float32)
    return Transitions(
        dataset_id=dataset_id,
        path=str(path),
        env_id=dataset_env_id(metadata),
        episodes=int(metadata[META_TOTAL_EPISODES]),
        action_low=low,
        action_high=high,
        obs_mean=obs_mean,
        obs_std=obs_std,
        ref_min_score=_optional_float(metadata.get(META_REF_MIN_SCORE)),
        ref_max_score=_optional_float(metadata.get(META_REF_MAX_SCORE)),
        **{name: arrays[name] for name in _ARRAY_FIELDS},
    )


def _convert(
    dataset_id: str,
    data_path: Path,
    metadata: dict[str, Any],
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Box,
) -> dict[str, np.ndarray]:
    """Episode files -> flat arrays (actions still in environment units)."""
    obs, actions, rewards, terms, truncs, lengths = read_episode_columns(
        dataset_id, data_path, metadata, observation_space, action_space
    )
    # Each episode has ``length + 1`` observation rows; the other columns are padded by one row.
    rows = lengths + 1
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    step_rows = np.repeat(starts, lengths) + _ranges(lengths)
    return {
        "obs": obs[step_rows],
        "new_obs": obs[step_rows + 1],
        "actions": actions[step_rows],
        "rewards": rewards[step_rows].astype(np.float32),
        "terminateds": terms[step_rows].astype(bool),
        "truncateds": truncs[step_rows].astype(bool),
        "episode_ids": np.repeat(np.arange(len(lengths), dtype=np.int64), lengths),
    }


def load_step_infos(dataset_id: str) -> dict[str, np.ndarray] | None:
    """The per-step ``infos`` a dataset stores, aligned with :func:`load_transitions`' rows:
    entry ``i`` of each array is the info the env returned with transition ``i``'s step (e.g.
    ``"prohibited"``, the glucose oracle's label of its action). ``None`` when the dataset has
    no infos (the treatment datasets)."""
    metadata = read_metadata(dataset_id)
    data_path = dataset_path(dataset_id) / MINARI_DATA_DIR
    try:
        read = read_step_infos(data_path, metadata)
    except Exception as err:  # noqa: BLE001 - pyarrow/OS errors all mean "damaged dataset"
        raise DatasetError(
            f"dataset '{dataset_id}' is damaged ({type(err).__name__}: {err}); delete it and "
            "collect it again (fttpo collect --overwrite ...)"
        ) from None
    if read is None:
        return None
    infos, lengths = read
    rows = lengths + 1
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    step_rows = np.repeat(starts, lengths) + _ranges(lengths) + 1  # after the reset's row
    return {key: values[step_rows] for key, values in infos.items()}


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without a Python loop."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - offsets


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
