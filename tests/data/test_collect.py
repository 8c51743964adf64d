"""Collecting Minari datasets: contents, metadata, atomic writes, policies and bad input.

End-to-end with real gymnasium environments and real Minari files in a temporary
``MINARI_DATASETS_PATH`` (tests/conftest.py); fixed seeds throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest

from fttpo_ray.data import DatasetInfo, collect_dataset, dataset_path, load_transitions
from fttpo_ray.data.collect import META_POLICY, META_SEED
from fttpo_ray.data.policies import CheckpointPolicy, find_module_checkpoint
from fttpo_ray.envs.treatment import INFO_PROHIBITED
from fttpo_ray.errors import ConfigError, DatasetError, EnvironmentSpecError
from tests.data.conftest import LETHAL_ID
from tests.helpers import TREATMENT_ID


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".fttpo-tmp-")]


def test_treatment_default_has_50_episodes_and_1200_steps(treatment_dataset: DatasetInfo) -> None:
    info = treatment_dataset
    assert (info.episodes, info.steps) == (50, 1200)
    assert info.ref_min_score is not None and info.ref_max_score is not None
    assert info.ref_max_score > info.ref_min_score  # the oracle beats the random policy
    text = str(info)
    assert TREATMENT_ID in text and "50 episodes" in text and "1200 steps" in text and "±" in text


def test_fresh_process_reads_the_dataset_and_recovers_the_env(
    treatment_dataset: DatasetInfo,
) -> None:
    """A new interpreter that never imports fttpo_ray itself: Minari reads the dataset and the
    stored env spec recreates the simulator (its entry point is importable)."""
    code = (
        "import json, minari\n"
        f"d = minari.load_dataset({TREATMENT_ID!r}, download=False)\n"
        "env = d.recover_environment()\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(json.dumps([d.total_episodes, d.total_steps, env.spec.id, obs.shape[0],"
        " d.storage.metadata['ref_max_score'] is not None]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        50,
        1200,
        "fttpo/TreatmentSim-v0",
        8,
        True,
    ]


def test_metadata_records_policy_seed_and_reference_scores(treatment_dataset: DatasetInfo) -> None:
    metadata = minari.load_dataset(TREATMENT_ID).storage.metadata
    assert metadata["algorithm_name"].startswith("random")
    assert metadata[META_POLICY] == "random" and metadata[META_SEED] == 0
    assert metadata["data_format"] == "arrow"
    assert metadata["num_episodes_average_score"] == 100
    assert metadata["ref_min_score"] == pytest.approx(treatment_dataset.ref_min_score)
    episode = next(iter(minari.load_dataset(TREATMENT_ID).storage.get_episode_metadata([3])))
    assert episode["seed"] == 3


def test_dataset_matches_a_replay_of_the_same_seeds(treatment_dataset: DatasetInfo) -> None:
    """Exact: replaying episode 7 with its reset seed and its stored actions reproduces it."""
    episode = minari.load_dataset(TREATMENT_ID)[7]
    env = gym.make("fttpo/TreatmentSim-v0")
    obs, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs, episode.observations[0])
    for t, action in enumerate(episode.actions):
        obs, reward, terminated, truncated, _ = env.step(action)
        np.testing.assert_array_equal(obs, episode.observations[t + 1])
        assert reward == episode.rewards[t]
    assert truncated and not terminated


def test_same_seed_gives_identical_data(minari_root: Path) -> None:
    collect_dataset(
        "fttpo/TreatmentSim-v0", "random", 3, "test/same-a-v0", seed=5, reference_policy=None
    )
    collect_dataset(
        "fttpo/TreatmentSim-v0", "random", 3, "test/same-b-v0", seed=5, reference_policy=None
    )
    a, b = load_transitions("test/same-a-v0"), load_transitions("test/same-b-v0")
    for name in ("obs", "actions", "rewards", "new_obs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.ref_min_score is None and a.ref_max_score is None


def test_lethal_dataset_contains_deaths(lethal_dataset: DatasetInfo) -> None:
    transitions = load_transitions(LETHAL_ID)
    deaths = transitions.terminateds.sum()
    assert deaths > 10  # P(death in 24 random doses) ≈ 0.92 over 20 episodes
    assert (transitions.rewards[transitions.terminateds] == -100.0).all()
    assert not (transitions.terminateds & transitions.truncateds).any()
    assert deaths + transitions.truncateds.sum() == 20


def test_existing_id_is_refused_unless_overwrite(minari_root: Path) -> None:
    dataset_id = "test/overwrite-v0"
    collect_dataset("fttpo/TreatmentSim-v0", "random", 2, dataset_id, reference_policy=None)
    with pytest.raises(DatasetError) as err:
        collect_dataset("fttpo/TreatmentSim-v0", "random", 3, dataset_id, reference_policy=None)
    message = str(err.value)
    assert message == (
        f"dataset '{dataset_id}' already exists at {dataset_path(dataset_id)}; pass --overwrite "
        "(overwrite=True) to replace it"
    )
    info = collect_dataset(
        "fttpo/TreatmentSim-v0", "random", 3, dataset_id, overwrite=True, reference_policy=None
    )
    assert info.episodes == 3 and minari.load_dataset(dataset_id).total_episodes == 3
    assert _leftovers(minari_root) == []


def test_failure_while_writing_leaves_nothing_and_keeps_the_old_dataset(
    minari_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minari.dataset._storages.arrow_storage import ArrowStorage

    def broken(self: object, episodes: object) -> None:
        raise OSError(28, "No space left on device")

    dataset_id = "test/atomic-v0"
    monkeypatch.setattr(ArrowStorage, "update_episodes", broken)
    with pytest.raises(DatasetError, match="could not write dataset 'test/atomic-v0'"):
        collect_dataset("fttpo/TreatmentSim-v0", "random", 2, dataset_id, reference_policy=None)
    assert not dataset_path(dataset_id).exists() and _leftovers(minari_root) == []

    monkeypatch.undo()
    collect_dataset("fttpo/TreatmentSim-v0", "random", 2, dataset_id, reference_policy=None)
    monkeypatch.setattr(ArrowStorage, "update_episodes", broken)
    with pytest.raises(DatasetError):
        collect_dataset(
            "fttpo/TreatmentSim-v0", "random", 4, dataset_id, overwrite=True, reference_policy=None
        )
    monkeypatch.undo()
    assert minari.load_dataset(dataset_id).total_episodes == 2
    assert _leftovers(minari_root) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"episodes": 0}, ConfigError, "`episodes` must be an integer >= 1; got 0"),
        ({"env_id": "NoSuchEnv-v3"}, EnvironmentSpecError, "unknown environment id 'NoSuchEnv-v3'"),
        ({"dataset_id": "no version"}, DatasetError, "is malformed"),
        ({"policy": "/no/such/checkpoint"}, ConfigError, "neither 'random' nor an existing"),
        (
            {"policy": "oracle", "env_id": "Pendulum-v1"},
            ConfigError,
            "needs an env with a safety oracle",
        ),
    ],
)
def test_bad_input_raises_one_line_errors(
    minari_root: Path, kwargs: dict, error: type, match: str
) -> None:
    arguments = {
        "env_id": "fttpo/TreatmentSim-v0",
        "policy": "random",
        "episodes": 1,
        "dataset_id": "test/bad-input-v0",
        "reference_policy": None,
        **kwargs,
    }
    with pytest.raises(error, match=match) as err:
        collect_dataset(**arguments)
    assert "\n" not in str(err.value)
    assert not dataset_path("test/bad-input-v0").exists() and _leftovers(minari_root) == []


ORACLE_EPISODES = 5
#: Prohibited doses among the 1 200 transitions of the random treatment dataset (seed 0).
RANDOM_VIOLATIONS = 658


def replayed_violations(dataset_id: str) -> tuple[int, int]:
    """``(violations, transitions)`` of a treatment dataset collected with seed 0: every episode
    is replayed in the simulator (reset seed ``i`` for episode ``i``, the dataset's actions) and
    each transition labelled by the simulator's ``prohibited`` info. The replay must reproduce
    every next observation exactly, so the labels are those of the recorded transitions."""
    transitions = load_transitions(dataset_id)
    env = gym.make("fttpo/TreatmentSim-v0")
    violations = 0
    for episode in range(transitions.episodes):
        rows = np.flatnonzero(transitions.episode_ids == episode)
        obs, _ = env.reset(seed=episode)
        np.testing.assert_array_equal(obs, transitions.obs[rows[0]])
        for row in rows:
            obs, _, _, _, info = env.step(transitions.actions[row])
            np.testing.assert_array_equal(obs, transitions.new_obs[row])
            violations += bool(info[INFO_PROHIBITED])
    return violations, len(transitions)


def test_oracle_policy_dataset_has_no_violations(minari_root: Path) -> None:
    collect_dataset(
        "fttpo/TreatmentSim-v0", "oracle", ORACLE_EPISODES, "test/oracle-v0",
        reference_policy=None,
    )  # fmt: skip
    transitions = load_transitions("test/oracle-v0")
    env = gym.make("fttpo/TreatmentSim-v0")
    env.reset(seed=0)
    np.testing.assert_array_equal(transitions.actions[0], env.unwrapped.myopic_oracle_action())
    violations, labelled = replayed_violations("test/oracle-v0")
    assert labelled == ORACLE_EPISODES * 24
    assert violations == 0, f"{violations} of {labelled} oracle transitions are prohibited doses"


def test_random_policy_dataset_has_violations(treatment_dataset: DatasetInfo) -> None:
    """The same count on the random dataset is far from 0: the labelling can find violations."""
    violations, labelled = replayed_violations(TREATMENT_ID)
    assert labelled == 1200
    assert violations == RANDOM_VIOLATIONS, f"{violations} of {labelled} prohibited"


def test_checkpoint_policy_acts_within_the_bounds(
    minari_root: Path, pendulum_module_checkpoint: Path
) -> None:
    assert find_module_checkpoint(pendulum_module_checkpoint).name == "default_policy"
    info = collect_dataset(
        "Pendulum-v1", str(pendulum_module_checkpoint), 2, "test/pendulum-ckpt-v0", seed=1
    )
    assert (info.episodes, info.steps) == (2, 400)
    assert info.ref_min_score is None  # no reference policy for Pendulum
    episode = minari.load_dataset("test/pendulum-ckpt-v0")[0]
    assert np.abs(episode.actions).max() <= 2.0
    assert (
        "(deterministic)"
        in minari.load_dataset("test/pendulum-ckpt-v0").storage.metadata["algorithm_name"]
    )
    # Deterministic: the action is the distribution's mode, mapped from [-1, 1] to [-2, 2].
    env = gym.make("Pendulum-v1")
    policy = CheckpointPolicy(pendulum_module_checkpoint, env, deterministic=True)
    obs = episode.observations[0]
    np.testing.assert_array_equal(policy.act(obs, env), policy.act(obs, env))
    np.testing.assert_allclose(policy.act(obs, env), episode.actions[0], rtol=1e-6)
    sampled = CheckpointPolicy(pendulum_module_checkpoint, env, deterministic=False, seed=0)
    assert not np.array_equal(sampled.act(obs, env), sampled.act(obs, env))


def test_checkpoint_for_another_env_is_rejected(pendulum_module_checkpoint: Path) -> None:
    with pytest.raises(EnvironmentSpecError, match="does not fit the env"):
        collect_dataset(
            "fttpo/TreatmentSim-v0",
            str(pendulum_module_checkpoint),
            1,
            "test/wrong-ckpt-v0",
            reference_policy=None,
        )


def test_mujoco_halfcheetah_random_dataset(minari_root: Path) -> None:
    info = collect_dataset("HalfCheetah-v5", "random", 2, "test/halfcheetah/random-v0")
    assert (info.episodes, info.steps) == (2, 2000)
    assert info.ref_min_score is None
    transitions = load_transitions("test/halfcheetah/random-v0")
    assert transitions.obs.shape == (2000, 17) and transitions.obs.dtype == np.float32
    assert transitions.actions.shape == (2000, 6)
    assert transitions.truncateds.sum() == 2 and not transitions.terminateds.any()


@pytest.mark.slow
def test_real_algorithm_checkpoint(minari_root: Path, tmp_path: Path) -> None:
    """A PPO Algorithm built (no training) and saved with ``save_to_path``; ~20 s (Ray start)."""
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    config = (
        PPOConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0)
        .learners(num_learners=0)
        .rl_module(model_config={"fcnet_hiddens": [8]})
    )
    algo = config.build_algo()
    try:
        checkpoint = algo.save_to_path(str(tmp_path / "ppo"))
    finally:
        algo.stop()
        ray.shutdown()
    info = collect_dataset("Pendulum-v1", checkpoint, 1, "test/pendulum-algo-ckpt-v0", seed=0)
    assert info.steps == 200
    assert os.path.isdir(Path(checkpoint) / "learner_group" / "learner" / "rl_module")
