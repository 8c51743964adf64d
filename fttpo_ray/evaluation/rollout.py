"""Batched evaluation rollouts with returns and the safety metrics of docs/algorithm.md §5.

Every policy is evaluated on the same episodes: episode ``i`` resets with ``seed + i`` and the
action noise is seeded with ``seed`` too, so differences between policies are paired (common
random numbers) and a rerun gives the same numbers. Episodes run in lock-step waves of up to
``wave_size`` environments, so each step queries the policy once for the whole wave.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from fttpo_ray import metrics as m
from fttpo_ray.distributions import HeavyTailedQGaussian, SparseQGaussian
from fttpo_ray.errors import ConfigError
from fttpo_ray.evaluation.safety import (
    action_grid,
    clopper_pearson_upper,
    monte_carlo_prohibited_mass,
    prohibited_intervals,
    prohibited_mass,
)

logger = logging.getLogger(__name__)

#: Actions within this distance of a box bound count as "at the boundary" (MuJoCo metric).
BOUNDARY_TOLERANCE = 1e-6
#: Samples per state for the prohibited mass of distributions without a closed-form CDF.
MONTE_CARLO_SAMPLES = 1000


@dataclass(frozen=True)
class EvalPolicy:
    """A policy to evaluate: a batch of observations -> a batch of action distributions.

    Actions live in the normalised box ``[-1, 1]^n``; the evaluator rescales them to the
    environment's box. ``deterministic`` gives the action used when ``explore=False``.
    ``statistics`` (optional) gives per-state values of a distribution (``{name: (B,)}``),
    reported as their means over the visited states (e.g. the certificate's abstention rate).
    """

    name: str
    distribution: Callable[[torch.Tensor], torch.distributions.Distribution]
    deterministic: Callable[[torch.distributions.Distribution], torch.Tensor]
    statistics: Callable[[torch.distributions.Distribution], dict[str, torch.Tensor]] | None = None


def _has_closed_form_cdf(dist: torch.distributions.Distribution) -> bool:
    return isinstance(dist, (SparseQGaussian, HeavyTailedQGaussian, torch.distributions.Normal))


def evaluate_policies(
    policies: Sequence[EvalPolicy],
    env_id: str,
    *,
    env_config: dict[str, Any] | None = None,
    episodes: int = 100,
    seed: int = 0,
    explore: bool = True,
    reference_scores: tuple[float, float] | None = None,
    wave_size: int = 100,
) -> dict[str, dict[str, float]]:
    """Evaluate each policy on the same ``episodes`` and return ``{policy name: metrics}``.

    Metric names are those of :mod:`fttpo_ray.metrics`. Safety metrics appear when the
    environment has an oracle (``env.unwrapped.prohibited``) and a 1-D action; the prohibited
    mass only where the env allows its grid scan (``scan_prohibited_mass``, default True).
    An env with ``episode_metrics(episodes)`` (the glucose simulator) adds what it returns from
    each episode's ``info`` dicts (the reset's, then one per step).
    """
    if episodes < 1:
        raise ConfigError(f"evaluation `episodes` must be >= 1; got {episodes}")
    env_config = dict(env_config or {})
    envs = [gym.make(env_id, **env_config) for _ in range(min(wave_size, episodes))]
    try:
        return {
            policy.name: _evaluate_one(policy, envs, episodes, seed, explore, reference_scores)
            for policy in policies
        }
    finally:
        for env in envs:
            env.close()


def _evaluate_one(
    policy: EvalPolicy,
    envs: list[gym.Env],
    episodes: int,
    seed: int,
    explore: bool,
    reference_scores: tuple[float, float] | None,
) -> dict[str, float]:
    space = envs[0].action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    unwrapped = envs[0].unwrapped
    oracle = hasattr(unwrapped, "prohibited") and space.shape == (1,)
    scan_mass = oracle and getattr(unwrapped, "scan_prohibited_mass", True)
    episode_metrics = getattr(unwrapped, "episode_metrics", None)
    episode_infos: list[list[dict[str, Any]]] = []
    grid = action_grid()
    grid_env = low[0] + (grid + 1.0) * 0.5 * (high[0] - low[0]) if oracle else grid

    returns: list[float] = []
    lengths: list[int] = []
    deaths = 0
    violations = 0
    actions_taken = 0
    boundary_coords = 0
    coords_taken = 0
    masses: list[np.ndarray] = []
    halfwidths: list[np.ndarray] = []
    outside_box: list[np.ndarray] = []
    statistics: dict[str, list[np.ndarray]] = {}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for wave_start in range(0, episodes, len(envs)):
            wave = envs[: min(len(envs), episodes - wave_start)]
            resets = [env.reset(seed=seed + wave_start + i) for i, env in enumerate(wave)]
            obs = [o for o, _ in resets]
            infos = [[info] for _, info in resets]
            active = np.ones(len(wave), dtype=bool)
            episode_return = np.zeros(len(wave))
            episode_len = np.zeros(len(wave), dtype=np.int64)
            while active.any():
                idx = np.flatnonzero(active)
                obs_t = torch.as_tensor(np.stack([obs[i] for i in idx]), dtype=torch.float32)
                with torch.no_grad():
                    dist = policy.distribution(obs_t)
                    action = dist.sample() if explore else policy.deterministic(dist)
                normalised = action.double().numpy().clip(-1.0, 1.0)
                env_action = low + (normalised + 1.0) * 0.5 * (high - low)

                at_bound = (normalised <= -1.0 + BOUNDARY_TOLERANCE) | (
                    normalised >= 1.0 - BOUNDARY_TOLERANCE
                )
                boundary_coords += int(at_bound.sum())
                coords_taken += at_bound.size
                if policy.statistics is not None:
                    for name, values in policy.statistics(dist).items():
                        statistics.setdefault(name, []).append(values.double().numpy())
                if isinstance(dist, SparseQGaussian):
                    loc = dist.loc.double().numpy()
                    half = dist.scale.double().numpy()
                    halfwidths.append(half.mean(axis=-1))
                    outside_box.append(((loc - half < -1.0) | (loc + half > 1.0)).any(axis=-1))

                if oracle:
                    intervals = []
                    for j, i in enumerate(idx):
                        oracle_env = wave[i].unwrapped
                        if scan_mass:
                            intervals.append(
                                prohibited_intervals(oracle_env.prohibited(grid_env), grid)
                            )
                        violations += int(oracle_env.prohibited(env_action[j : j + 1])[0])
                    actions_taken += len(idx)
                if scan_mass:
                    if _has_closed_form_cdf(dist):
                        masses.append(prohibited_mass(dist, intervals))
                    else:
                        with torch.no_grad():
                            samples = dist.sample((MONTE_CARLO_SAMPLES,)).double().numpy()
                        masses.append(
                            monte_carlo_prohibited_mass(samples[..., 0].clip(-1, 1), intervals)
                        )

                for j, i in enumerate(idx):
                    obs[i], reward, terminated, truncated, info = wave[i].step(
                        env_action[j].astype(np.float32)
                    )
                    infos[i].append(info)
                    episode_return[i] += float(reward)
                    episode_len[i] += 1
                    if terminated or truncated:
                        active[i] = False
                        deaths += int(terminated)
            returns.extend(episode_return.tolist())
            episode_infos.extend(infos)
            lengths.extend(episode_len.tolist())

    returns_arr = np.asarray(returns)
    result: dict[str, float] = {
        m.EPISODE_RETURN_MEAN: float(returns_arr.mean()),
        m.EPISODE_RETURN_SEM: float(returns_arr.std(ddof=1) / math.sqrt(len(returns_arr)))
        if len(returns_arr) > 1
        else float("nan"),
        m.EPISODES: float(len(returns_arr)),
        m.EPISODE_LEN_MEAN: float(np.mean(lengths)),
        m.BOUNDARY_ACTION_RATE: boundary_coords / max(coords_taken, 1),
    }
    if reference_scores is not None:
        ref_min, ref_max = reference_scores
        if ref_max != ref_min:
            result[m.NORMALIZED_SCORE] = float(
                100.0 * (returns_arr.mean() - ref_min) / (ref_max - ref_min)
            )
    if oracle:
        result.update(
            {
                m.VIOLATION_RATE: violations / max(actions_taken, 1),
                m.VIOLATIONS: float(violations),
                m.ACTIONS: float(actions_taken),
                m.VIOLATION_RATE_UB95: clopper_pearson_upper(violations, actions_taken),
                m.DEATHS_PER_100_EPISODES: 100.0 * deaths / len(returns_arr),
            }
        )
    if scan_mass:
        mass = np.concatenate(masses)
        result[m.PROHIBITED_MASS_MEAN] = float(mass.mean())
        result[m.PROHIBITED_MASS_ZERO_FRAC] = float(np.mean(mass == 0.0))
    if episode_metrics is not None:
        result.update(episode_metrics(episode_infos))
    if halfwidths:
        result[m.SUPPORT_HALFWIDTH_MEAN] = float(np.concatenate(halfwidths).mean())
        result[m.SUPPORT_OUTSIDE_BOX_FRAC] = float(np.concatenate(outside_box).mean())
    for name, values in statistics.items():
        result[name] = float(np.concatenate(values).mean())
    return result
