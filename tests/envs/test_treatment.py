"""Treatment simulator (docs/algorithm.md §4) and its safety oracle (§5).

Layers: exact checks of the API and the dynamics; statistical checks with fixed seeds and
stated tolerances (oracle vs Monte-Carlo of the real step reward, sampler covariance,
prohibited share).
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

from fttpo_ray.envs import (
    TREATMENT_ENV_ID,
    TREATMENT_ENV_IDS,
    TREATMENT_LETHAL_ENV_ID,
    register_envs,
)
from fttpo_ray.envs.stats import policy_stats, prohibited_share
from fttpo_ray.envs.treatment import (
    INFO_DOSE,
    INFO_LETHAL,
    INFO_PROHIBITED,
    TreatmentSimEnv,
    next_hidden_mean,
    psd_factor,
    treatment_reward,
)
from fttpo_ray.errors import ConfigError, EnvironmentSpecError


def _rollout(env: gym.Env, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards)


# --------------------------------------------------------------------------- registration, API
def test_register_envs_is_idempotent() -> None:
    register_envs()
    register_envs()
    for env_id in TREATMENT_ENV_IDS:
        assert env_id in gym.registry
        assert gym.spec(env_id).entry_point == "fttpo_ray.envs.treatment:TreatmentSimEnv"


def test_module_prefixed_id_makes_the_env() -> None:
    env = gym.make("fttpo_ray.envs:" + TREATMENT_ENV_ID)
    assert isinstance(env.unwrapped, TreatmentSimEnv)


@pytest.mark.parametrize("env_id", TREATMENT_ENV_IDS)
def test_check_env_passes(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(gym.make(env_id).unwrapped)


def test_spaces_and_truncation_after_24_steps() -> None:
    env = gym.make(TREATMENT_ENV_ID)
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (8,)
    flags = []
    for _ in range(24):
        obs, reward, terminated, truncated, info = env.step(np.array([0.95], np.float32))
        flags.append((terminated, truncated))
        assert isinstance(reward, float) and obs.dtype == np.float32
    assert flags[:-1] == [(False, False)] * 23
    assert flags[-1] == (False, True)
    assert info[INFO_DOSE] == pytest.approx(95.0, rel=1e-6)
    assert info[INFO_LETHAL] is False


def test_same_seed_same_trajectory_and_different_seed_differs() -> None:
    actions = np.random.default_rng(7).uniform(-1, 1, (24, 1)).astype(np.float32)
    env_a, env_b = gym.make(TREATMENT_ENV_ID), gym.make(TREATMENT_ENV_ID)
    obs_a, rew_a = _rollout(env_a, 123, actions)
    obs_b, rew_b = _rollout(env_b, 123, actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    obs_c, _ = _rollout(env_a, 124, actions)
    assert not np.allclose(obs_a, obs_c)


def test_step_follows_the_paper_dynamics() -> None:
    env = gym.make(TREATMENT_ENV_ID)
    env.reset(seed=3)
    sim = env.unwrapped
    mu = np.array(sim.hidden_state)
    obs, reward, *_ = env.step(np.array([0.4], np.float32))
    expected_mu = np.tanh(np.concatenate([0.4 + mu[:4], -0.4 + mu[4:]]))
    np.testing.assert_allclose(sim.hidden_state, expected_mu, rtol=1e-6)
    # The reward is the paper's formula at the (unrounded) next state; obs is its float32 copy.
    assert reward == pytest.approx(float(treatment_reward(0.4, obs.astype(np.float64))), abs=1e-5)


def test_lethal_threshold_and_penalty() -> None:
    env = gym.make(TREATMENT_LETHAL_ENV_ID)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.array([0.9], np.float32))
    assert (terminated, truncated, info[INFO_LETHAL]) == (False, False, False)
    _, reward, terminated, truncated, info = env.step(np.array([-0.95], np.float32))
    assert (reward, terminated, truncated, info[INFO_LETHAL]) == (-100.0, True, False, True)

    custom = gym.make(TREATMENT_LETHAL_ENV_ID, lethal_threshold=0.5, lethal_penalty=-7.0)
    custom.reset(seed=0)
    _, reward, terminated, _, _ = custom.step(np.array([0.6], np.float32))
    assert (reward, terminated) == (-7.0, True)


@pytest.mark.parametrize(
    "kwargs",
    [{"lethal_threshold": 0.5}, {"prohibited_delta": -1.0}, {"horizon": 0}],
)
def test_bad_make_arguments_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        gym.make(TREATMENT_ENV_ID, **kwargs)


def test_lethal_threshold_out_of_range_raises() -> None:
    with pytest.raises(ConfigError, match="lethal_threshold"):
        gym.make(TREATMENT_LETHAL_ENV_ID, lethal_threshold=1.5)


def test_oracle_needs_reset_and_state_is_read_only() -> None:
    sim = gym.make(TREATMENT_ENV_ID).unwrapped
    with pytest.raises(ResetNeeded):
        sim.prohibited([0.0])
    sim.reset(seed=0)
    with pytest.raises(ValueError):
        sim.hidden_state[0] = 1.0
    with pytest.raises(ValueError):
        sim.covariance[0, 0] = 1.0


# --------------------------------------------------------------------------- covariance, sampling
def test_covariance_is_psd_singular_correlation_over_two() -> None:
    sim = gym.make(TREATMENT_ENV_ID).unwrapped
    for seed in range(20):
        sim.reset(seed=seed)
        cov = sim.covariance
        np.testing.assert_allclose(np.diag(cov), 0.5, atol=1e-12)
        np.testing.assert_allclose(cov, cov.T, atol=0)
        eigenvalues = np.linalg.eigvalsh(cov)
        assert eigenvalues.min() > -1e-12
        assert np.linalg.matrix_rank(cov, tol=1e-10) <= 7  # 8 samples of 8 variables
        factor = psd_factor(cov)
        np.testing.assert_allclose(factor @ factor.T, cov, atol=1e-12)


def test_observation_noise_has_covariance_c() -> None:
    """Statistical: 40 000 draws; empirical covariance within 0.02 of C entry-wise
    (s.e. ≈ 0.004)."""
    sim = gym.make(TREATMENT_ENV_ID).unwrapped
    sim.reset(seed=11)
    mu = np.array(sim.hidden_state)
    draws = np.array([sim._draw(mu) for _ in range(40_000)])
    np.testing.assert_allclose(draws.mean(axis=0), mu, atol=0.02)
    np.testing.assert_allclose(np.cov(draws, rowvar=False), sim.covariance, atol=0.02)


# --------------------------------------------------------------------------- oracle
@pytest.mark.parametrize("seed", [0, 5])
def test_expected_reward_matches_monte_carlo_of_step(seed: int) -> None:
    """Statistical: mean of 8 000 real ``step`` rewards from one state within 5 s.e. of r̄(a)."""
    sim = gym.make(TREATMENT_ENV_ID).unwrapped
    sim.reset(seed=seed)
    mu0, doses = np.array(sim.hidden_state), np.array([-0.8, 0.0, 0.35, 1.0])
    closed_form = sim.expected_reward(doses)
    for dose, expected in zip(doses, closed_form, strict=True):
        rewards = np.empty(8_000)
        for i in range(rewards.size):
            sim._mu, sim._t = mu0.copy(), 0
            rewards[i] = sim.step(np.array([dose], np.float32))[1]
        standard_error = rewards.std(ddof=1) / np.sqrt(rewards.size)
        assert abs(rewards.mean() - expected) < 5 * standard_error + 1e-6, (dose, expected)


def test_expected_reward_matches_large_monte_carlo_and_needs_the_variance_term() -> None:
    """Statistical: 400 000 next states drawn with the environment's own sampler, rewards by
    the formula ``step`` uses; closed form within 5 s.e. (s.e. ≈ 0.003), while dropping the
    log-normal correction ``⅛(C00+C44+2C04)`` is off by more than 10 s.e."""
    sim = gym.make(TREATMENT_ENV_ID).unwrapped
    sim.reset(seed=5)
    mu, cov, dose, n = np.array(sim.hidden_state), sim.covariance, 1.0, 400_000
    mean = next_hidden_mean(mu, np.array([dose]))[0]
    noise = np.random.default_rng(0).standard_normal((n, 8)) @ psd_factor(cov).T
    rewards = treatment_reward(np.full(n, dose), mean + noise)
    standard_error = rewards.std(ddof=1) / np.sqrt(n)
    closed_form = sim.expected_reward([dose])[0]
    assert abs(rewards.mean() - closed_form) < 5 * standard_error
    variance_term = 0.125 * (cov[0, 0] + cov[4, 4] + 2 * cov[0, 4])
    naive = closed_form + np.exp(0.5 * (mean[0] + mean[4])) * (np.exp(variance_term) - 1) * dose**2
    assert abs(rewards.mean() - naive) > 10 * standard_error


def test_expected_reward_accepts_column_and_flat_shapes() -> None:
    sim = gym.make(TREATMENT_ENV_ID).unwrapped
    sim.reset(seed=2)
    doses = np.linspace(-1, 1, 9)
    flat = sim.expected_reward(doses)
    np.testing.assert_array_equal(flat, sim.expected_reward(doses[:, None]))
    assert flat.shape == (9,)
    assert sim.prohibited(doses[:, None].astype(np.float32)).shape == (9,)
    m = next_hidden_mean(np.array(sim.hidden_state), doses)
    assert m.shape == (9, 8)
    with pytest.raises(EnvironmentSpecError, match="shape"):
        sim.expected_reward(np.zeros((3, 2)))


def test_prohibited_definition_and_delta() -> None:
    sim = gym.make(TREATMENT_ENV_ID).unwrapped
    sim.reset(seed=4)
    doses = np.linspace(-1, 1, 201)
    values, zero = sim.expected_reward(doses), sim.expected_reward([0.0])[0]
    np.testing.assert_array_equal(sim.prohibited(doses), values < zero)
    assert not sim.prohibited([0.0])[0]
    wide = sim.prohibited(doses, delta=0.5)
    np.testing.assert_array_equal(wide, values < zero - 0.5)
    assert wide.sum() <= sim.prohibited(doses).sum()

    tolerant = gym.make(TREATMENT_ENV_ID, prohibited_delta=0.5).unwrapped
    tolerant.reset(seed=4)
    np.testing.assert_array_equal(tolerant.prohibited(doses), wide)


def test_lethal_doses_are_prohibited() -> None:
    sim = gym.make(TREATMENT_LETHAL_ENV_ID).unwrapped
    sim.reset(seed=0)
    flags = sim.prohibited([-1.0, -0.91, 0.0, 0.91, 1.0])
    assert flags[[0, 1, 3, 4]].all() and not flags[2]


@pytest.mark.parametrize("env_id", TREATMENT_ENV_IDS)
def test_myopic_oracle_is_allowed_and_best_on_a_fine_grid(env_id: str) -> None:
    env = gym.make(env_id)
    sim = env.unwrapped
    grid = np.linspace(-1, 1, 20_001)
    for seed in range(10):
        env.reset(seed=seed)
        action = sim.myopic_oracle_action()
        assert action.shape == (1,) and action.dtype == np.float32
        assert not sim.prohibited(action)[0]
        allowed = ~sim.prohibited(grid)
        best_on_grid = sim.expected_reward(grid)[allowed].max()
        assert sim.expected_reward(action)[0] >= best_on_grid - 1e-6
        env.step(action)


def test_info_flags_the_executed_dose() -> None:
    env = gym.make(TREATMENT_ENV_ID)
    env.reset(seed=9)
    dose = np.array([-1.0], np.float32)
    expected = bool(env.unwrapped.prohibited(dose)[0])
    *_, info = env.step(dose)
    assert info[INFO_PROHIBITED] is expected


def test_prohibited_share_is_near_the_paper_figure() -> None:
    """Seeded: 20 random episodes x 50 doses (seed 0) give 0.56233 (the paper quotes "about
    60%"; 200 episodes give 0.575 ± 0.001, docs/datasets.md). Tolerance 1e-3 (about 24 of the
    24 000 doses changing side at the boundary of the prohibited set by rounding): a change of
    the simulator or of the prohibited set that moves the share by 0.1 fails."""
    share, _ = prohibited_share(TREATMENT_ENV_ID, episodes=20, doses_per_state=50, seed=0)
    assert share == pytest.approx(0.56233, abs=1e-3)


def test_random_policy_stats_on_the_lethal_variant() -> None:
    """Seeded (50 episodes, seed 0): 47 deaths (P(death within 24 random doses) = 1 - 0.9^24
    ≈ 0.92: 46 expected) and 243 prohibited doses among the 413 given. Counts, asserted
    exactly: one more death or violation fails."""
    stats = policy_stats(TREATMENT_LETHAL_ENV_ID, "random", episodes=50, seed=0)
    assert (stats.deaths, stats.episodes) == (47, 50)
    assert stats.violation_rate == pytest.approx(243 / 413, rel=1e-12)
    assert "deaths per 100 episodes" in str(stats)
