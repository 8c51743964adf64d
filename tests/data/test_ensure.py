"""Datasets on demand: loaded when they exist, collected from a known recipe or an env."""

from __future__ import annotations

from pathlib import Path

import minari
import pytest

from fttpo_ray.data import DatasetInfo, ensure_dataset
from fttpo_ray.errors import DatasetError
from tests.helpers import TREATMENT_ID


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
