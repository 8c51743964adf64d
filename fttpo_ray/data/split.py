"""A held-out split of a dataset's episodes (docs/algorithm.md, offline model selection).

Offline model selection and the safety certificate's calibration read transitions the learner
never trains on. The split is by episode, never by transition: transitions of one episode are
correlated (one hidden patient, one covariance), so a transition-level split would leak.
The split depends only on the episode ids, the fraction and the seed, so every process that
loads the same dataset with the same settings draws the same split.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from fttpo_ray.errors import ConfigError


def check_split(fraction: float, seed: int) -> None:
    """Raise :class:`ConfigError` unless ``fraction`` is in [0, 1) and ``seed`` an integer >= 0."""
    if isinstance(fraction, bool) or not (
        isinstance(fraction, numbers.Real) and 0.0 <= fraction < 1.0
    ):
        raise ConfigError(f"`held_out_fraction` must be in [0, 1); got {fraction!r}")
    if isinstance(seed, bool) or not (isinstance(seed, numbers.Integral) and seed >= 0):
        raise ConfigError(f"`split_seed` must be an integer >= 0; got {seed!r}")


def held_out_episodes(num_episodes: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted ids of the held-out episodes: ``ceil(fraction * num_episodes)`` of ``0..n-1``.

    ``fraction = 0`` holds out nothing; otherwise at least one episode is held out and at
    least one is left for training. Drawn without replacement by ``numpy``'s PCG64 seeded
    with ``seed``.
    """
    check_split(fraction, seed)
    if not (isinstance(num_episodes, numbers.Integral) and num_episodes >= 0):
        raise ConfigError(f"the number of episodes must be an integer >= 0; got {num_episodes!r}")
    if fraction == 0.0 or num_episodes == 0:
        return np.zeros(0, dtype=np.int64)
    if num_episodes < 2:
        raise ConfigError(
            f"`held_out_fraction`={fraction} needs a dataset of at least 2 episodes (one to "
            f"train on, one held out); this one has {num_episodes}; set it to 0"
        )
    count = min(max(math.ceil(fraction * num_episodes), 1), num_episodes - 1)
    rng = np.random.default_rng(int(seed))
    return np.sort(rng.choice(num_episodes, size=count, replace=False)).astype(np.int64)


def held_out_mask(episode_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over transitions: ``True`` where the transition's episode is held out.

    ``episode_ids`` are 0-based and dense (as :class:`~fttpo_ray.data.Transitions` stores them).
    """
    ids = np.asarray(episode_ids)
    num_episodes = int(ids.max()) + 1 if ids.size else 0
    return np.isin(ids, held_out_episodes(num_episodes, fraction, seed))
