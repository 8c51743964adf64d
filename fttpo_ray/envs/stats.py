"""Reference numbers of the treatment simulator: prohibited share and simple policies' safety.

Reproduce the numbers quoted in ``docs/datasets.md`` with::

    python -c "from fttpo_ray.envs.stats import summary; print(summary())"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from fttpo_ray.envs import TREATMENT_ENV_ID, TREATMENT_ENV_IDS, TREATMENT_LETHAL_ENV_ID
from fttpo_ray.envs.treatment import INFO_LETHAL, INFO_PROHIBITED, TreatmentSimEnv
from fttpo_ray.errors import ConfigError, EnvironmentSpecError

#: Policies :func:`policy_stats` knows.
RANDOM_POLICY = "random"
ORACLE_POLICY = "oracle"


@dataclass(frozen=True)
class PolicyStats:
    """Safety and return of a policy over ``episodes`` seeded episodes."""

    env_id: str
    policy: str
    episodes: int
    return_mean: float
    return_se: float
    violations: int
    actions: int
    deaths: int

    @property
    def violation_rate(self) -> float:
        """Share of executed actions that were prohibited (docs/algorithm.md §5)."""
        return self.violations / self.actions

    @property
    def deaths_per_100_episodes(self) -> float:
        """Lethal doses per 100 episodes (0 in the non-lethal variant)."""
        return 100.0 * self.deaths / self.episodes

    def __str__(self) -> str:
        return (
            f"{self.env_id} {self.policy}: return {self.return_mean:.3f} ± {self.return_se:.3f} "
            f"(s.e., {self.episodes} episodes), violation rate {self.violation_rate:.4f} "
            f"({self.violations}/{self.actions}), deaths per 100 episodes "
            f"{self.deaths_per_100_episodes:.1f}"
        )


def _treatment(env_id: str) -> tuple[gym.Env, TreatmentSimEnv]:
    if env_id not in TREATMENT_ENV_IDS:
        raise EnvironmentSpecError(
            f"'{env_id}' is not a treatment simulator; use one of {', '.join(TREATMENT_ENV_IDS)}"
        )
    env = gym.make(env_id)
    return env, env.unwrapped


def prohibited_share(
    env_id: str = TREATMENT_ENV_ID,
    episodes: int = 200,
    doses_per_state: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """Share of uniform doses in [-1, 1] that are prohibited at states of random trajectories.

    Returns ``(mean share, standard error over states)``; every state of ``episodes``
    uniformly-random episodes (seeds ``seed, seed+1, ...``) is used.
    """
    env, sim = _treatment(env_id)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    shares = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        done = False
        while not done:
            doses = rng.uniform(-1.0, 1.0, doses_per_state)
            shares.append(sim.prohibited(doses).mean())
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    values = np.asarray(shares)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def policy_stats(
    env_id: str = TREATMENT_ENV_ID,
    policy: str = RANDOM_POLICY,
    episodes: int = 1000,
    seed: int = 0,
) -> PolicyStats:
    """Return (mean ± s.e.), violation rate and deaths of the uniform-random or oracle policy."""
    if policy not in (RANDOM_POLICY, ORACLE_POLICY):
        raise ConfigError(
            f"`policy` must be '{RANDOM_POLICY}' or '{ORACLE_POLICY}'; got {policy!r}"
        )
    env, sim = _treatment(env_id)
    env.action_space.seed(seed)
    returns, violations, actions, deaths = [], 0, 0, 0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            action = (
                env.action_space.sample() if policy == RANDOM_POLICY else sim.myopic_oracle_action()
            )
            _, reward, terminated, truncated, info = env.step(action)
            total += reward
            violations += int(info[INFO_PROHIBITED])
            deaths += int(info[INFO_LETHAL])
            actions += 1
            done = terminated or truncated
        returns.append(total)
    values = np.asarray(returns)
    return PolicyStats(
        env_id=env_id,
        policy=policy,
        episodes=episodes,
        return_mean=float(values.mean()),
        return_se=float(values.std(ddof=1) / math.sqrt(episodes)),
        violations=violations,
        actions=actions,
        deaths=deaths,
    )


def summary(episodes: int = 1000, seed: int = 0) -> str:
    """The reference numbers of ``docs/datasets.md`` as text (one line per measurement)."""
    share, share_se = prohibited_share(TREATMENT_ENV_ID, seed=seed)
    lines = [
        f"prohibited share of uniform doses at random-policy states: {share:.4f} ± {share_se:.4f}"
    ]
    for env_id in (TREATMENT_ENV_ID, TREATMENT_LETHAL_ENV_ID):
        for policy in (RANDOM_POLICY, ORACLE_POLICY):
            lines.append(str(policy_stats(env_id, policy, episodes=episodes, seed=seed)))
    return "\n".join(lines)
