"""Datasets shared by the data tests (created once per session in the temporary Minari root;
the treatment dataset is ``tests/conftest.py``'s ``treatment_dataset``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import pytest

from fttpo_ray.data import DatasetInfo, collect_dataset, dataset_path

#: A small lethal-variant dataset (contains deaths: terminated episodes).
LETHAL_ID = "test/treatment-lethal/random-v0"


@pytest.fixture(scope="session")
def lethal_dataset(minari_root: Path) -> DatasetInfo:
    return collect_dataset(
        "fttpo/TreatmentSimLethal-v0",
        "random",
        20,
        LETHAL_ID,
        seed=0,
        reference_episodes=10,
        overwrite=True,
    )


@pytest.fixture(scope="session")
def pendulum_module_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Algorithm-checkpoint-shaped directory holding only an untrained PPO RLModule for
    Pendulum-v1 (action bounds ±2), written without starting Ray."""
    from ray.rllib.algorithms.ppo import PPOConfig

    root = tmp_path_factory.mktemp("ppo_module_ckpt")
    spec = (
        PPOConfig()
        .rl_module(model_config={"fcnet_hiddens": [8]})
        .get_rl_module_spec(env=gym.make("Pendulum-v1"))
    )
    spec.build().save_to_path(root / "learner_group" / "learner" / "rl_module" / "default_policy")
    return root


def copy_dataset(source_id: str, target_id: str) -> Path:
    """A byte copy of a dataset under a new id (metadata id rewritten), without our cache."""
    source, target = dataset_path(source_id), dataset_path(target_id)
    shutil.copytree(source / "data", target / "data")
    metadata_file = target / "data" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["dataset_id"] = target_id
    metadata_file.write_text(json.dumps(metadata))
    return target
