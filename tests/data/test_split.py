"""The held-out episode split: by episode, deterministic, sized as documented."""

from __future__ import annotations

import numpy as np
import pytest

from fttpo_ray.data.split import held_out_episodes, held_out_mask
from fttpo_ray.errors import ConfigError


def test_split_is_by_episode_sized_and_deterministic() -> None:
    episode_ids = np.repeat(np.arange(50), 24)
    mask = held_out_mask(episode_ids, 0.2, seed=3)
    held = np.unique(episode_ids[mask])
    assert len(held) == 10  # ceil(0.2 * 50)
    # whole episodes only: no episode has transitions on both sides
    assert not np.intersect1d(held, np.unique(episode_ids[~mask])).size
    assert mask.sum() == 10 * 24
    np.testing.assert_array_equal(held, held_out_episodes(50, 0.2, seed=3))
    np.testing.assert_array_equal(mask, held_out_mask(episode_ids, 0.2, seed=3))
    assert not np.array_equal(held, held_out_episodes(50, 0.2, seed=4))


def test_split_edges() -> None:
    assert held_out_episodes(50, 0.0, seed=0).size == 0
    assert held_out_episodes(3, 0.01, seed=0).size == 1  # at least one held out
    assert held_out_episodes(3, 0.99, seed=0).size == 2  # at least one left to train on
    with pytest.raises(ConfigError, match="held_out_fraction"):
        held_out_episodes(10, 1.0, seed=0)
    with pytest.raises(ConfigError, match="at least 2 episodes"):
        held_out_episodes(1, 0.5, seed=0)
