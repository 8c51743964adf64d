"""FtTPO's data preparation, done once where the algorithm is set up (:meth:`FtTPO.setup`).

:func:`prepare` makes the dataset ready and computes, once, everything the algorithm derives
from it: the transitions and their held-out split (:func:`fttpo_ray.algorithms.offline_data.
split_transitions`), the environment and its spaces, the observation statistics of the training
episodes (docs/algorithm.md §2.1), and whether the dataset is held in memory or streamed. The
result, :class:`PreparedData`, is handed to the sampler (:func:`fttpo_ray.algorithms.
offline_data.handing_over`), to the certificate (:func:`fttpo_ray.algorithms.fttpo.certificate.
fit_certificate`) and, through :meth:`PreparedData.configure`, to the config and so the model
config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from fttpo_ray.algorithms.offline_data import (
    InMemoryOfflineData,
    SplitTransitions,
    check_streamable,
    fits_in_memory,
    in_memory_input_kwargs,
    split_transitions,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PreparedData:
    """What FtTPO derives from its dataset, computed once by :func:`prepare`."""

    dataset_id: str
    #: The transitions and their held-out mask (the dataset's split).
    split: SplitTransitions
    #: Held in memory (:class:`InMemoryOfflineData`), else streamed from Parquet (Ray Data).
    in_memory: bool
    #: The evaluation environment (the dataset's, or the config's) and the spaces.
    env: Any
    observation_space: gym.Space | None
    action_space: gym.Space | None
    #: Mean and std of the training episodes' observations, or ``None`` (not normalised).
    obs_statistics: tuple[list[float], list[float]] | None

    @property
    def transitions(self) -> Any:
        return self.split.transitions

    @property
    def held_out(self) -> np.ndarray:
        """Mask of the held-out transitions."""
        return self.split.held_out

    @property
    def train_episode_ids(self) -> np.ndarray:
        """Sorted ids of the episodes trained on."""
        return self.split.train_episode_ids

    def configure(self, config: Any) -> None:
        """Point ``config`` at the prepared data: env and spaces, observation statistics (for
        the model config) and the offline input (the in-memory table, or Parquet streamed
        through RLlib's ``OfflineData`` with a pre-learner that only casts columns)."""
        config.env = self.env
        config.observation_space = self.observation_space
        config.action_space = self.action_space
        config._obs_statistics = self.obs_statistics
        if self.in_memory:
            config.input_ = [self.transitions.path]
            config.offline_data_class = InMemoryOfflineData
            config.input_read_method_kwargs = in_memory_input_kwargs(
                self.dataset_id, config.held_out_fraction, config.split_seed
            )
            return
        from fttpo_ray.algorithms.fttpo.prelearner import FlatTransitionPreLearner
        from fttpo_ray.data import to_parquet

        # A local shuffle buffer stands in for uniform sampling.
        config.input_ = [to_parquet(self.dataset_id)]
        config.input_read_method = "read_parquet"
        config.offline_data_class = None
        config.prelearner_class = FlatTransitionPreLearner
        config.map_batches_kwargs = {"concurrency": 1, **(config.map_batches_kwargs or {})}
        config.iter_batches_kwargs = {
            "local_shuffle_buffer_size": 64 * config.train_batch_size_per_learner,
            **(config.iter_batches_kwargs or {}),
        }


def observation_statistics(split: SplitTransitions) -> tuple[list[float], list[float]]:
    """Mean and std (floored at ``OBS_STD_FLOOR``) of the training episodes' observations."""
    from fttpo_ray.data.transitions import OBS_STD_FLOOR

    obs = split.transitions.obs[split.train].astype(np.float64)
    std = np.maximum(obs.std(axis=0), OBS_STD_FLOOR)
    return obs.mean(axis=0).tolist(), std.tolist()


def _spaces(config: Any, env: Any) -> tuple[gym.Space | None, gym.Space | None]:
    if isinstance(env, str) and config.observation_space is None:
        made = gym.make(env, **(config.env_config or {}))
        spaces = made.observation_space, made.action_space
        made.close()
        return spaces
    return config.observation_space, config.action_space


def prepare(config: Any) -> PreparedData:
    """Make ``config``'s dataset ready and derive what the algorithm needs from it, once.

    Collects the dataset if it is missing and collectable (a missing one that is not raises
    :class:`~fttpo_ray.errors.DatasetError` naming it and how to create it); the environment is
    the dataset's, or the config's checked against it. In a sweep trial the table comes from
    Ray's object store when the driver shared it (:mod:`fttpo_ray.data.object_store`; the driver
    checked it against the env), so the node needs no copy of the dataset. Held in memory up to
    ``in_memory_max_transitions`` transitions, else streamed (which needs
    ``held_out_fraction=0``). Reads ``config``, changes nothing in it.
    """
    from fttpo_ray.data import check_compatible, ensure_dataset, load_transitions
    from fttpo_ray.data.object_store import shared_transitions

    dataset_id = config.dataset_id
    transitions = shared_transitions(dataset_id)
    if transitions is None:
        ensure_dataset(dataset_id)
        transitions = load_transitions(dataset_id)
        if config.env and isinstance(config.env, str):
            check_compatible(dataset_id, config.env)
    env = config.env or transitions.env_id
    observation_space, action_space = _spaces(config, env)
    in_memory = fits_in_memory(len(transitions), config.in_memory_max_transitions)
    if not in_memory:
        check_streamable(
            dataset_id,
            len(transitions),
            config.in_memory_max_transitions,
            config.held_out_fraction,
        )
    split = split_transitions(
        dataset_id, config.held_out_fraction, config.split_seed, transitions=transitions
    )
    return PreparedData(
        dataset_id=dataset_id,
        split=split,
        in_memory=in_memory,
        env=env,
        observation_space=observation_space,
        action_space=action_space,
        obs_statistics=observation_statistics(split) if config.normalize_observations else None,
    )
