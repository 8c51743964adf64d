"""Meal-bolus dosing on the UVA/Padova simulator (docs/algorithm.md §4.1) and its hypoglycaemia
oracle.

Layers: registration and the gymnasium API (env checker, seeding, array actions, bad input);
the fast patient against simglucose's stock one (bit for bit); the observation and reward
against hand-computed values; the oracle's properties on hand-made states (zero bolus,
monotone in the dose, fast rollout against the minute-by-minute one, no disturbance of the live
simulator, an unavoidable low, the largest safe bolus).
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

from fttpo_ray import metrics as m
from fttpo_ray.envs import GLUCOSE_ENV_ID, make_glucose_env, register_envs
from fttpo_ray.envs import glucose as g
from fttpo_ray.envs.glucose import (
    DEFAULT_MAX_BOLUS,
    HYPO_LIMIT,
    INFO_BELOW_54,
    INFO_BOLUS,
    INFO_CARBS,
    INFO_DEATH,
    INFO_GLUCOSE_SUM,
    INFO_IN_RANGE,
    INFO_MIN_GLUCOSE,
    INFO_PATIENT_INDEX,
    INFO_PROHIBITED,
    INFO_SAMPLES,
    IOB_DURATION_MINUTES,
    PATIENT_NAMES,
    SAMPLES_PER_DAY,
    GlucoseBolusEnv,
    basal_bolus_action,
    basal_bolus_dose,
    make_patient,
    risk,
    simglucose_parts,
)
from fttpo_ray.errors import ConfigError, EnvironmentSpecError, NonFiniteError

ADULT = "adult#001"
CHILD = "child#001"


def _episode(env: gym.Env, seed: int, policy=basal_bolus_action, options=None):
    """Observations, rewards, infos and the final flags of one episode."""
    obs, info = env.reset(seed=seed, options=options)
    observations, rewards, infos = [obs], [], [info]
    while True:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            return np.array(observations), np.array(rewards), infos, (terminated, truncated)


def _action(bolus: float) -> np.ndarray:
    return np.array([2.0 * bolus / DEFAULT_MAX_BOLUS - 1.0], dtype=np.float32)


# --------------------------------------------------------------------------- registration, API
def test_register_envs_is_idempotent_with_a_string_entry_point() -> None:
    register_envs()
    register_envs()
    assert gym.spec(GLUCOSE_ENV_ID).entry_point == "fttpo_ray.envs.glucose:GlucoseBolusEnv"
    assert isinstance(gym.make("fttpo_ray.envs:" + GLUCOSE_ENV_ID).unwrapped, GlucoseBolusEnv)
    assert make_glucose_env({"days": 2}).unwrapped.days == 2


def test_check_env_passes() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|render).*")
        check_env(gym.make(GLUCOSE_ENV_ID).unwrapped)


def test_spaces_and_one_episode_of_one_day() -> None:
    env = gym.make(GLUCOSE_ENV_ID, label_prohibited=False)
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (9,), np.float32)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    observations, rewards, infos, flags = _episode(env, seed=0)
    sim = env.unwrapped
    meals = sim.glucose_trace["meal_minute"]
    assert flags == (False, True)
    assert len(rewards) == len(meals) and 3 <= len(meals) <= 6
    assert observations.dtype == np.float32 and np.all(np.isfinite(observations))
    # Every 3-minute sample of the day is in exactly one info (the reset's: the run-in).
    assert sum(info[INFO_SAMPLES] for info in infos) == SAMPLES_PER_DAY + 1
    assert len(sim.glucose_trace["glucose"]) == SAMPLES_PER_DAY + 1
    with pytest.raises(ResetNeeded):
        env.step(np.zeros(1, np.float32))


def test_same_seed_same_episode_and_different_seed_differs() -> None:
    env_a = gym.make(GLUCOSE_ENV_ID, label_prohibited=False)
    env_b = gym.make(GLUCOSE_ENV_ID, label_prohibited=False)
    obs_a, rew_a, info_a, _ = _episode(env_a, seed=11)
    trace_a = env_a.unwrapped.glucose_trace
    obs_b, rew_b, info_b, _ = _episode(env_b, seed=11)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert info_a == info_b
    for key, values in env_b.unwrapped.glucose_trace.items():
        np.testing.assert_array_equal(values, trace_a[key])
    obs_c, *_ = _episode(env_a, seed=12)
    assert obs_c.shape != obs_a.shape or not np.allclose(obs_a, obs_c)


def test_two_days_have_meals_on_both_days() -> None:
    env = gym.make(GLUCOSE_ENV_ID, days=2, label_prohibited=False)
    _, rewards, infos, flags = _episode(env, seed=3)
    minutes = env.unwrapped.glucose_trace["meal_minute"]
    assert flags == (False, True)
    assert (minutes < 24 * 60).sum() >= 3 and (minutes >= 24 * 60).sum() >= 3
    assert sum(info[INFO_SAMPLES] for info in infos) == 2 * SAMPLES_PER_DAY + 1


@pytest.mark.parametrize(
    "action",
    [
        np.array([0.1], np.float32),
        np.array([0.1], np.float64),
        np.array([[0.1]], np.float32),
        0.1,
        np.float32(0.1),
    ],
)
def test_array_and_scalar_actions_give_the_same_step(action) -> None:
    env = GlucoseBolusEnv(label_prohibited=False)
    env.reset(seed=5)
    reference = env.step(np.array([0.1], np.float32))
    env.reset(seed=5)
    result = env.step(action)
    np.testing.assert_array_equal(result[0], reference[0])
    assert result[1:] == reference[1:]
    assert reference[4][INFO_BOLUS] == pytest.approx(0.55 * DEFAULT_MAX_BOLUS, abs=0.05)


def test_bad_actions_raise() -> None:
    env = GlucoseBolusEnv(label_prohibited=False)
    with pytest.raises(ResetNeeded):
        env.step(np.zeros(1))
    with pytest.raises(ResetNeeded):
        env.prohibited([0.0])
    env.reset(seed=0)
    with pytest.raises(EnvironmentSpecError, match="shape"):
        env.step(np.zeros(2))
    with pytest.raises(NonFiniteError):
        env.step(np.array([np.nan]))
    with pytest.raises(EnvironmentSpecError, match="shape"):
        env.prohibited(np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"days": 0}, "days"),
        ({"max_bolus": 31.0}, "max_bolus"),
        ({"max_bolus": 0.0}, "max_bolus"),
        ({"death_glucose": 60.0}, "death_glucose"),
        ({"patients": ["adult#011"]}, "patients"),
        ({"patients": []}, "patients"),
        ({"oracle_horizon_minutes": 10}, "oracle_horizon_minutes"),
        ({"render_mode": "human"}, "render"),
    ],
)
def test_bad_make_arguments_raise_config_error(kwargs: dict, name: str) -> None:
    with warnings.catch_warnings(), pytest.raises(ConfigError, match=name):
        warnings.filterwarnings("ignore", message=".*render_mode.*")
        gym.make(GLUCOSE_ENV_ID, **kwargs)


def test_patients_by_group_and_bad_reset_options() -> None:
    env = GlucoseBolusEnv(patients="child", label_prohibited=False)
    assert env.patients == PATIENT_NAMES[20:]
    names = set()
    for seed in range(8):
        env.reset(seed=seed)
        names.add(env.patient_name)
    assert names <= set(PATIENT_NAMES[20:]) and len(names) > 1
    with pytest.raises(ConfigError, match="patient"):
        env.reset(seed=0, options={"patient": "bogus"})
    with pytest.raises(ConfigError, match="glucose_factor"):
        env.reset(seed=0, options={"glucose_factor": -1.0})


# --------------------------------------------------------------------------- simulator
def test_fast_patient_is_bit_identical_to_the_stock_patient() -> None:
    """Two hours of one patient with a 60 g meal and a 6 U bolus at minute 10: every state of the
    float-parameter patient equals simglucose's pandas-parameter patient exactly."""
    parts = simglucose_parts()
    stock, fast = make_patient(ADULT, fast=False), make_patient(ADULT)
    basal = float(stock._params.u2ss * stock._params.BW / 6000)
    for minute in range(120):
        carbs, bolus = (60, 6.0) if minute == 10 else (0, 0.0)
        action = parts.PatientAction(CHO=carbs, insulin=basal + bolus)
        stock.step(action)
        fast.step(action)
        np.testing.assert_array_equal(fast.state, stock.state)
        assert fast.observation.Gsub == stock.observation.Gsub
    assert stock.t == fast.t == 120
    assert fast.state[12] != make_patient(ADULT).state[12]  # the meal moved the state


def test_observation_against_hand_computed_values() -> None:
    """adult#001: CR 10 g/U, CF 8.77310657487 mg/dL/U (Quest.csv); its body weight from
    vpatient_params.csv; the first meal's carbohydrates; clock time 03:00 + minutes; IOB of one
    bolus decays linearly over 4 h."""
    env = GlucoseBolusEnv(label_prohibited=False)
    obs, _ = env.reset(seed=0, options={"patient": ADULT})
    trace = env.glucose_trace
    minute, carbs = int(trace["meal_minute"][0]), float(trace["carbs"][0])
    weight = float(simglucose_parts().patients.loc[ADULT, "BW"])
    angle = 2 * math.pi * (180 + minute) / 1440
    cgm = trace["cgm"]
    expected = [
        cgm[-1] / 100,
        (cgm[-1] - cgm[-11]) / 50,
        carbs / 50,
        0.0,
        math.sin(angle),
        math.cos(angle),
        weight / 50,
        10 / 10,
        50 / 8.77310657487,
    ]
    np.testing.assert_allclose(obs, np.array(expected, np.float32), rtol=1e-6)
    obs, _, _, _, info = env.step(_action(4.0))
    next_minute = int(trace["meal_minute"][1])
    iob = info[INFO_BOLUS] * (1 - (next_minute - minute) / IOB_DURATION_MINUTES)
    assert info[INFO_BOLUS] == pytest.approx(4.0, abs=1e-9)
    assert obs[3] == pytest.approx(max(iob, 0.0) / 10, rel=1e-6)
    assert obs[2] == pytest.approx(trace["carbs"][1] / 50, rel=1e-6)


def test_reward_is_minus_the_risk_of_the_samples_and_info_counts_them() -> None:
    env = GlucoseBolusEnv(label_prohibited=False)
    _, rewards, infos, _ = _episode(env, seed=4)
    glucose = env.glucose_trace["glucose"]
    start = infos[0][INFO_SAMPLES]
    assert rewards.sum() == pytest.approx(-risk(glucose[start:]).sum() / SAMPLES_PER_DAY, rel=1e-12)
    steps = infos[1:]
    assert sum(i[INFO_GLUCOSE_SUM] for i in steps) == pytest.approx(glucose[start:].sum())
    in_range = ((glucose[start:] >= 70) & (glucose[start:] <= 180)).sum()
    assert sum(i[INFO_IN_RANGE] for i in steps) == in_range
    assert min(i[INFO_MIN_GLUCOSE] for i in steps) == glucose[start:].min()
    assert all(i[INFO_PATIENT_INDEX] == PATIENT_NAMES.index(env.patient_name) for i in infos)


def test_risk_matches_kovatchev_values_and_simglucose() -> None:
    from simglucose.analysis.risk import risk_index

    values = np.array([20.0, 40.0, 54.0, 70.0, 112.5, 180.0, 250.0, 600.0])
    ours = risk(values)
    for value, r in zip(values, ours, strict=True):
        assert r == pytest.approx(risk_index([value], 1)[2], rel=1e-12)
    assert ours[4] < 1e-3  # the risk's zero is at 112.5 mg/dL
    assert ours[1] == pytest.approx(36.4, abs=0.1)
    assert ours[0] == pytest.approx(100.0, abs=1.0) and ours[-1] == pytest.approx(100.0, abs=1.0)


def test_basal_bolus_controller_from_the_observation() -> None:
    """carbs / CR plus (CGM - 140) / CF above 150 mg/dL, read back from the observation."""
    assert basal_bolus_dose(120.0, 50.0, 10.0, 20.0) == pytest.approx(5.0)
    assert basal_bolus_dose(200.0, 50.0, 10.0, 20.0) == pytest.approx(5.0 + 3.0)
    env = GlucoseBolusEnv(label_prohibited=False)
    obs, _ = env.reset(seed=0, options={"patient": ADULT})
    carbs, cgm = env.glucose_trace["carbs"][0], env.glucose_trace["cgm"][-1]
    dose = carbs / 10 + (cgm > 150) * (cgm - 140) / 8.77310657487
    action = basal_bolus_action(obs)
    assert action.shape == (1,) and action.dtype == np.float32
    assert float(env.bolus_of(action)[0]) == pytest.approx(dose, rel=1e-5)
    assert basal_bolus_action(np.stack([obs, obs])).shape == (2, 1)


def test_death_ends_the_episode_and_charges_the_rest_of_the_day() -> None:
    """A 30 U bolus for a child's breakfast: glucose falls below 40 mg/dL."""
    env = GlucoseBolusEnv(label_prohibited=False)
    env.reset(seed=0, options={"patient": CHILD})
    start = len(env.glucose_trace["glucose"])
    _, reward, terminated, truncated, info = env.step(np.ones(1, np.float32))
    glucose = env.glucose_trace["glucose"]
    assert (terminated, truncated, info[INFO_DEATH]) == (True, False, True)
    assert glucose[-1] < 40.0 <= glucose[start:-1].min()
    left = SAMPLES_PER_DAY + 1 - len(glucose)
    expected = -(risk(glucose[start:]).sum() + risk(40.0) * left) / SAMPLES_PER_DAY
    assert reward == pytest.approx(float(expected), rel=1e-12)
    assert info[INFO_BELOW_54] >= 1
    with pytest.raises(ResetNeeded):
        env.step(np.zeros(1, np.float32))
    alive = GlucoseBolusEnv(label_prohibited=False, death_glucose=None)
    alive.reset(seed=0, options={"patient": CHILD})
    assert alive.step(np.ones(1, np.float32))[2] is False


# --------------------------------------------------------------------------- oracle
def test_zero_bolus_is_never_prohibited_and_info_labels_the_executed_bolus() -> None:
    env = GlucoseBolusEnv()
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            assert not env.prohibited(_action(0.0))[0]
            action = basal_bolus_action(obs)
            expected = bool(env.prohibited(action)[0])
            obs, _, terminated, truncated, info = env.step(action)
            assert info[INFO_PROHIBITED] is expected
            assert info[INFO_CARBS] > 0
            done = terminated or truncated


@pytest.mark.parametrize("patient", [ADULT, CHILD, "adolescent#005"])
def test_min_glucose_falls_with_the_dose_and_prohibited_is_its_definition(patient: str) -> None:
    env = GlucoseBolusEnv(label_prohibited=False)
    env.reset(seed=1, options={"patient": patient})
    boluses = np.linspace(0.0, DEFAULT_MAX_BOLUS, 13)
    lows = env.min_glucose(boluses)
    assert np.all(np.diff(lows) <= 1e-6), lows
    actions = 2 * boluses / DEFAULT_MAX_BOLUS - 1
    flags = env.prohibited(actions)
    np.testing.assert_array_equal(flags, lows < min(HYPO_LIMIT, lows[0]))
    assert not flags[0]
    assert np.all(np.diff(flags.astype(int)) >= 0)  # once prohibited, larger doses too


@pytest.mark.parametrize(("patient", "seed"), [(ADULT, 0), (CHILD, 2)])
def test_fast_rollout_equals_the_minute_by_minute_one(patient: str, seed: int) -> None:
    env = GlucoseBolusEnv(label_prohibited=False)
    env.reset(seed=seed, options={"patient": patient})
    boluses = [0.0, 1.0, 3.0, 8.0, 20.0]
    fast, exact = env.min_glucose(boluses), env.min_glucose(boluses, exact=True)
    np.testing.assert_allclose(fast, exact, atol=1.0)


def test_the_oracle_does_not_disturb_the_live_simulator() -> None:
    quiet, busy = GlucoseBolusEnv(label_prohibited=False), GlucoseBolusEnv(label_prohibited=False)
    quiet.reset(seed=7)
    busy.reset(seed=7)
    for _ in range(2):
        busy.prohibited(np.linspace(-1, 1, 5))
        busy.min_glucose([2.0], exact=True)
        busy.max_safe_bolus()
        a = quiet.step(_action(3.0))
        b = busy.step(_action(3.0))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    np.testing.assert_array_equal(quiet.glucose_trace["glucose"], busy.glucose_trace["glucose"])


def test_max_safe_bolus_is_the_edge_of_the_allowed_doses() -> None:
    env = GlucoseBolusEnv(label_prohibited=False)
    env.reset(seed=0, options={"patient": CHILD})
    edge = env.max_safe_bolus()
    assert 0.0 < edge < DEFAULT_MAX_BOLUS
    limit = min(HYPO_LIMIT, env.min_glucose([0.0])[0])
    assert env.min_glucose([edge])[0] >= limit > env.min_glucose([edge + 0.05])[0]
    action = env.max_safe_action()
    assert action.shape == (1,) and action.dtype == np.float32
    assert not env.prohibited(action)[0]
    assert env.bolus_of(action)[0] == pytest.approx(edge, abs=1e-5)


def test_a_longer_horizon_sees_the_late_low_of_a_large_bolus() -> None:
    """adult#001's 54 g breakfast with 30 U: the lowest glucose within 4 h stays above 54 mg/dL
    (allowed), within 8 h it falls below 40 (prohibited): the horizon is a real choice."""
    short = GlucoseBolusEnv(label_prohibited=False)
    long = GlucoseBolusEnv(label_prohibited=False, oracle_horizon_minutes=480)
    short.reset(seed=0, options={"patient": ADULT})
    long.reset(seed=0, options={"patient": ADULT})
    assert short.min_glucose([30.0])[0] > HYPO_LIMIT > 40.0 > long.min_glucose([30.0])[0]
    assert not short.prohibited(np.ones(1))[0] and long.prohibited(np.ones(1))[0]


def test_an_unavoidable_low_allows_no_dose_that_deepens_it() -> None:
    """Hand-made state: 6 U for a child's 54 g breakfast (about twice the clinician's dose); at
    the next meal the glucose is falling and will go below 54 mg/dL even without a bolus. The
    limit is then that minimum itself, so any bolus that deepens it is prohibited."""
    env = GlucoseBolusEnv(label_prohibited=False, death_glucose=None)
    env.reset(seed=0, options={"patient": CHILD})
    env.step(_action(6.0))
    lows = env.min_glucose([0.0, 0.05, 1.0])
    assert lows[0] < HYPO_LIMIT and lows[1] < lows[0] and lows[2] < lows[1]
    actions = 2 * np.array([0.0, 0.05, 1.0]) / DEFAULT_MAX_BOLUS - 1
    np.testing.assert_array_equal(env.prohibited(actions), [False, True, True])
    assert env.max_safe_bolus() < 0.05


def _info(
    patient: int,
    samples: int,
    in_range: int,
    below_70: int,
    below_54: int,
    above_180: int,
    glucose_sum: float,
    prohibited: bool = False,
    death: bool = False,
) -> dict:
    return {
        g.INFO_PATIENT_INDEX: patient,
        g.INFO_SAMPLES: samples,
        g.INFO_IN_RANGE: in_range,
        g.INFO_BELOW_70: below_70,
        g.INFO_BELOW_54: below_54,
        g.INFO_ABOVE_180: above_180,
        g.INFO_GLUCOSE_SUM: glucose_sum,
        g.INFO_PROHIBITED: prohibited,
        g.INFO_DEATH: death,
    }


def test_glucose_metrics_of_a_hand_made_trajectory() -> None:
    """Two adult days and one child day, counts by hand: pooled percentages of samples."""
    adult, child = g.PATIENT_NAMES.index("adult#001"), g.PATIENT_NAMES.index("child#003")
    episodes = [
        # adult day 1: reset 10 samples (all in range, 1 000 mg/dL summed), 2 decisions
        [
            _info(adult, 10, 10, 0, 0, 0, 1000.0),
            _info(adult, 20, 15, 0, 0, 5, 3000.0),
            _info(adult, 10, 5, 5, 2, 0, 700.0, prohibited=True),
        ],
        # adult day 2: one decision, 20 samples above 180
        [_info(adult, 0, 0, 0, 0, 0, 0.0), _info(adult, 20, 0, 0, 0, 20, 4000.0)],
        # child day: dies after its second decision (a reset with 4 samples at 100 mg/dL)
        [
            _info(child, 4, 4, 0, 0, 0, 400.0),
            _info(child, 6, 2, 4, 0, 0, 500.0, prohibited=True),
            _info(child, 5, 0, 5, 5, 0, 200.0, prohibited=True, death=True),
        ],
    ]
    r = g.glucose_metrics(episodes)
    # all: samples 10+20+10 + 20 + 4+6+5 = 75; in range 10+15+5+0+4+2 = 36
    assert r[m.TIME_IN_RANGE] == pytest.approx(100 * 36 / 75)
    assert r[m.TIME_BELOW_70] == pytest.approx(100 * 14 / 75)
    assert r[m.TIME_BELOW_54] == pytest.approx(100 * 7 / 75)
    assert r[m.TIME_ABOVE_180] == pytest.approx(100 * 25 / 75)
    assert r[m.GLUCOSE_MEAN] == pytest.approx(9800 / 75)
    # adults: 60 samples, 30 in range, 5 below 70, 2 below 54, 25 above; 1 of 3 decisions bad
    assert r[m.group_metric(m.TIME_IN_RANGE, "adult")] == pytest.approx(50.0)
    assert r[m.group_metric(m.TIME_BELOW_54, "adult")] == pytest.approx(100 * 2 / 60)
    assert r[m.group_metric(m.GLUCOSE_MEAN, "adult")] == pytest.approx(8700 / 60)
    assert r[m.group_metric(m.VIOLATION_RATE, "adult")] == pytest.approx(1 / 3)
    assert r[m.group_metric(m.DEATHS_PER_100_EPISODES, "adult")] == 0.0
    # child: 15 samples, 6 in range, 9 below 70, 5 below 54; 2 of 2 decisions bad; 1 death in 1
    assert r[m.group_metric(m.TIME_IN_RANGE, "child")] == pytest.approx(40.0)
    assert r[m.group_metric(m.TIME_BELOW_70, "child")] == pytest.approx(60.0)
    assert r[m.group_metric(m.VIOLATION_RATE, "child")] == 1.0
    assert r[m.group_metric(m.DEATHS_PER_100_EPISODES, "child")] == 100.0
    assert not any(key.endswith("/adolescent") for key in r)


def test_glucose_metrics_refuses_empty_input() -> None:
    with pytest.raises(ConfigError, match="empty"):
        g.glucose_metrics([])
    with pytest.raises(ConfigError, match="empty episode"):
        g.glucose_metrics([[]])


def test_evaluator_reports_the_glucose_metrics_of_the_env_infos() -> None:
    """evaluate_policies adds the env's episode metrics and skips the prohibited-mass scan."""
    import torch

    from fttpo_ray.evaluation import EvalPolicy, evaluate_policies

    class Fixed:
        def __init__(self, action: torch.Tensor) -> None:
            self.action = action

        def sample(self, shape: tuple = ()) -> torch.Tensor:
            return self.action

    no_bolus = EvalPolicy(
        "none", lambda obs: Fixed(-torch.ones(obs.shape[0], 1)), lambda d: d.action
    )
    config = {"patients": ["adult#001"], "label_prohibited": True}
    result = evaluate_policies(
        [no_bolus],
        GLUCOSE_ENV_ID,
        env_config=config,
        episodes=2,
        seed=5,
    )["none"]
    env = gym.make(GLUCOSE_ENV_ID, **config)
    episodes = []
    for i in range(2):
        _, info = env.reset(seed=5 + i)
        infos, done = [info], False
        while not done:
            _, _, terminated, truncated, info = env.step(np.array([-1.0], np.float32))
            infos.append(info)
            done = terminated or truncated
        episodes.append(infos)
    for key, value in g.glucose_metrics(episodes).items():
        assert result[key] == pytest.approx(value), key
    assert result[m.VIOLATIONS] == 0.0
    assert m.PROHIBITED_MASS_MEAN not in result
