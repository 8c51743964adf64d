"""Reference policies of a 1-D dosing environment and the reference scores of a dataset.

- :func:`reference_scores`: the returns that map to 0 and 100 in the normalised score
  (``normalized_score``, docs/algorithm.md §5).
- :func:`constant_dose_reference`: the **best constant dose** (docs/algorithm.md §5): every dose
  of a grid is rolled out on *selection* episodes (``SELECTION_SEED + i``), the one with the
  highest mean return there is chosen, and every dose is reported on the *evaluation* episodes
  (``EVALUATION_SEED + i``), so the chosen dose is never scored on the episodes that chose it.
  The whole grid is kept for the return/violation frontier.
- :func:`reference_policies`: no treatment (a = 0), uniform random and the myopic oracle (where
  the environment has one) on the evaluation episodes.

Every rollout here reports the metrics of :func:`fttpo_ray.evaluation.evaluate_policies`
(return ± s.e., violations and their Clopper–Pearson bound, deaths) under the same names.
On the treatment simulator all doses of a grid are rolled out at once: a constant dose does
not change which random numbers an episode draws, so dose ``d`` of the batch sees exactly the
trajectory that ``gym.make(env_id)`` stepping with ``d`` would (a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from fttpo_ray import metrics as m
from fttpo_ray.defaults import EVALUATION_EPISODES, EVALUATION_SEED, SELECTION_SEED
from fttpo_ray.envs.treatment import (
    TreatmentSimEnv,
    expected_reward_at,
    next_hidden_mean,
    psd_factor,
    treatment_reward,
)
from fttpo_ray.errors import ConfigError
from fttpo_ray.evaluation.safety import clopper_pearson_upper

#: Doses of the constant-dose grid (environment units; the treatment box is [-1, 1]): step 0.05.
CONSTANT_DOSE_GRID = tuple(round(float(d), 2) for d in np.linspace(-1.0, 1.0, 41))

#: Names of the reference rows.
NO_TREATMENT = "no treatment (a = 0)"
UNIFORM_RANDOM = "uniform random"
MYOPIC_ORACLE = "myopic oracle"
BEST_CONSTANT = "best constant dose"


def check_selection_seeds(
    episodes: int, seed: int, selection_episodes: int, selection_seed: int
) -> None:
    """Raise :class:`ConfigError` unless the selection episodes (``selection_seed + i``) exist
    and never overlap the evaluation episodes (``seed + i``): a choice is never scored on the
    episodes it was made on."""
    if selection_episodes < 1:
        raise ConfigError(f"`selection_episodes` must be >= 1; got {selection_episodes}")
    if selection_seed < seed + episodes and seed < selection_seed + selection_episodes:
        raise ConfigError(
            f"selection episodes {selection_seed}..{selection_seed + selection_episodes - 1} "
            f"overlap the evaluation episodes {seed}..{seed + episodes - 1}; choose another "
            "selection seed"
        )


def reference_scores(dataset_id: str | None) -> tuple[float, float] | None:
    """``(ref_min, ref_max)`` returns of the dataset ``dataset_id``: its own where it has them,
    else D4RL's for its MuJoCo task (:func:`fttpo_ray.data.references.dataset_references`)."""
    if not dataset_id:
        return None
    from fttpo_ray.data.references import dataset_references

    references = dataset_references(dataset_id)
    if references is None:
        return None
    return references.ref_min, references.ref_max


@dataclass(frozen=True)
class ConstantDoseReference:
    """The constant-dose grid on the selection and the evaluation episodes.

    ``selection[d]`` / ``evaluation[d]``: the metrics of dose ``d`` on each set of episodes;
    ``best_dose``: the dose with the highest selection return (ties: the smallest ``|d|``).
    """

    best_dose: float
    selection: dict[float, dict[str, float]]
    evaluation: dict[float, dict[str, float]]
    selection_seed: int
    evaluation_seed: int
    episodes: int
    selection_episodes: int
    doses: tuple[float, ...] = field(default=())

    @property
    def best(self) -> dict[str, float]:
        """The chosen dose's metrics on the evaluation episodes."""
        return self.evaluation[self.best_dose]


def _summary(
    returns: np.ndarray, violations: int | None, actions: int, deaths: int, lengths: np.ndarray
) -> dict[str, float]:
    episodes = len(returns)
    result = {
        m.EPISODE_RETURN_MEAN: float(returns.mean()),
        m.EPISODE_RETURN_SEM: float(returns.std(ddof=1) / math.sqrt(episodes))
        if episodes > 1
        else float("nan"),
        m.EPISODES: float(episodes),
        m.EPISODE_LEN_MEAN: float(lengths.mean()),
        m.DEATHS_PER_100_EPISODES: 100.0 * deaths / episodes,
    }
    if violations is not None:
        result.update(
            {
                m.VIOLATION_RATE: violations / max(actions, 1),
                m.VIOLATIONS: float(violations),
                m.ACTIONS: float(actions),
                m.VIOLATION_RATE_UB95: clopper_pearson_upper(violations, actions),
            }
        )
    return result


def rollout_rule(
    env_id: str,
    act: Callable[[gym.Env, np.random.Generator], np.ndarray],
    *,
    episodes: int,
    seed: int,
    env_config: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Roll out an action rule ``act(env.unwrapped, rng) -> action`` on episodes ``seed + i``.

    Violations are counted where the environment has the oracle (``unwrapped.prohibited``);
    ``rng`` is seeded with ``seed`` (for randomised rules).
    """
    env = gym.make(env_id, **dict(env_config or {}))
    oracle = hasattr(env.unwrapped, "prohibited")
    rng = np.random.default_rng(seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes)
    violations = actions = deaths = 0
    try:
        for i in range(episodes):
            env.reset(seed=seed + i)
            done = False
            while not done:
                action = np.asarray(act(env.unwrapped, rng), dtype=np.float32).reshape(-1)
                if oracle:
                    violations += int(env.unwrapped.prohibited(action.reshape(1, -1))[0])
                actions += 1
                _, reward, terminated, truncated, _ = env.step(action)
                returns[i] += float(reward)
                lengths[i] += 1
                deaths += int(terminated)
                done = terminated or truncated
    finally:
        env.close()
    return _summary(returns, violations if oracle else None, actions, deaths, lengths)


def _treatment_constant_doses(
    env: TreatmentSimEnv, doses: np.ndarray, episodes: int, seed: int
) -> list[dict[str, float]]:
    """All ``doses`` of the treatment simulator at once (same trajectories as ``env.step``)."""
    a = np.clip(doses.astype(np.float32).astype(np.float64), -1.0, 1.0)
    n = len(a)
    lethal = env.lethal & (np.abs(a) > env.lethal_threshold)
    returns, lengths = np.zeros((episodes, n)), np.zeros((episodes, n))
    violations, deaths = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    actions = np.zeros(n, dtype=np.int64)
    zero = np.zeros(n)
    for i in range(episodes):
        env.reset(seed=seed + i)
        mu = np.repeat(np.asarray(env.hidden_state)[None, :], n, axis=0)
        cov = np.asarray(env.covariance)
        factor = psd_factor(cov)
        alive = np.ones(n, dtype=bool)
        for _ in range(env.horizon):
            values = expected_reward_at(mu, cov, a)
            bad = (values < expected_reward_at(mu, cov, zero) - env.prohibited_delta) | lethal
            violations += bad & alive
            actions += alive
            mu = next_hidden_mean(mu, a)
            next_state = mu + (factor @ env.np_random.standard_normal(mu.shape[1]))[None, :]
            reward = np.where(lethal, env.lethal_penalty, treatment_reward(a, next_state))
            returns[i] += np.where(alive, reward, 0.0)
            lengths[i] += alive
            deaths += alive & lethal
            alive &= ~lethal
            if not alive.any():
                break
    return [
        _summary(returns[:, j], int(violations[j]), int(actions[j]), int(deaths[j]), lengths[:, j])
        for j in range(n)
    ]


def evaluate_constant_doses(
    env_id: str,
    doses: Sequence[float],
    *,
    episodes: int,
    seed: int,
    env_config: dict[str, Any] | None = None,
) -> dict[float, dict[str, float]]:
    """``{dose: metrics}`` of each constant dose on episodes ``seed + i`` (1-D action only)."""
    if episodes < 1:
        raise ConfigError(f"constant-dose `episodes` must be >= 1; got {episodes}")
    grid = np.asarray([float(d) for d in doses], dtype=np.float64)
    if grid.size == 0:
        raise ConfigError("the constant-dose grid is empty; give at least one dose")
    env = gym.make(env_id, **dict(env_config or {}))
    try:
        space = env.action_space
        if not (isinstance(space, gym.spaces.Box) and space.shape == (1,)):
            raise ConfigError(
                f"constant-dose references need a 1-D Box action space; '{env_id}' has {space}"
            )
        if isinstance(env.unwrapped, TreatmentSimEnv):
            rows = _treatment_constant_doses(env.unwrapped, grid, episodes, seed)
            return dict(zip(grid.tolist(), rows, strict=True))
    finally:
        env.close()
    return {
        float(d): rollout_rule(
            env_id,
            lambda _env, _rng, d=d: np.full(1, d, dtype=np.float32),
            episodes=episodes,
            seed=seed,
            env_config=env_config,
        )
        for d in grid.tolist()
    }


def constant_dose_reference(
    env_id: str,
    *,
    doses: Sequence[float] = CONSTANT_DOSE_GRID,
    episodes: int = EVALUATION_EPISODES,
    seed: int = EVALUATION_SEED,
    selection_episodes: int | None = None,
    selection_seed: int = SELECTION_SEED,
    env_config: dict[str, Any] | None = None,
) -> ConstantDoseReference:
    """The best constant dose, chosen on selection episodes, scored on evaluation episodes.

    ``selection_episodes`` defaults to ``episodes``. The two ranges of reset seeds must not
    overlap (checked), so the choice is never scored on the episodes it was made on.
    """
    selection_episodes = episodes if selection_episodes is None else selection_episodes
    check_selection_seeds(episodes, seed, selection_episodes, selection_seed)
    selection = evaluate_constant_doses(
        env_id, doses, episodes=selection_episodes, seed=selection_seed, env_config=env_config
    )
    best = max(selection, key=lambda d: (selection[d][m.EPISODE_RETURN_MEAN], -abs(d)))
    evaluation = evaluate_constant_doses(
        env_id, doses, episodes=episodes, seed=seed, env_config=env_config
    )
    return ConstantDoseReference(
        best_dose=best,
        selection=selection,
        evaluation=evaluation,
        selection_seed=selection_seed,
        evaluation_seed=seed,
        episodes=episodes,
        selection_episodes=selection_episodes,
        doses=tuple(selection),
    )


def reference_policies(
    env_id: str,
    *,
    episodes: int = EVALUATION_EPISODES,
    seed: int = EVALUATION_SEED,
    env_config: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """No treatment, uniform random (seeded with ``seed``) and the myopic oracle (where the
    environment has ``myopic_oracle_action``) on episodes ``seed + i``."""
    env = gym.make(env_id, **dict(env_config or {}))
    has_oracle = hasattr(env.unwrapped, "myopic_oracle_action")
    low, high = env.action_space.low, env.action_space.high
    env.close()
    rules: dict[str, Callable[[gym.Env, np.random.Generator], np.ndarray]] = {
        NO_TREATMENT: lambda _env, _rng: np.zeros(low.shape, dtype=np.float32),
        UNIFORM_RANDOM: lambda _env, rng: rng.uniform(low, high).astype(np.float32),
    }
    if has_oracle:
        rules[MYOPIC_ORACLE] = lambda env, _rng: env.myopic_oracle_action()
    return {
        name: rollout_rule(env_id, act, episodes=episodes, seed=seed, env_config=env_config)
        for name, act in rules.items()
    }
