"""Collect a local Minari dataset with a behaviour policy (``fttpo collect``).

Episodes are rolled out with ``env.reset(seed=seed + i)`` and written through Minari's own
storage (``MinariStorage``, Arrow format — no jax/h5py needed), so ``minari.load_dataset(id)``
reads them in any process. Metadata: the env spec (its entry point is a string, so
``dataset.recover_environment()`` works without importing fttpo_ray), ``algorithm_name`` = the
behaviour policy, a description, the seed, and — where a reference policy exists — Minari's
reference scores: ``ref_min_score`` = mean return of the uniform-random policy and
``ref_max_score`` = mean return of the reference policy, each over ``reference_episodes``
episodes with seeds ``REFERENCE_SEED + i`` (the same for every dataset of an env, so normalised
scores are comparable across datasets). The treatment envs' reference is the myopic oracle.

**Glucose datasets** (the env :class:`~fttpo_ray.envs.glucose.GlucoseBolusEnv`, one simulated day
per episode costs about a second) are collected as Ray tasks, one per patient by default: episode
``i`` is patient ``patients[i % len(patients)]`` (reset option ``{"patient": name}``) with reset
seed ``seed + i``, and the policy's randomness restarts from ``seed + i``
(:meth:`~fttpo_ray.data.policies.Policy.seed`) before it, so the dataset is the same with one task
or many. An initialised Ray is used as it is (a cluster collects in parallel); otherwise a local
one is started for the collection and shut down after it. Every step stores the infos
:data:`GLUCOSE_STEP_INFOS` (the oracle's label ``prohibited`` of the executed bolus, the bolus in
U, the patient's index) as Minari's per-step ``infos`` (with the reset's, ``steps + 1`` rows;
:func:`~fttpo_ray.data.transitions.load_step_infos` aligns them with the transitions). A
basal-bolus behaviour policy records its noise under :data:`META_BOLUS_NOISE`.

Writing is atomic: the dataset is built in a hidden temporary directory of the Minari root and
renamed into place; on any failure nothing is left behind, and an existing dataset is replaced
only with ``overwrite=True`` (after the new one is complete).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from fttpo_ray.data.envs import make_env
from fttpo_ray.data.minari_files import (
    META_DATASET_ID,
    META_REF_MAX_SCORE,
    META_REF_MIN_SCORE,
    MINARI_DATA_DIR,
    dataset_exists,
    dataset_path,
    make_staging_dir,
)
from fttpo_ray.data.policies import BASAL_BOLUS, ORACLE, Policy, RandomPolicy, make_policy
from fttpo_ray.data.transitions import load_transitions
from fttpo_ray.defaults import EVALUATION_SEED
from fttpo_ray.envs.glucose import (
    INFO_BOLUS,
    INFO_PATIENT_INDEX,
    INFO_PROHIBITED,
    OPTION_PATIENT,
    GlucoseBolusEnv,
)
from fttpo_ray.errors import ConfigError, DatasetError, EnvironmentSpecError, FttpoError

logger = logging.getLogger(__name__)

#: Minari storage format we write (needs only pyarrow).
DATA_FORMAT = "arrow"
#: Seeds of the reference-score episodes: ``REFERENCE_SEED + i``, the episodes that an
#: evaluation sees by default (so a normalised score compares returns on the same start states).
REFERENCE_SEED = EVALUATION_SEED
#: Episodes averaged for each reference score (Minari's default).
DEFAULT_REFERENCE_EPISODES = 100
#: ``reference_policy="auto"``: the oracle where the env has one, otherwise none.
AUTO = "auto"
#: Extra metadata keys written by fttpo-ray.
META_SEED = "fttpo_seed"
META_POLICY = "fttpo_behaviour_policy"
META_DETERMINISTIC = "fttpo_deterministic"
META_REFERENCE_POLICY = "fttpo_reference_policy"
META_FTTPO_VERSION = "fttpo_ray_version"
#: The basal-bolus behaviour policy's log-normal bolus noise sigma (with :data:`META_POLICY`, what
#: rebuilds the behaviour policy: ``make_policy(policy, env, bolus_noise=sigma)``).
META_BOLUS_NOISE = "fttpo_bolus_noise_sigma"
#: Per-step ``infos`` of glucose datasets (keys of the env's ``info``).
GLUCOSE_STEP_INFOS = (INFO_PROHIBITED, INFO_BOLUS, INFO_PATIENT_INDEX)
#: The installed distribution whose version is written as :data:`META_FTTPO_VERSION`.
DISTRIBUTION = "fttpo-ray"
#: ``ray.init``'s address that always starts a new local Ray.
LOCAL_RAY = "local"
#: Prefix of the temporary directories in the Minari root (hidden: Minari skips them).
_TMP_PREFIX = ".fttpo-tmp-"


@dataclass(frozen=True)
class DatasetInfo:
    """Summary of a local dataset (what ``fttpo collect`` prints)."""

    dataset_id: str
    path: str
    episodes: int
    steps: int
    return_mean: float
    return_se: float
    ref_min_score: float | None = None
    ref_max_score: float | None = None

    def __str__(self) -> str:
        se = "n/a" if math.isnan(self.return_se) else f"{self.return_se:.3f}"
        text = (
            f"dataset '{self.dataset_id}' at {self.path}: {self.episodes} episodes, "
            f"{self.steps} steps, return {self.return_mean:.3f} ± {se} (mean ± s.e.)"
        )
        if self.ref_min_score is not None and self.ref_max_score is not None:
            text += f", reference scores {self.ref_min_score:.3f} / {self.ref_max_score:.3f}"
        return text


def _summary(
    dataset_id: str,
    path: Path,
    returns: np.ndarray,
    steps: int,
    ref_min: float | None,
    ref_max: float | None,
) -> DatasetInfo:
    n = len(returns)
    se = float(returns.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return DatasetInfo(
        dataset_id=dataset_id,
        path=str(path),
        episodes=n,
        steps=steps,
        return_mean=float(returns.mean()),
        return_se=se,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
    )


def dataset_info(dataset_id: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of an existing local dataset."""
    transitions = load_transitions(dataset_id)
    return _summary(
        dataset_id,
        Path(transitions.path),
        transitions.episode_returns(),
        len(transitions),
        transitions.ref_min_score,
        transitions.ref_max_score,
    )


def play_episode(
    env: gym.Env,
    policy: Policy,
    seed: int,
    options: dict[str, Any] | None = None,
    info_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """One episode (``env.reset(seed=seed, options=options)``) as the arguments of a Minari
    ``EpisodeBuffer`` (no id), with ``infos[key]`` for ``info_keys`` of the reset and of every
    step as lists of Python scalars (Minari's Arrow storage decodes 1-D arrays' shapes wrongly)."""
    obs, info = env.reset(seed=seed, options=options)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    infos: dict[str, list] = {key: [info[key]] for key in info_keys}
    done = False
    while not done:
        action = policy.act(obs, env)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated)
        for key in info_keys:
            infos[key].append(info[key])
        done = terminated or truncated
    episode = {
        "seed": seed,
        "observations": np.asarray(observations, dtype=env.observation_space.dtype),
        "actions": np.asarray(actions, dtype=env.action_space.dtype),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "terminations": np.asarray(terminations, dtype=bool),
        "truncations": np.asarray(truncations, dtype=bool),
    }
    if options is not None:
        episode["options"] = options
    if info_keys:
        episode["infos"] = {
            key: [v.item() if hasattr(v, "item") else v for v in values]
            for key, values in infos.items()
        }
    return episode


def rollout(
    env: gym.Env, policy: Policy, episodes: int, seed: int, label: str = "behaviour"
) -> tuple[list, np.ndarray]:
    """``episodes`` episodes (reset seeds ``seed + i``) as Minari episode buffers, and returns."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers, returns = [], np.empty(episodes)
    report_every = max(1, episodes // 10)
    for i in range(episodes):
        episode = play_episode(env, policy, seed + i)
        returns[i] = float(np.sum(episode["rewards"]))
        buffers.append(EpisodeBuffer(id=i, **episode))
        if (i + 1) % report_every == 0:
            logger.info("Collected %d/%d %s episodes", i + 1, episodes, label)
    return buffers, returns


def reference_scores(
    env_id: str,
    reference_policy: str | None,
    episodes: int = DEFAULT_REFERENCE_EPISODES,
) -> tuple[float | None, float | None]:
    """Minari's ``(ref_min_score, ref_max_score)``: mean returns of the random and the reference
    policy (seeds ``REFERENCE_SEED + i``); ``(None, None)`` without a reference policy."""
    env = make_env(env_id)
    try:
        if reference_policy == AUTO:
            reference_policy = ORACLE if hasattr(env.unwrapped, "myopic_oracle_action") else None
        if reference_policy is None:
            return None, None
        expert = make_policy(reference_policy, env, seed=REFERENCE_SEED)
        random = RandomPolicy(env.action_space, REFERENCE_SEED)
        _, random_returns = rollout(env, random, episodes, REFERENCE_SEED, "reference (random)")
        _, expert_returns = rollout(env, expert, episodes, REFERENCE_SEED, "reference (expert)")
    finally:
        env.close()
    return float(random_returns.mean()), float(expert_returns.mean())


def collect_dataset(
    env_id: str,
    policy: str,
    episodes: int,
    dataset_id: str,
    seed: int = 0,
    overwrite: bool = False,
    *,
    deterministic: bool = True,
    reference_policy: str | None = AUTO,
    reference_episodes: int = DEFAULT_REFERENCE_EPISODES,
    description: str | None = None,
    author: str | None = None,
    author_email: str | None = None,
    code_permalink: str | None = None,
    bolus_noise: float | None = None,
    tasks: int | None = None,
    ray_address: str | None = None,
) -> DatasetInfo:
    """Roll out ``policy`` on ``env_id`` for ``episodes`` episodes into the Minari dataset
    ``dataset_id`` (see the module docstring).

    Args:
        env_id: gymnasium id (the treatment ids are registered on import).
        policy: ``"random"``, ``"oracle"`` (treatment envs), ``"basal-bolus"`` (glucose env) or
            an RLlib checkpoint directory.
        episodes: number of episodes (>= 1); the treatment default elsewhere is 50 (1 200 steps).
        dataset_id: Minari id ``(namespace/)name-v<N>``.
        seed: reset seed of the first episode (and of the policy's sampling).
        overwrite: replace an existing dataset with this id.
        deterministic: checkpoint policies act with their distribution's mode (else sample).
        reference_policy: ``"auto"`` (the oracle where the env has one), ``"oracle"``, a
            checkpoint directory, or ``None`` (no reference scores).
        reference_episodes: episodes per reference score.
        description, author, author_email, code_permalink: optional Minari metadata.
        bolus_noise: the basal-bolus policy's log-normal noise sigma, in [0, 2] (default 0).
        tasks: glucose env only: the number of Ray tasks, each collecting the episodes of a
            share of the patients (default and most: one per patient of the dataset).
        ray_address: glucose env only: the Ray cluster whose cores collect (``ray.init``'s
            ``address``) when Ray is not initialised; default a local Ray. Either is shut down
            after the collection.
    """
    from importlib.metadata import version

    import minari

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"`episodes` must be an integer >= 1; got {episodes!r}")
    if (
        isinstance(reference_episodes, bool)
        or not isinstance(reference_episodes, int)
        or reference_episodes < 1
    ):
        raise ConfigError(
            f"`reference_episodes` must be an integer >= 1; got {reference_episodes!r}"
        )
    final = dataset_path(dataset_id)
    if dataset_exists(dataset_id) and not overwrite:
        raise DatasetError(
            f"dataset '{dataset_id}' already exists at {final}; pass --overwrite "
            "(overwrite=True) to replace it"
        )
    env = make_env(env_id)
    try:
        for name, space in (("observation", env.observation_space), ("action", env.action_space)):
            if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
                raise EnvironmentSpecError(
                    f"env '{env_id}' has a {name} space {space}; only flat Box spaces are "
                    "supported; wrap the env with gymnasium's FlattenObservation"
                )
        behaviour = make_policy(
            policy, env, seed=seed, deterministic=deterministic, bolus_noise=bolus_noise
        )
        glucose = isinstance(env.unwrapped, GlucoseBolusEnv)
        if tasks is not None and not glucose:
            raise ConfigError(
                f"`tasks` splits the collection of glucose datasets; env '{env_id}' is collected "
                "in this process; drop it"
            )
        # Bad input fails above, before the reference episodes; the behaviour's randomness
        # restarts from ``seed`` after them (a checkpoint reference reseeds torch).
        ref_min, ref_max = reference_scores(env_id, reference_policy, reference_episodes)
        behaviour.seed(seed)
        if glucose:
            buffers, returns = collect_in_tasks(
                env_id,
                policy,
                episodes,
                seed,
                len(env.unwrapped.patients),
                tasks,
                deterministic=deterministic,
                bolus_noise=bolus_noise,
                ray_address=ray_address,
            )
        else:
            buffers, returns = rollout(env, behaviour, episodes, seed)
        spec, observation_space, action_space = env.spec, env.observation_space, env.action_space
    finally:
        env.close()

    metadata: dict = {
        META_DATASET_ID: dataset_id,
        "algorithm_name": behaviour.description,
        "description": description
        or (
            f"{episodes} episodes of {env_id} by the behaviour policy '{behaviour.description}' "
            f"(reset seeds {seed}..{seed + episodes - 1}), collected with fttpo-ray"
        ),
        "minari_version": minari.__version__,
        META_SEED: seed,
        META_POLICY: policy,
        META_DETERMINISTIC: deterministic,
        META_FTTPO_VERSION: version(DISTRIBUTION),
    }
    if policy == BASAL_BOLUS:
        metadata[META_BOLUS_NOISE] = behaviour.sigma
    if author is not None:
        metadata["author"] = {author}
    if author_email is not None:
        metadata["author_email"] = {author_email}
    if code_permalink is not None:
        metadata["code_permalink"] = code_permalink
    if ref_min is not None and ref_max is not None:
        metadata.update(
            {
                META_REF_MIN_SCORE: ref_min,
                META_REF_MAX_SCORE: ref_max,
                "num_episodes_average_score": reference_episodes,
            }
        )
        metadata[META_REFERENCE_POLICY] = str(reference_policy)

    _write_atomically(
        dataset_id, final, buffers, metadata, spec, observation_space, action_space, overwrite
    )
    steps = int(sum(len(b.rewards) for b in buffers))
    info = _summary(dataset_id, final, returns, steps, ref_min, ref_max)
    logger.info("%s", info)
    return info


def glucose_episode(env: gym.Env, policy: Policy, seed: int, patient: str) -> dict:
    """One episode of the glucose env (reset seed ``seed``, the policy reseeded with it) as the
    arguments of a Minari ``EpisodeBuffer`` (infos :data:`GLUCOSE_STEP_INFOS` of the reset and of
    every step; the env gives every episode at least one decision)."""
    policy.seed(seed)
    return play_episode(env, policy, seed, {OPTION_PATIENT: patient}, GLUCOSE_STEP_INFOS)


def collect_episodes(
    env_id: str,
    policy: str,
    seed: int,
    indices: list[int],
    deterministic: bool = True,
    bolus_noise: float | None = None,
) -> list[tuple[int, dict]]:
    """Episodes ``indices`` of a glucose dataset (:func:`glucose_episode` of episode ``i``:
    reset seed ``seed + i``, patient ``patients[i % len(patients)]``): one Ray task's work."""
    env = make_env(env_id)
    try:
        behaviour = make_policy(
            policy, env, seed=seed, deterministic=deterministic, bolus_noise=bolus_noise
        )
        patients = env.unwrapped.patients
        return [
            (i, glucose_episode(env, behaviour, seed + i, patients[i % len(patients)]))
            for i in indices
        ]
    finally:
        env.close()


def task_episodes(episodes: int, patients: int, tasks: int | None) -> list[list[int]]:
    """Episode indices of each task: episode ``i`` belongs to patient ``i % patients``, patient
    ``p`` to task ``p % tasks`` (``tasks`` defaults to, and is capped at, the patients that have
    an episode)."""
    used = min(episodes, patients)
    if tasks is None:
        tasks = used
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise ConfigError(f"`tasks` must be an integer >= 1; got {tasks!r}")
    tasks = min(tasks, used)
    return [[i for i in range(episodes) if (i % patients) % tasks == t] for t in range(tasks)]


def collect_in_tasks(
    env_id: str,
    policy: str,
    episodes: int,
    seed: int,
    patients: int,
    tasks: int | None = None,
    *,
    deterministic: bool = True,
    bolus_noise: float | None = None,
    ray_address: str | None = None,
) -> tuple[list, np.ndarray]:
    """Glucose episodes ``0 .. episodes-1`` collected by Ray tasks (:func:`task_episodes`,
    :func:`collect_episodes`), gathered with ``ray.wait`` as they finish, progress logged; as
    Minari episode buffers (ids in episode order, days without a decision left out) and
    returns. Uses an initialised Ray, else connects to ``ray_address`` (a cluster) or starts a
    local Ray, and disconnects afterwards."""
    import ray
    from minari.data_collector.episode_buffer import EpisodeBuffer

    groups = task_episodes(episodes, patients, tasks)
    started = not ray.is_initialized()
    if started:
        # "local": a new local Ray, even where a stale ray_current_cluster file in Ray's
        # temporary folder names a dead one (Ray would otherwise try to connect to it).
        ray.init(
            address=ray_address or LOCAL_RAY,
            include_dashboard=False if ray_address is None else None,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    results: dict[int, dict] = {}
    pending: dict = {}
    try:
        task = ray.remote(num_cpus=1)(collect_episodes)
        pending = {
            task.remote(env_id, policy, seed, group, deterministic, bolus_noise): group
            for group in groups
        }
        used = min(episodes, patients)
        done_patients, start = 0, time.perf_counter()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                group = pending.pop(ref)
                try:
                    results.update(ray.get(ref))
                except ray.exceptions.RayTaskError as err:
                    if isinstance(err.cause, FttpoError):
                        raise err.cause from None
                    raise
                done_patients += len({i % patients for i in group})
                logger.info(
                    "Collected %d/%d patients, %d/%d episodes (%.0f s)",
                    done_patients,
                    used,
                    len(results),
                    episodes,
                    time.perf_counter() - start,
                )
    finally:
        for ref in pending:  # a task failed: the others' work is not wanted
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
    buffers, returns = [], []
    for i in range(episodes):
        buffers.append(EpisodeBuffer(id=i, **results[i]))
        returns.append(float(np.sum(results[i]["rewards"])))
    return buffers, np.asarray(returns)


def _write_atomically(
    dataset_id: str,
    final: Path,
    buffers: list,
    metadata: dict,
    spec: gym.envs.registration.EnvSpec | None,
    observation_space: gym.Space,
    action_space: gym.Space,
    overwrite: bool,
) -> None:
    """Build the dataset in a temporary directory of the Minari root, then rename it into place."""
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.dataset.minari_storage import MinariStorage
    from minari.namespace import create_namespace, list_local_namespaces
    from minari.storage import get_dataset_path

    root = Path(get_dataset_path())
    staging = make_staging_dir(root, _TMP_PREFIX)
    trash: Path | None = None
    try:
        storage = MinariStorage.new(
            staging / MINARI_DATA_DIR,
            observation_space=observation_space,
            action_space=action_space,
            env_spec=spec,
            data_format=DATA_FORMAT,
        )
        storage.update_metadata(metadata)
        storage.update_episodes(buffers)
        namespace = parse_dataset_id(dataset_id)[0]
        if namespace is not None and namespace not in list_local_namespaces():
            try:
                create_namespace(namespace)
            except ValueError:
                if namespace not in list_local_namespaces():
                    raise
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            if not overwrite:
                raise DatasetError(
                    f"dataset '{dataset_id}' already exists at {final}; pass --overwrite "
                    "(overwrite=True) to replace it"
                )
            trash = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root)) / "old"
            final.rename(trash)
        try:
            staging.rename(final)
        except OSError:
            if trash is not None:
                trash.rename(final)
                trash = None
            raise
    except OSError as err:
        raise DatasetError(
            f"could not write dataset '{dataset_id}' under {root} ({err.strerror or err}); "
            "check the disk space and permissions of MINARI_DATASETS_PATH"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash.parent, ignore_errors=True)
    logger.info("Wrote dataset '%s' to %s", dataset_id, final)


__all__ = [
    "DatasetInfo",
    "collect_dataset",
    "collect_episodes",
    "collect_in_tasks",
    "dataset_info",
    "reference_scores",
    "rollout",
    "task_episodes",
]
