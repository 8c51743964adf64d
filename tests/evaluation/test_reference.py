"""Reference rows: the best constant dose (chosen on selection episodes, scored on evaluation
episodes), no treatment, uniform random, the myopic oracle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from fttpo_ray import metrics as m
from fttpo_ray.envs import TREATMENT_ENV_ID, TREATMENT_LETHAL_ENV_ID
from fttpo_ray.errors import ConfigError
from fttpo_ray.evaluation.reference import (
    MYOPIC_ORACLE,
    NO_TREATMENT,
    UNIFORM_RANDOM,
    constant_dose_reference,
    evaluate_constant_doses,
    reference_policies,
    rollout_rule,
)

#: The hand-made problem: expected reward ``-(a - BEST)^2 + BEST^2`` (so r̄(0) = 0), noise
#: N(0, NOISE^2), 4 steps; doses with r̄(a) < r̄(0) - 0.01 (outside about [0, 2 BEST]) are
#: prohibited.
BEST = 0.4
NOISE = 0.5
HAND_MADE_ID = "fttpo_test/QuadraticDose-v0"


class QuadraticDoseEnv(gym.Env):
    """A 1-D dosing problem whose best constant dose and prohibited set are known."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, np.float32), {}

    def expected_reward(self, actions):
        a = np.clip(np.asarray(actions, dtype=np.float64).reshape(-1), -1.0, 1.0)
        return -((a - BEST) ** 2) + BEST**2

    def prohibited(self, actions):
        return self.expected_reward(actions) < -0.01

    def step(self, action):
        self._t += 1
        reward = float(self.expected_reward(action)[0] + NOISE * self.np_random.standard_normal())
        return np.zeros(1, np.float32), reward, False, self._t >= 4, {}


gym.register(HAND_MADE_ID, entry_point=QuadraticDoseEnv)


def test_best_constant_dose_of_a_hand_made_problem() -> None:
    doses = np.round(np.linspace(-1.0, 1.0, 11), 2)
    ref = constant_dose_reference(HAND_MADE_ID, doses=doses, episodes=300, seed=10)
    assert ref.best_dose == pytest.approx(BEST)
    # per-step expected reward of a dose d is BEST^2 - (d - BEST)^2 (4 steps an episode)
    for d, row in ref.evaluation.items():
        expected = 4 * (BEST**2 - (d - BEST) ** 2)
        assert abs(row[m.EPISODE_RETURN_MEAN] - expected) < 4.5 * row[m.EPISODE_RETURN_SEM]
        assert row[m.VIOLATION_RATE] == (1.0 if (d < 0 or d > 2 * BEST) else 0.0)
    assert ref.best[m.VIOLATIONS] == 0 and ref.best[m.ACTIONS] == 1200
    assert ref.selection_seed != ref.evaluation_seed and ref.doses == tuple(doses.tolist())


def test_selection_and_evaluation_episodes_must_not_overlap() -> None:
    with pytest.raises(ConfigError, match="overlap the evaluation episodes"):
        constant_dose_reference(
            HAND_MADE_ID, doses=[0.0], episodes=10, seed=100, selection_seed=105
        )


@pytest.mark.parametrize("env_id", [TREATMENT_ENV_ID, TREATMENT_LETHAL_ENV_ID])
def test_batched_treatment_doses_equal_gym_rollouts(env_id: str) -> None:
    doses = [-0.95, -0.3, 0.0, 0.45, 0.92]
    batched = evaluate_constant_doses(env_id, doses, episodes=5, seed=7)
    for d in doses:
        one = rollout_rule(
            env_id, lambda _e, _r, d=d: np.full(1, d, np.float32), episodes=5, seed=7
        )
        assert batched[d] == pytest.approx(one, rel=1e-9, abs=1e-12), d
    if env_id == TREATMENT_LETHAL_ENV_ID:
        assert batched[-0.95][m.DEATHS_PER_100_EPISODES] == 100.0
        assert batched[-0.95][m.EPISODE_LEN_MEAN] == 1.0


def test_reference_policies_on_the_treatment_simulator() -> None:
    refs = reference_policies(TREATMENT_ENV_ID, episodes=20, seed=3)
    assert set(refs) == {NO_TREATMENT, UNIFORM_RANDOM, MYOPIC_ORACLE}
    assert refs[NO_TREATMENT][m.VIOLATIONS] == 0 and refs[MYOPIC_ORACLE][m.VIOLATIONS] == 0
    # Seeded (20 episodes, seed 3): 262 of the 480 random doses are prohibited; a count,
    # asserted exactly (one more violation fails).
    assert refs[UNIFORM_RANDOM][m.VIOLATION_RATE] == pytest.approx(262 / 480, rel=1e-12)
    assert refs[MYOPIC_ORACLE][m.EPISODE_RETURN_MEAN] > refs[NO_TREATMENT][m.EPISODE_RETURN_MEAN]


def test_constant_doses_need_a_one_dimensional_action() -> None:
    with pytest.raises(ConfigError, match="1-D Box action space"):
        evaluate_constant_doses("MountainCar-v0", [0.0], episodes=1, seed=0)
