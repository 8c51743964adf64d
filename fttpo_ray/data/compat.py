"""Whether a dataset fits an environment: same observation and action shapes and bounds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from fttpo_ray.data.envs import make_env
from fttpo_ray.data.minari_files import dataset_env_id, dataset_spaces, read_metadata
from fttpo_ray.errors import DatasetError


def check_compatible(dataset_id: str, env_id: str) -> None:
    """Raise :class:`DatasetError` unless the env's spaces have the dataset's shapes and bounds.

    Dtypes are not compared (transitions are float32 whatever the env's dtype).
    """
    dataset_obs, dataset_act = dataset_spaces(dataset_id)
    env = make_env(env_id)
    try:
        pairs = (
            ("observation", dataset_obs, env.observation_space),
            ("action", dataset_act, env.action_space),
        )
        for name, ours, theirs in pairs:
            if not _same_box(ours, theirs):
                raise DatasetError(
                    f"dataset '{dataset_id}' has {name} space {ours} but env '{env_id}' has "
                    f"{theirs}; use a dataset collected on '{env_id}' or that dataset's env "
                    f"('{dataset_env_id(read_metadata(dataset_id))}')"
                )
    finally:
        env.close()


def _same_box(a: gym.Space, b: gym.Space) -> bool:
    if not (isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box)):
        return a == b
    return (
        a.shape == b.shape
        and np.array_equal(a.low.astype(np.float64), b.low.astype(np.float64))
        and np.array_equal(a.high.astype(np.float64), b.high.astype(np.float64))
    )
