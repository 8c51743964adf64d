"""Reference policies of the glucose environment: their actions on hand-made observations, the
choice of the U-per-gram ratio on selection episodes, and one tiny real run through the
evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fttpo_ray import metrics as m
from fttpo_ray.defaults import EVALUATION_SEED, SELECTION_SEED
from fttpo_ray.envs import GLUCOSE_ENV_ID
from fttpo_ray.envs.glucose import basal_bolus_action
from fttpo_ray.errors import ConfigError
from fttpo_ray.evaluation import glucose_reference as gr
from fttpo_ray.evaluation.glucose_reference import (
    BASAL_BOLUS,
    BEST_RATIO,
    NO_BOLUS,
    basal_bolus_policy,
    behaviour_name,
    behaviour_policy,
    glucose_references,
    no_bolus_policy,
    ratio_policy,
    select_ratio,
)

#: Three hand-made observations (features: CGM/100, trend/50, carbs/50, IOB/10, sin, cos,
#: weight/50, 10/CR, 50/CF): 120 mg/dL with 50 g (CR 10, CF 50); 200 mg/dL with 30 g (CR 20,
#: CF 25, so a correction of (200 - 140) / 25 = 2.4 U); 100 mg/dL with 400 g (beyond the pump).
OBS = torch.tensor(
    [
        [1.2, 0.0, 1.0, 0.0, 0.0, 1.0, 1.4, 1.0, 1.0],
        [2.0, 0.2, 0.6, 0.1, 1.0, 0.0, 1.0, 0.5, 2.0],
        [1.0, 0.0, 8.0, 0.0, 0.0, -1.0, 1.6, 1.0, 1.0],
    ],
    dtype=torch.float32,
)
#: Their clean basal-bolus doses (U): 50/10; 30/20 + 60/25; 400/10.
DOSES = np.array([5.0, 1.5 + 2.4, 40.0])
ONE_PATIENT = {"patients": ["adult#001"]}


def _act(policy, obs=OBS, explore=True):
    dist = policy.distribution(obs)
    return (dist.sample() if explore else policy.deterministic(dist)).numpy()


def test_no_bolus_is_the_action_minus_one() -> None:
    policy = no_bolus_policy()
    assert policy.name == NO_BOLUS
    np.testing.assert_array_equal(_act(policy), -np.ones((3, 1), np.float32))
    np.testing.assert_array_equal(_act(policy, explore=False), -np.ones((3, 1), np.float32))


def test_basal_bolus_is_the_envs_controller_and_its_hand_computed_dose() -> None:
    action = _act(basal_bolus_policy())
    np.testing.assert_array_equal(action, basal_bolus_action(OBS.numpy()))
    expected = 2.0 * np.clip(DOSES / 30.0, 0.0, 1.0) - 1.0
    np.testing.assert_allclose(action[:, 0], expected, atol=1e-6)
    assert basal_bolus_policy().name == BASAL_BOLUS
    # a smaller pump range maps the same doses to larger actions
    np.testing.assert_allclose(
        _act(basal_bolus_policy(max_bolus=10.0))[:, 0],
        2.0 * np.clip(DOSES / 10.0, 0.0, 1.0) - 1.0,
        atol=1e-6,
    )


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.1, 0.3])
def test_ratio_rule_is_ratio_times_carbs(ratio: float) -> None:
    carbs = np.array([50.0, 30.0, 400.0])
    expected = 2.0 * np.clip(ratio * carbs / 30.0, 0.0, 1.0) - 1.0
    policy = ratio_policy(ratio)
    np.testing.assert_allclose(_act(policy)[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(_act(policy, explore=False)[:, 0], expected, atol=1e-6)
    assert policy.name == f"{ratio:g} U/g"


def test_behaviour_without_noise_is_the_clean_controller() -> None:
    torch.manual_seed(0)
    clean = basal_bolus_action(OBS.numpy())
    np.testing.assert_allclose(_act(behaviour_policy(0.0)), clean, atol=1e-6)
    np.testing.assert_allclose(_act(behaviour_policy(0.6), explore=False), clean, atol=1e-6)
    assert (
        behaviour_policy(0.3).name
        == behaviour_name(0.3)
        == ("behaviour (basal-bolus × lognormal σ = 0.3)")
    )


def test_behaviour_multiplies_the_dose_by_seeded_lognormal_noise() -> None:
    sigma = 0.5
    torch.manual_seed(7)
    z = torch.randn(3, 1, dtype=torch.float64).numpy()[:, 0]
    torch.manual_seed(7)
    action = _act(behaviour_policy(sigma))[:, 0]
    expected = 2.0 * np.clip(DOSES * np.exp(sigma * z) / 30.0, 0.0, 1.0) - 1.0
    np.testing.assert_allclose(action, expected, atol=1e-6)
    # the noise's median is the clean dose: half of many draws lie below it (first obs)
    torch.manual_seed(1)
    draws = behaviour_policy(sigma).distribution(OBS[:1]).sample((4000,)).numpy().reshape(-1)
    clean = 2.0 * 5.0 / 30.0 - 1.0
    assert abs(np.mean(draws < clean) - 0.5) < 0.03  # s.e. 0.008


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan, True, "0.3"])
def test_bad_sigma_and_ratio_raise(bad) -> None:
    with pytest.raises(ConfigError, match="sigma"):
        behaviour_policy(bad)
    with pytest.raises(ConfigError, match="ratio"):
        ratio_policy(bad)


def test_bad_observation_shape_raises() -> None:
    with pytest.raises(ConfigError, match=r"\(B, 9\)"):
        basal_bolus_policy().distribution(torch.zeros(2, 8))


def _fake_evaluator(calls: list[dict]):
    """An evaluator whose returns peak at 0.15 U/g on the selection episodes and at 0.05 U/g on
    any other episodes (so a choice made on the wrong episodes shows)."""

    def evaluate(policies, env_id, *, env_config, episodes, seed, explore):
        calls.append(
            {
                "names": [p.name for p in policies],
                "seed": seed,
                "episodes": episodes,
                "env_config": dict(env_config),
                "explore": explore,
            }
        )
        peak = 0.15 if seed == SELECTION_SEED else 0.05
        out = {}
        for p in policies:
            carbs = 50.0
            action = float(p.distribution(OBS[:1]).sample()[0, 0])
            ratio = (action + 1.0) / 2.0 * 30.0 / carbs  # the first obs has 50 g
            out[p.name] = {m.EPISODE_RETURN_MEAN: -((ratio - peak) ** 2), m.EPISODES: episodes}
        return out

    return evaluate


def test_the_ratio_is_chosen_on_selection_episodes_and_scored_on_evaluation_ones(
    monkeypatch,
) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(gr, "evaluate_policies", _fake_evaluator(calls))
    ratios = (0.0, 0.05, 0.1, 0.15, 0.2)
    ref = glucose_references(
        episodes=7, selection_episodes=5, sigmas=(0.3,), ratios=ratios, env_config=ONE_PATIENT
    )
    assert ref.best_ratio == 0.15  # the selection peak, not the evaluation one (0.05)
    assert ref.ratios == ratios
    assert ref.best_ratio == max(ratios, key=lambda r: ref.selection[r][m.EPISODE_RETURN_MEAN])
    selection, evaluation = calls
    assert (selection["seed"], selection["episodes"]) == (SELECTION_SEED, 5)
    assert selection["env_config"] == ONE_PATIENT
    assert (evaluation["seed"], evaluation["episodes"]) == (EVALUATION_SEED, 7)
    assert evaluation["env_config"] == ONE_PATIENT and evaluation["explore"]
    assert evaluation["names"] == [NO_BOLUS, BASAL_BOLUS, behaviour_name(0.3), BEST_RATIO]
    assert list(ref.rows) == evaluation["names"]
    # the best rule's row acts as 0.15 U/g: on the evaluation episodes it scores -(0.15-0.05)^2
    assert ref.rows[BEST_RATIO][m.EPISODE_RETURN_MEAN] == pytest.approx(-0.01, abs=1e-6)


def test_ties_go_to_the_smallest_ratio_and_no_sigma_gives_no_behaviour_row(monkeypatch) -> None:
    monkeypatch.setattr(
        gr,
        "evaluate_policies",
        lambda policies, *a, **k: {p.name: {m.EPISODE_RETURN_MEAN: 1.0} for p in policies},
    )
    best, selection = select_ratio(ratios=(0.2, 0.1, 0.3))
    assert best == 0.1 and set(selection) == {0.1, 0.2, 0.3}
    ref = glucose_references(episodes=2, selection_episodes=2, ratios=(0.2, 0.1))
    assert list(ref.rows) == [NO_BOLUS, BASAL_BOLUS, BEST_RATIO] and ref.sigmas == ()


def test_overlapping_seeds_and_bad_grids_raise() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        glucose_references(episodes=10, seed=SELECTION_SEED - 5, selection_episodes=2)
    with pytest.raises(ConfigError, match="episodes"):
        glucose_references(episodes=0)
    with pytest.raises(ConfigError, match="empty"):
        select_ratio(ratios=())
    with pytest.raises(ConfigError, match="duplicates"):
        select_ratio(ratios=(0.1, 0.1))


def test_tiny_real_run_through_the_evaluator() -> None:
    """Two selection and two evaluation patient-days of one patient (about 10 s)."""
    ref = glucose_references(
        GLUCOSE_ENV_ID,
        episodes=2,
        selection_episodes=2,
        sigmas=(0.0,),
        ratios=(0.0, 0.1),
        env_config=ONE_PATIENT,
    )
    returns = {r: ref.selection[r][m.EPISODE_RETURN_MEAN] for r in (0.0, 0.1)}
    assert ref.best_ratio == max(returns, key=returns.get)
    assert ref.best_ratio == 0.1  # no bolus at all leaves adult#001 far above range
    rows = ref.rows
    assert rows[NO_BOLUS][m.BOUNDARY_ACTION_RATE] == 1.0
    assert rows[NO_BOLUS][m.TIME_IN_RANGE] < rows[BASAL_BOLUS][m.TIME_IN_RANGE]
    # sigma 0: the behaviour row is the clean controller's, number for number
    assert rows[behaviour_name(0.0)] == rows[BASAL_BOLUS]
    for row in rows.values():
        assert row[m.EPISODES] == 2.0 and 0.0 <= row[m.TIME_IN_RANGE] <= 100.0
        assert m.VIOLATION_RATE_UB95 in row and m.GLUCOSE_MEAN in row


def test_a_cached_reference_is_read_back_for_the_same_question_only(monkeypatch, tmp_path) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(gr, "evaluate_policies", _fake_evaluator(calls))
    ask = {"episodes": 7, "selection_episodes": 5, "sigmas": (0.3,), "ratios": (0.1, 0.15)}
    first = glucose_references(**ask, env_config=ONE_PATIENT, cache_dir=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("glucose-references-*.json"))) == 1
    again = glucose_references(**ask, env_config=ONE_PATIENT, cache_dir=tmp_path)
    assert len(calls) == 2  # nothing rolled out
    assert again == first
    glucose_references(**{**ask, "episodes": 8}, env_config=ONE_PATIENT, cache_dir=tmp_path)
    assert len(calls) == 4 and len(list(tmp_path.glob("glucose-references-*.json"))) == 2
    key = gr.reference_cache_key(
        {
            "env_id": GLUCOSE_ENV_ID,
            "episodes": 7,
            "seed": EVALUATION_SEED,
            "selection_episodes": 5,
            "selection_seed": SELECTION_SEED,
            "sigmas": [0.3],
            "ratios": [0.1, 0.15],
            "env_config": ONE_PATIENT,
        }
    )
    assert (tmp_path / f"glucose-references-{key}.json").is_file()
