"""The metrics of ``evaluate_policies`` on a hand-made environment and hand-made policies, against
values computed by hand (layer: exact).

The environment ``ToyDoseEnv`` (action box ``[-2, 2]``, so a normalised action ``n`` acts as
``2 n``):

- the observation is the step index ``t``; the reward of action ``a`` is ``1 + a``;
- an episode reset with seed ``s`` lasts ``LENGTHS[s % 3]`` = 2, 3 or 5 steps (then truncated),
  unless the action ``a = -2`` ends it first (``terminated``: a death);
- the oracle ``prohibited(actions)``: ``a > 1.001`` at every step except ``t = 3``, where
  ``a < -1.001`` instead. In normalised units the threshold is ``±0.5005``, half-way between two
  points of the evaluator's 2 001-point grid, so the grid's interval bounds are exact up to
  rounding.

Evaluation: 5 episodes from seed 3 (seeds 3..7: lengths 2, 3, 5, 2, 3) in waves of 2, so the
third wave holds one environment.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats

from fttpo_ray import metrics as m
from fttpo_ray.distributions import HeavyTailedQGaussian, SparseQGaussian
from fttpo_ray.evaluation import EvalPolicy, evaluate_policies

TOY_ENV_ID = "fttpo_test/ToyDose-v0"
TOY_NO_ORACLE_ENV_ID = "fttpo_test/ToyDoseNoOracle-v0"
LENGTHS = (2, 3, 5)
#: Environment-unit threshold of the prohibited set (normalised: 0.5005).
THRESHOLD = 1.001
#: Normalised threshold, and the interval bound the evaluator finds on its grid.
NORMALISED_THRESHOLD = 0.5005
SEED = 3
EPISODES = 5
WAVE_SIZE = 2
TIGHT = 1e-9


class ToyDoseNoOracleEnv(gym.Env):
    """Deterministic toy dosing env (see the module docstring), without an oracle."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self._t = 0
        self._length = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._t], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._length = LENGTHS[seed % len(LENGTHS)]
        return self._obs(), {}

    def step(self, action: np.ndarray):
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        self._t += 1
        terminated = a <= -2.0
        truncated = not terminated and self._t >= self._length
        return self._obs(), 1.0 + a, terminated, truncated, {}


class ToyDoseEnv(ToyDoseNoOracleEnv):
    """The toy env with its step-dependent oracle, like the treatment simulator's."""

    def prohibited(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64).reshape(-1)
        return a < -THRESHOLD if self._t == 3 else a > THRESHOLD


for env_id, env_class in ((TOY_ENV_ID, ToyDoseEnv), (TOY_NO_ORACLE_ENV_ID, ToyDoseNoOracleEnv)):
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=env_class)


def table_policy(name: str, make, locs, scales) -> EvalPolicy:
    """A policy whose distribution at step ``t`` has location ``locs[t]``, scale ``scales[t]``;
    its deterministic action is the location."""
    locs_t = torch.tensor(locs, dtype=torch.float32)
    scales_t = torch.tensor(scales, dtype=torch.float32)

    def distribution(obs: torch.Tensor) -> torch.distributions.Distribution:
        t = obs[:, 0].long()
        return make(locs_t[t].unsqueeze(-1), scales_t[t].unsqueeze(-1))

    return EvalPolicy(name=name, distribution=distribution, deterministic=lambda d: d.loc)


def thin(locs, scales) -> EvalPolicy:
    return table_policy(m.THIN, lambda loc, s: SparseQGaussian(loc, s, q=0.0), locs, scales)


def cauchy(locs, scales) -> EvalPolicy:
    return table_policy(m.FAT, lambda loc, s: HeavyTailedQGaussian(loc, s, q=2.0), locs, scales)


def evaluate(*policies: EvalPolicy, env_id: str = TOY_ENV_ID, **kwargs) -> dict:
    return evaluate_policies(
        list(policies), env_id, episodes=EPISODES, seed=SEED, wave_size=WAVE_SIZE, **kwargs
    )


def epanechnikov_cdf(z: float) -> float:
    """CDF of the q = 0 sparse q-Gaussian in 1-D at ``z = (x - loc) / half-width``."""
    z = min(max(z, -1.0), 1.0)
    return (2.0 + 3.0 * z - z**3) / 4.0


def cauchy_cdf(z: float) -> float:
    return 0.5 + math.atan(z) / math.pi


def one_sided_upper_95(violations: int, actions: int) -> float:
    return float(stats.beta.ppf(0.95, violations + 1, actions - violations))


# Acting with the location (explore=False). Step t -> normalised action LOCS[t], env action
# 2 LOCS[t] = 0, 1, 2, -2, reward 1, 2, 3, -1. The action -2 at t = 3 ends the length-5
# episode (seed 5): lengths 2, 3, 4, 2, 3 -> 14 actions; steps t = 0, 1, 2, 3 occur 5, 5, 3, 1
# times. Violations: t = 2 (2 > 1.001) and t = 3 (-2 < -1.001): 3 + 1 = 4 of 14.
LOCS = [0.0, 0.5, 1.0, -1.0]
THIN_SCALES = [0.25, 0.25, 0.25, 0.125]
CAUCHY_SCALES = [0.125, 0.125, 0.125, 0.125]
STEP_COUNTS = [5, 5, 3, 1]


@pytest.fixture(scope="module")
def deterministic_results() -> dict:
    return evaluate(
        thin(LOCS, THIN_SCALES),
        cauchy(LOCS, CAUCHY_SCALES),
        explore=False,
        reference_scores=(-4.0, 6.0),
    )


@pytest.mark.parametrize("policy", [m.THIN, m.FAT])
def test_returns_lengths_deaths_and_score(deterministic_results: dict, policy: str) -> None:
    r = deterministic_results[policy]
    assert r[m.EPISODES] == 5.0
    assert r[m.EPISODE_LEN_MEAN] == pytest.approx(14 / 5, abs=TIGHT)
    assert r[m.EPISODE_RETURN_MEAN] == pytest.approx(23 / 5, abs=TIGHT)
    # Sample variance of (3, 6, 5, 3, 6) about 4.6: 9.2 / 4 = 2.3; s.e. = sqrt(2.3 / 5).
    assert r[m.EPISODE_RETURN_SEM] == pytest.approx(math.sqrt(2.3 / 5), abs=TIGHT)
    assert r[m.NORMALIZED_SCORE] == pytest.approx(100 * (4.6 + 4.0) / 10.0, abs=TIGHT)
    assert r[m.DEATHS_PER_100_EPISODES] == pytest.approx(20.0, abs=TIGHT)


@pytest.mark.parametrize("policy", [m.THIN, m.FAT])
def test_violations_clopper_pearson_and_boundary_rate(
    deterministic_results: dict, policy: str
) -> None:
    r = deterministic_results[policy]
    assert r[m.VIOLATIONS] == 4.0
    assert r[m.ACTIONS] == 14.0
    assert r[m.VIOLATION_RATE] == pytest.approx(4 / 14, abs=TIGHT)
    upper = r[m.VIOLATION_RATE_UB95]
    assert upper == pytest.approx(one_sided_upper_95(4, 14), abs=TIGHT)
    # The defining property, independently of the Beta quantile: P(Binomial(14, ub) <= 4) = 5 %.
    assert stats.binom.cdf(4, 14, upper) == pytest.approx(0.05, abs=1e-9)
    # Coordinates at a bound: the actions +1 (t = 2, three times) and -1 (t = 3, once).
    assert r[m.BOUNDARY_ACTION_RATE] == pytest.approx(4 / 14, abs=TIGHT)


def test_thin_prohibited_mass_and_support_diagnostics(deterministic_results: dict) -> None:
    r = deterministic_results[m.THIN]
    # t = 0: support [-0.25, 0.25] misses (0.5005, inf): exactly 0. t = 1: loc 0.5, half-width
    # 0.25, mass 1 - F((0.5005 - 0.5) / 0.25). t = 2: support [0.75, 1.25] inside the set: 1.
    # t = 3: support [-1.125, -0.875] inside (-inf, -0.5005): 1.
    partial = 1.0 - epanechnikov_cdf((NORMALISED_THRESHOLD - 0.5) / 0.25)
    assert partial == pytest.approx(0.498500002, abs=TIGHT)
    masses = [0.0] * 5 + [partial] * 5 + [1.0] * 3 + [1.0]
    assert r[m.PROHIBITED_MASS_MEAN] == pytest.approx(np.mean(masses), abs=TIGHT)
    assert r[m.PROHIBITED_MASS_ZERO_FRAC] == pytest.approx(5 / 14, abs=TIGHT)
    assert r[m.SUPPORT_HALFWIDTH_MEAN] == pytest.approx((13 * 0.25 + 0.125) / 14, abs=TIGHT)
    # The supports at t = 2 ([0.75, 1.25]) and t = 3 ([-1.125, -0.875]) leave [-1, 1].
    assert r[m.SUPPORT_OUTSIDE_BOX_FRAC] == pytest.approx(4 / 14, abs=TIGHT)


def test_cauchy_prohibited_mass_is_its_cdf_and_never_zero(deterministic_results: dict) -> None:
    r = deterministic_results[m.FAT]
    s = CAUCHY_SCALES[0]
    above = [1.0 - cauchy_cdf((NORMALISED_THRESHOLD - loc) / s) for loc in LOCS[:3]]
    below = cauchy_cdf((-NORMALISED_THRESHOLD - LOCS[3]) / s)
    per_step = [*above, below]
    expected = sum(c * p for c, p in zip(STEP_COUNTS, per_step, strict=True)) / 14
    assert r[m.PROHIBITED_MASS_MEAN] == pytest.approx(expected, abs=TIGHT)
    assert r[m.PROHIBITED_MASS_ZERO_FRAC] == 0.0
    assert m.SUPPORT_HALFWIDTH_MEAN not in r and m.SUPPORT_OUTSIDE_BOX_FRAC not in r


# Sampling (explore=True) from supports that lie wholly inside or wholly outside the prohibited
# set, so the violation count is exact although the actions are random: t = 1 samples in
# [0.55, 0.95] (all > 0.5005), t = 3 in [-0.95, -0.55] (all < -0.5005); t = 0, 2, 4 in
# [-0.25, 0.25] (never). No action reaches -1, so no episode dies: lengths 2, 3, 5, 2, 3, steps
# t = 0..4 occur 5, 5, 3, 1, 1 times -> 15 actions, 5 + 1 = 6 violations.
SAMPLED_LOCS = [0.0, 0.75, 0.0, -0.75, 0.0]
SAMPLED_SCALES = [0.25, 0.2, 0.25, 0.2, 0.25]


def test_sampled_actions_with_known_supports_give_exact_safety_metrics() -> None:
    first = evaluate(thin(SAMPLED_LOCS, SAMPLED_SCALES), explore=True)[m.THIN]
    assert first[m.ACTIONS] == 15.0 and first[m.EPISODE_LEN_MEAN] == pytest.approx(3.0)
    assert first[m.VIOLATIONS] == 6.0
    assert first[m.VIOLATION_RATE] == pytest.approx(6 / 15, abs=TIGHT)
    assert first[m.VIOLATION_RATE_UB95] == pytest.approx(one_sided_upper_95(6, 15), abs=TIGHT)
    assert first[m.PROHIBITED_MASS_MEAN] == pytest.approx(6 / 15, abs=TIGHT)
    assert first[m.PROHIBITED_MASS_ZERO_FRAC] == pytest.approx(9 / 15, abs=TIGHT)
    assert first[m.BOUNDARY_ACTION_RATE] == 0.0
    assert first[m.DEATHS_PER_100_EPISODES] == 0.0
    # Rewards 1 + 2n with n inside the supports: [0.5, 1.5] at t = 0, 2, 4, [2.1, 2.9] at t = 1,
    # [-0.9, -0.1] at t = 3; episodes of 2, 3, 5 steps: returns in [2.6, 4.4], [3.1, 5.9] and
    # [2.7, 7.3]; their mean (lengths 2, 3, 5, 2, 3) in [2.82, 5.58].
    assert 2.82 < first[m.EPISODE_RETURN_MEAN] < 5.58
    # With the seeded action noise it is 4.13168; tolerance 1e-5 (float32 rounding of the
    # sums), so any change of the draws or of the rewards shows.
    assert first[m.EPISODE_RETURN_MEAN] == pytest.approx(4.13168, abs=1e-5)
    # The action noise is seeded: the same call gives the same numbers.
    second = evaluate(thin(SAMPLED_LOCS, SAMPLED_SCALES), explore=True)[m.THIN]
    assert second == first


def test_zero_violations_bound_is_one_minus_alpha_to_the_one_over_n() -> None:
    never = thin([0.0] * 5, [0.25] * 5)
    r = evaluate(never, explore=False)[m.THIN]
    # Action 0 everywhere: reward 1 per step, returns = lengths 2, 3, 5, 2, 3 (15 actions).
    assert r[m.EPISODE_RETURN_MEAN] == pytest.approx(3.0, abs=TIGHT)
    assert r[m.EPISODE_RETURN_SEM] == pytest.approx(
        np.std([2, 3, 5, 2, 3], ddof=1) / math.sqrt(5), abs=TIGHT
    )
    assert r[m.VIOLATIONS] == 0.0 and r[m.VIOLATION_RATE] == 0.0
    assert r[m.VIOLATION_RATE_UB95] == pytest.approx(1.0 - 0.05 ** (1 / 15), abs=TIGHT)
    assert r[m.PROHIBITED_MASS_MEAN] == 0.0 and r[m.PROHIBITED_MASS_ZERO_FRAC] == 1.0
    assert m.NORMALIZED_SCORE not in r


def test_without_an_oracle_only_the_returns_and_the_boundary_rate_are_reported() -> None:
    r = evaluate(thin(LOCS, THIN_SCALES), env_id=TOY_NO_ORACLE_ENV_ID, explore=False)[m.THIN]
    assert r[m.EPISODE_RETURN_MEAN] == pytest.approx(23 / 5, abs=TIGHT)
    assert r[m.BOUNDARY_ACTION_RATE] == pytest.approx(4 / 14, abs=TIGHT)
    for key in (m.VIOLATION_RATE, m.VIOLATIONS, m.PROHIBITED_MASS_MEAN, m.DEATHS_PER_100_EPISODES):
        assert key not in r
