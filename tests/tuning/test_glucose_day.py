"""A day of glucose per policy (fttpo_ray/reporting/glucose_day.py): two simple policies (no bolus,
the clean basal-bolus controller) on two patients for one day each, on the real simulator.

Checked: common random numbers (identical meals, identical glucose and CGM until the first
bolus), each policy's boluses (zero for no bolus; the controller's rule at the CGM reading of
each meal for basal-bolus), no bolus ends higher on average, the PNG (written whole, atomically,
nothing left behind on failure), and the one-line errors for bad input.
"""

from __future__ import annotations

import matplotlib.figure
import matplotlib.image
import numpy as np
import pytest
import torch

from fttpo_ray.envs import GLUCOSE_ENV_ID, TREATMENT_ENV_ID
from fttpo_ray.envs.glucose import (
    SAMPLE_MINUTES,
    basal_bolus_action,
    basal_bolus_dose,
    simglucose_parts,
)
from fttpo_ray.errors import ConfigError, EnvironmentSpecError
from fttpo_ray.evaluation.rollout import EvalPolicy
from fttpo_ray.reporting.glucose_day import (
    DayTraces,
    day_of_glucose,
    glucose_days,
    plot_glucose_days,
)

PATIENTS = ("adult#001", "child#001")
SEED = 3
NO_BOLUS = "no bolus"
BASAL_BOLUS = "basal-bolus"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The pump rounds a bolus to its increment (0.05 U); observations are float32.
BOLUS_TOLERANCE = 0.06


class PointMass:
    """A deterministic 'distribution': ``sample()`` and the deterministic action are ``actions``."""

    def __init__(self, actions: torch.Tensor) -> None:
        self.actions = actions

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.actions.expand(*sample_shape, *self.actions.shape)


def _point_policy(name: str, act) -> EvalPolicy:
    return EvalPolicy(
        name=name,
        distribution=lambda obs: PointMass(torch.as_tensor(act(obs.numpy()))),
        deterministic=lambda dist: dist.actions,
    )


def _policies() -> list[EvalPolicy]:
    return [
        _point_policy(NO_BOLUS, lambda obs: -np.ones((obs.shape[0], 1), dtype=np.float32)),
        _point_policy(BASAL_BOLUS, basal_bolus_action),
    ]


@pytest.fixture(scope="module")
def traces() -> DayTraces:
    return glucose_days(_policies(), GLUCOSE_ENV_ID, patients=PATIENTS, seed=SEED)


def test_every_policy_lives_the_same_day(traces: DayTraces) -> None:
    assert traces.policies == (NO_BOLUS, BASAL_BOLUS)
    assert [row.patient for row in traces.patients] == list(PATIENTS)
    for row in traces.patients:
        assert row.meal_minute.size >= 3 and np.all(row.carbs > 0)
        none, basal = row.day(NO_BOLUS), row.day(BASAL_BOLUS)
        # Same start state and sensor noise: identical up to (and including) the first meal.
        first = int(row.meal_minute[0]) // SAMPLE_MINUTES + 1
        np.testing.assert_array_equal(none.glucose[:first], basal.glucose[:first])
        np.testing.assert_array_equal(none.cgm[:first], basal.cgm[:first])
        assert not np.array_equal(none.glucose, basal.glucose)
        for day in row.days:
            assert not day.died
            assert day.minute[-1] == 24 * 60
            np.testing.assert_array_equal(day.bolus_minute, row.meal_minute)


def test_boluses_follow_each_policy(traces: DayTraces) -> None:
    quest = simglucose_parts().quest
    for row in traces.patients:
        none, basal = row.day(NO_BOLUS), row.day(BASAL_BOLUS)
        np.testing.assert_array_equal(none.bolus, np.zeros(row.meal_minute.size))
        cgm_at_meal = basal.cgm[row.meal_minute // SAMPLE_MINUTES]
        expected = basal_bolus_dose(
            cgm_at_meal, row.carbs, quest.loc[row.patient, "CR"], quest.loc[row.patient, "CF"]
        )
        np.testing.assert_allclose(basal.bolus, expected, atol=BOLUS_TOLERANCE)
        assert np.all(basal.bolus > 0)
        # Without meal insulin the day runs much higher (measured on this seed: +73 mg/dL for
        # the adult, +344 mg/dL for the child).
        assert none.glucose.mean() > basal.glucose.mean() + 50.0
        assert basal.percent_of_time(70, 180) > none.percent_of_time(70, 180)


def test_plot_writes_a_whole_png_and_nothing_else(traces: DayTraces, tmp_path) -> None:
    path = plot_glucose_days(traces, tmp_path / "sub" / "day.png")
    assert path == tmp_path / "sub" / "day.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in path.parent.iterdir()] == ["day.png"]
    image = matplotlib.image.imread(path)
    # Two patient rows of 3.6 in each at 110 dpi, 11 in wide.
    assert image.shape[0] > 2 * 3.0 * 110 and image.shape[1] > 10 * 110


def test_a_failed_save_leaves_the_old_file_and_no_temporary(
    traces: DayTraces, tmp_path, monkeypatch
) -> None:
    path = tmp_path / "day.png"
    path.write_bytes(b"old")

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        plot_glucose_days(traces, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["day.png"]


def test_day_of_glucose_end_to_end(tmp_path) -> None:
    path = day_of_glucose(
        _policies(), GLUCOSE_ENV_ID, patients=["adolescent#001"], seed=SEED, path=tmp_path / "a.png"
    )
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 20_000


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (
            {"patients": ["adult#011"]},
            ConfigError,
            ["`patients`", "'adult#011'", "adult#001..adult#010"],
        ),
        ({"patients": []}, ConfigError, ["`patients` is empty", "child#001..child#010"]),
        ({"policies": []}, ConfigError, ["`policies` is empty"]),
        ({"path": "day.svg"}, ConfigError, ["`path`", "day.svg"]),
        ({"env_id": TREATMENT_ENV_ID}, EnvironmentSpecError, ["glucose_trace", TREATMENT_ENV_ID]),
    ],
)
def test_bad_input_raises_one_line_errors(kwargs, error, words, tmp_path) -> None:
    args = {
        "policies": _policies(),
        "env_id": GLUCOSE_ENV_ID,
        "patients": ["adult#001"],
        "seed": 0,
        "path": tmp_path / "day.png",
        **kwargs,
    }
    policies, env_id = args.pop("policies"), args.pop("env_id")
    with pytest.raises(error) as caught:
        day_of_glucose(policies, env_id, **args)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    assert not (tmp_path / "day.png").exists()


def test_repeated_policy_names_are_refused() -> None:
    twice = [_policies()[0], _policies()[0]]
    with pytest.raises(ConfigError, match="distinct.*'no bolus'"):
        glucose_days(twice, GLUCOSE_ENV_ID, patients=["adult#001"], seed=0)
