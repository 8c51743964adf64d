"""Glucose datasets: the noisy basal-bolus behaviour policy, collection as Ray tasks (the same
dataset with one task or several), the oracle's label of every transition, the metadata that
rebuilds the behaviour policy, and bad input.

Real simulator, real local Ray, real Minari files in the session's temporary
``MINARI_DATASETS_PATH``; a few one-day episodes (about a second each) with fixed seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import ray

from fttpo_ray.cli import main
from fttpo_ray.data import collect_dataset, ensure, load_step_infos, load_transitions
from fttpo_ray.data.collect import (
    GLUCOSE_STEP_INFOS,
    META_BOLUS_NOISE,
    META_POLICY,
    task_episodes,
)
from fttpo_ray.data.ensure import KNOWN_DATASETS, DatasetRecipe, ensure_dataset
from fttpo_ray.data.policies import (
    BASAL_BOLUS,
    BasalBolusPolicy,
    check_bolus_noise,
    make_policy,
)
from fttpo_ray.envs import GLUCOSE_ENV_ID, TREATMENT_ENV_ID
from fttpo_ray.envs.glucose import (
    INFO_BOLUS,
    INFO_PATIENT_INDEX,
    INFO_PROHIBITED,
    PATIENT_NAMES,
    basal_bolus_action,
    noisy_bolus,
)
from fttpo_ray.errors import ConfigError

#: Three one-day episodes (patients adolescent#001..#003), seeds 5, 6, 7, wide noise.
EPISODES, SEED, SIGMA = 3, 5, 0.6
TASKS_ID = "test/glucose/tasks-v0"
ONE_TASK_ID = "test/glucose/one-task-v0"


def _episodes(dataset_id: str) -> list:
    return list(minari.load_dataset(dataset_id).iterate_episodes())


def test_cli_collects_with_its_own_ray_and_shuts_it_down(
    minari_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a running Ray, ``fttpo collect`` starts a local one and shuts it down, so that a
    sweep's own ``ray.init`` afterwards works (a sweep prepares its datasets before Ray)."""
    if ray.is_initialized():
        ray.shutdown()
    argv = ["collect", "--env", GLUCOSE_ENV_ID, "--policy", BASAL_BOLUS, "--bolus-noise", "0"]
    assert main(argv + ["--episodes", "1", "--dataset-id", "test/glucose/cli-v0"]) == 0
    assert "1 episodes" in capsys.readouterr().out
    assert not ray.is_initialized()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.get(ray.remote(lambda: 1).remote()) == 1
    finally:
        ray.shutdown()
    infos = load_step_infos("test/glucose/cli-v0")
    assert infos is not None
    np.testing.assert_array_equal(infos[INFO_PATIENT_INDEX], 0)  # episode 0: adolescent#001


def test_a_cluster_address_collects_there_and_disconnects(minari_root: Path) -> None:
    """With ``--address`` the collection's tasks run on that cluster (here a one-node
    ``ray.cluster_utils.Cluster`` of 2 CPUs), and the process disconnects afterwards, leaving
    the cluster running for the sweep."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        argv = ["collect", "--env", GLUCOSE_ENV_ID, "--policy", BASAL_BOLUS, "--episodes", "2"]
        argv += ["--dataset-id", "test/glucose/cluster-v0", "--address", cluster.address]
        assert main(argv) == 0
        assert not ray.is_initialized()
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            assert ray.cluster_resources()["CPU"] == 2.0
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()
    assert len(_episodes("test/glucose/cluster-v0")) == 2


@pytest.fixture(scope="module")
def glucose_datasets(minari_root: Path, ray_local: None) -> tuple[str, str]:
    """The same recipe collected by one Ray task per patient and by a single task."""
    for dataset_id, tasks in ((TASKS_ID, None), (ONE_TASK_ID, 1)):
        collect_dataset(
            GLUCOSE_ENV_ID,
            BASAL_BOLUS,
            EPISODES,
            dataset_id,
            seed=SEED,
            bolus_noise=SIGMA,
            tasks=tasks,
            overwrite=True,
        )
    return TASKS_ID, ONE_TASK_ID


def test_one_task_or_one_per_patient_give_the_same_dataset(
    glucose_datasets: tuple[str, str],
) -> None:
    many, one = (_episodes(d) for d in glucose_datasets)
    assert len(many) == len(one) == EPISODES
    for i, (a, b) in enumerate(zip(many, one, strict=True)):
        assert a.id == b.id == i
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        for key in GLUCOSE_STEP_INFOS:
            np.testing.assert_array_equal(a.infos[key], b.infos[key])
        # Episode i: patient i % 30, every info row (the reset's and each step's) says so.
        np.testing.assert_array_equal(a.infos[INFO_PATIENT_INDEX], i)
        assert len(a.infos[INFO_PROHIBITED]) == len(a.rewards) + 1
    # Different patients and days: the episodes are not copies of each other.
    assert not np.array_equal(many[0].observations[0], many[1].observations[0])
    storage = minari.load_dataset(TASKS_ID).storage
    seeds = [m["seed"] for m in storage.get_episode_metadata(range(EPISODES))]
    assert seeds == [SEED + i for i in range(EPISODES)]


def test_every_label_is_the_oracle_of_the_stored_transition(
    glucose_datasets: tuple[str, str],
) -> None:
    """Replaying episode 1 (reset seed, patient, stored actions) gives the stored observations,
    and the oracle asked before each step gives the stored ``prohibited`` label."""
    episode = _episodes(TASKS_ID)[1]
    env = gym.make(GLUCOSE_ENV_ID)
    obs, _ = env.reset(seed=SEED + 1, options={"patient": PATIENT_NAMES[1]})
    labels = []
    for t, action in enumerate(episode.actions):
        np.testing.assert_array_equal(obs, episode.observations[t])
        labels.append(bool(env.unwrapped.prohibited(action)[0]))
        obs, *_ = env.step(action)
    np.testing.assert_array_equal(labels, episode.infos[INFO_PROHIBITED][1:])
    # The stored bolus is the executed action's dose (the pump's increment aside).
    doses = (episode.actions[:, 0].astype(np.float64) + 1.0) / 2.0 * env.unwrapped.max_bolus
    np.testing.assert_allclose(episode.infos[INFO_BOLUS][1:], doses, atol=0.05)


def test_step_infos_are_aligned_with_the_transitions(glucose_datasets: tuple[str, str]) -> None:
    transitions = load_transitions(TASKS_ID)
    infos = load_step_infos(TASKS_ID)
    assert infos is not None and set(infos) == set(GLUCOSE_STEP_INFOS)
    expected = np.concatenate([e.infos[INFO_PROHIBITED][1:] for e in _episodes(TASKS_ID)])
    np.testing.assert_array_equal(infos[INFO_PROHIBITED], expected)
    assert infos[INFO_PROHIBITED].dtype == bool and len(expected) == len(transitions)
    np.testing.assert_array_equal(infos[INFO_PATIENT_INDEX], transitions.episode_ids)
    # The bolus of transition i is its (denormalised) action.
    np.testing.assert_allclose(
        infos[INFO_BOLUS], (transitions.actions[:, 0] + 1.0) / 2.0 * 30.0, atol=0.05
    )


def test_metadata_rebuilds_the_behaviour_policy(glucose_datasets: tuple[str, str]) -> None:
    metadata = minari.load_dataset(TASKS_ID).storage.metadata
    assert metadata[META_POLICY] == BASAL_BOLUS and metadata[META_BOLUS_NOISE] == SIGMA
    assert "sigma=0.6" in metadata["algorithm_name"]
    assert "ref_min_score" not in metadata  # no reference policy on the glucose env
    env = gym.make(GLUCOSE_ENV_ID)
    rebuilt = make_policy(metadata[META_POLICY], env, bolus_noise=metadata[META_BOLUS_NOISE])
    assert isinstance(rebuilt, BasalBolusPolicy) and rebuilt.sigma == SIGMA


def test_a_known_glucose_id_is_collected_with_its_own_recipe(
    glucose_datasets: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ensure_dataset`` (what a sweep calls, env named in the YAML, no episode count) collects a
    known glucose id with its recipe: the basal-bolus policy and its noise."""
    tiny = "fttpo/glucose/tiny-test-v0"
    recipe = DatasetRecipe(GLUCOSE_ENV_ID, 2, BASAL_BOLUS, bolus_noise=0.3)
    monkeypatch.setitem(ensure.KNOWN_DATASETS, tiny, recipe)
    info = ensure_dataset(tiny, env_id=GLUCOSE_ENV_ID)
    assert info.episodes == 2
    assert minari.load_dataset(tiny).storage.metadata[META_BOLUS_NOISE] == 0.3


def test_the_known_glucose_datasets() -> None:
    for name, sigma in (("moderate", 0.3), ("wide", 0.6)):
        recipe = KNOWN_DATASETS[f"fttpo/glucose/basal-bolus-{name}-v0"]
        assert (recipe.env_id, recipe.policy, recipe.bolus_noise) == (
            GLUCOSE_ENV_ID,
            BASAL_BOLUS,
            sigma,
        )
        assert recipe.episodes == 840 and recipe.episodes % len(PATIENT_NAMES) == 0


def test_task_episodes_split_the_patients() -> None:
    # Episode i is patient i % 3; patient p goes to task p % 2.
    assert task_episodes(7, 3, 2) == [[0, 2, 3, 5, 6], [1, 4]]
    assert task_episodes(4, 30, None) == [[0], [1], [2], [3]]  # one task per patient
    assert task_episodes(61, 30, None)[1] == [1, 31]
    assert task_episodes(5, 30, 99) == task_episodes(5, 30, None)  # capped
    with pytest.raises(ConfigError, match=r"`tasks` must be an integer >= 1; got 0"):
        task_episodes(5, 30, 0)


def test_noisy_bolus_is_log_normal_around_the_dose() -> None:
    assert noisy_bolus(2.0, 0.5, 1.0) == pytest.approx(2.0 * math.exp(0.5), rel=1e-15)
    assert noisy_bolus(3.0, 0.6, 0.0) == 3.0  # z = 0: the median, the clean dose
    np.testing.assert_array_equal(noisy_bolus([1.0, 2.0], 0.0, [0.3, -2.0]), [1.0, 2.0])
    # The policy's draws: log(bolus / dose) / sigma is N(0, 1); 4 000 draws, mean within
    # 4 s.e. (0.063) of 0, standard deviation within 0.06 of 1.
    env = gym.make(GLUCOSE_ENV_ID)
    obs, _ = env.reset(seed=0)
    policy = BasalBolusPolicy(env, 0.3, seed=1)
    dose = (basal_bolus_action(obs)[0] + 1.0) / 2.0 * 30.0
    boluses = np.array([(policy.act(obs, env)[0] + 1.0) / 2.0 * 30.0 for _ in range(4000)])
    z = np.log(boluses.astype(np.float64) / dose) / 0.3
    assert abs(z.mean()) < 0.063 and abs(z.std() - 1.0) < 0.06
    # Reseeding restarts the same draws.
    policy.seed(7)
    first = [policy.act(obs, env) for _ in range(3)]
    policy.seed(7)
    np.testing.assert_array_equal(first, [policy.act(obs, env) for _ in range(3)])


def test_zero_noise_is_exactly_the_basal_bolus_controller() -> None:
    env = gym.make(GLUCOSE_ENV_ID)
    policy = make_policy(BASAL_BOLUS, env, seed=3)  # sigma defaults to 0
    assert policy.sigma == 0.0
    obs, _ = env.reset(seed=4, options={"patient": "child#002"})
    done = False
    while not done:
        action = policy.act(obs, env)
        assert action.dtype == np.float32 and action.shape == (1,)
        np.testing.assert_array_equal(action, basal_bolus_action(obs))
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated


@pytest.mark.parametrize("sigma", [-0.1, 2.5, math.nan, math.inf, "0.3", True, None])
def test_bad_noise_is_a_config_error(sigma: object) -> None:
    assert check_bolus_noise(np.float32(0.5)) == 0.5 and check_bolus_noise(2) == 2.0
    with pytest.raises(ConfigError, match=r"`bolus_noise` .* must be a number in \[0, 2\]; got"):
        check_bolus_noise(sigma)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--bolus-noise", "2.5"],
            "`bolus_noise` (--bolus-noise, the basal-bolus policy's log-normal sigma) must be a "
            "number in [0, 2]; got 2.5",
        ),
        (["--policy", "random", "--bolus-noise", "0.3"], "policy 'random' takes none"),
        (["--env", TREATMENT_ENV_ID], "policy 'basal-bolus' doses insulin on the glucose env"),
        (["--env", TREATMENT_ENV_ID, "--policy", "random", "--tasks", "2"], "`tasks` splits"),
        (["--tasks", "0"], "`tasks` must be an integer >= 1; got 0"),
    ],
)
def test_collect_cli_errors_exit_2_with_one_line(
    minari_root: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    options = {"--env": GLUCOSE_ENV_ID, "--policy": BASAL_BOLUS, "--episodes": "1"}
    options.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["collect", "--dataset-id", "test/glucose/err-v0", "--reference-policy", "none"]
    assert main(argv + [x for kv in options.items() for x in kv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fttpo collect: error: ") and message in err
    assert not (minari_root / "test" / "glucose" / "err-v0").exists()


def test_treatment_datasets_have_no_step_infos(minari_root: Path) -> None:
    collect_dataset(
        TREATMENT_ENV_ID,
        "random",
        2,
        "test/glucose/treatment-v0",
        seed=0,
        reference_policy=None,
        overwrite=True,
    )
    assert load_step_infos("test/glucose/treatment-v0") is None
