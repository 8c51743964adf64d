"""The report's reference rows dispatch by environment: a treatment simulator keeps its treatment
rows (constant-dose grid ...), the glucose simulator gets the glucose rows and a time-in-range
frontier, and no density plot. The trials' last evaluations are given by hand (no MLflow); the
glucose references are a hand-made :class:`GlucoseReference` (their rollouts have their own
tests in tests/evaluation/test_glucose_reference.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from fttpo_ray import metrics as m
from fttpo_ray.data.collect import META_BOLUS_NOISE
from fttpo_ray.envs import GLUCOSE_ENV_ID, TREATMENT_ENV_ID
from fttpo_ray.evaluation.glucose_reference import (
    BASAL_BOLUS,
    BEST_RATIO,
    NO_BOLUS,
    GlucoseReference,
    behaviour_name,
)
from fttpo_ray.reporting import references as refs
from fttpo_ray.reporting.columns import RUN_ID, ReportData
from fttpo_ray.reporting.densities import plot_policy_densities
from fttpo_ray.reporting.frontier import RATIO, REFERENCE
from fttpo_ray.tuning.tracking import (
    ALGORITHM_PARAM,
    DATASET_ID_PARAM,
    ENV_PARAM,
    RUN_PARAM,
    SEED_PARAM,
)


def _row(ret: float, tir: float, below70: float, violations: int, actions: int) -> dict:
    return {
        m.EPISODE_RETURN_MEAN: ret,
        m.EPISODE_RETURN_SEM: 0.1,
        m.EPISODES: 3.0,
        m.TIME_IN_RANGE: tir,
        m.TIME_BELOW_70: below70,
        m.TIME_BELOW_54: below70 / 2,
        m.TIME_ABOVE_180: 100.0 - tir - below70,
        m.GLUCOSE_MEAN: 150.0,
        m.VIOLATION_RATE: violations / actions,
        m.VIOLATIONS: float(violations),
        m.ACTIONS: float(actions),
        m.VIOLATION_RATE_UB95: 0.5,
        m.DEATHS_PER_100_EPISODES: 0.0,
    }


def _fake_reference(sigmas: list[float]) -> GlucoseReference:
    rows = {NO_BOLUS: _row(-17.0, 20.0, 0.0, 0, 12), BASAL_BOLUS: _row(-3.0, 83.9, 5.7, 0, 12)}
    rows |= {behaviour_name(s): _row(-3.5, 80.0, 8.0, 1, 12) for s in sigmas}
    rows[BEST_RATIO] = _row(-5.0, 70.0, 4.0, 0, 12)
    return GlucoseReference(
        rows=rows,
        best_ratio=0.1,
        selection={r: _row(-10 * (r - 0.1) ** 2, 70 - 100 * r, 10 * r, 0, 12) for r in (0.05, 0.1)},
        sigmas=tuple(sigmas),
        episodes=3,
        seed=1_000_000,
        selection_episodes=2,
        selection_seed=2_000_000,
        ratios=(0.05, 0.1),
    )


def _data(trials: pd.DataFrame) -> ReportData:
    return ReportData(
        experiment="e",
        tracking_uri="unused",
        trials=trials,
        history=pd.DataFrame(),
        group_columns=[ENV_PARAM, DATASET_ID_PARAM, RUN_PARAM],
    )


def test_treatment_keeps_its_rows_and_glucose_gets_glucose_rows(
    tmp_path: Path, monkeypatch
) -> None:
    trials = pd.DataFrame(
        {
            RUN_ID: ["t", "g0", "g1"],
            ENV_PARAM: [TREATMENT_ENV_ID, GLUCOSE_ENV_ID, GLUCOSE_ENV_ID],
            DATASET_ID_PARAM: ["treatment-ds", "glucose-wide", "glucose-wide"],
            RUN_PARAM: ["fttpo"] * 3,
            SEED_PARAM: ["0", "0", "1"],
        }
    )
    thin = m.THIN
    finals = {
        "t": {m.evaluation_key(thin, m.EPISODES): 3.0},
        "g0": {m.evaluation_key(thin, k): v for k, v in _row(-4.0, 75.0, 3.0, 1, 10).items()},
        "g1": {m.evaluation_key(thin, k): v for k, v in _row(-2.0, 85.0, 3.0, 0, 10).items()},
    }
    finals["g0"][m.evaluation_key(thin, m.EPISODES)] = 10.0  # the largest count is used
    monkeypatch.setattr(refs, "_final_metrics", lambda data: finals)
    monkeypatch.setattr(
        refs,
        "read_metadata",
        lambda dataset_id: {META_BOLUS_NOISE: 0.6} if dataset_id == "glucose-wide" else {},
    )
    calls: list[dict] = []

    def fake_references(env_id, **kwargs):
        calls.append({"env_id": env_id, **kwargs})
        return _fake_reference(kwargs["sigmas"])

    monkeypatch.setattr(refs, "glucose_references", fake_references)
    plotted: list[list] = []
    real_plot = refs.frontier_plot

    def spy_plot(points, path, **kwargs):
        plotted.append(list(points))
        return real_plot(points, path, **kwargs)

    monkeypatch.setattr(refs, "frontier_plot", spy_plot)

    section = refs.reference_section(_data(trials), tmp_path)
    text = "\n".join(section.lines)

    # the treatment simulator: its rows and columns as before (3 episodes, real rollouts)
    treatment = text.split(f"## Reference rows: `{GLUCOSE_ENV_ID}`")[0]
    assert f"## Reference rows: `{TREATMENT_ENV_ID}`" in treatment
    assert "| policy" in treatment and "deaths / 100 episodes |" in treatment
    assert "no treatment (a = 0)" in treatment and "best constant dose (a = " in treatment
    assert "time in range" not in treatment

    # the glucose simulator: its rows, σ from the dataset's metadata, the trials' episode count
    # the U/g rule chosen on as many selection episodes as the evaluation had (at most 30);
    # the rows kept in the user's cache directory (tests: a temporary one)
    assert calls == [
        {
            "env_id": GLUCOSE_ENV_ID,
            "episodes": 10,
            "seed": 1_000_000,
            "selection_episodes": 10,
            "sigmas": [0.6],
            "cache_dir": refs.reference_cache_dir(),
        }
    ]
    assert str(refs.reference_cache_dir()).startswith(os.environ["XDG_CACHE_HOME"])
    glucose = text.split(f"## Reference rows: `{GLUCOSE_ENV_ID}`")[1]
    header = next(line for line in glucose.splitlines() if line.startswith("| policy"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(refs.GLUCOSE_COLUMNS)
    basal = next(line for line in glucose.splitlines() if line.startswith(f"| {BASAL_BOLUS}"))
    cells = [c.strip() for c in basal.strip("|").split("|")]
    assert cells[2:7] == ["83.9", "5.7", "2.9", "10.4", "150"]  # 100 - 83.9 - 5.7 = 10.4
    assert "best state-independent rule (0.1 U/g)" in glucose
    assert behaviour_name(0.6) in glucose and "best constant dose" not in glucose

    assert [p.name for p in section.files] == [
        "frontier_fttpo-TreatmentSim-v0.png",
        "frontier_fttpo-GlucoseBolus-v0.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in section.files)
    points = {p.label: p for p in plotted[1]}
    assert {p.label for p in plotted[1] if p.kind == RATIO} == {"0.05", "0.1"}
    assert points["basal-bolus"].kind == REFERENCE
    assert points["basal-bolus"].episode_return == 83.9  # the x value is the time in range
    assert {"no bolus", "behaviour σ=0.6", "best rule 0.1 U/g"} <= set(points)
    learned = [p for p in plotted[1] if p.label.startswith(thin)]
    assert len(learned) == 1  # the two seeds of one group pooled
    assert learned[0].episode_return == pytest.approx(80.0)  # mean time in range over seeds
    assert learned[0].return_sem == pytest.approx(5.0)
    assert learned[0].violation_rate == pytest.approx(1 / 20)


def test_a_glucose_report_has_no_density_plot(tmp_path: Path) -> None:
    trials = pd.DataFrame(
        {RUN_ID: ["g"], ENV_PARAM: [GLUCOSE_ENV_ID], ALGORITHM_PARAM: ["FtTPO"], SEED_PARAM: ["0"]}
    )
    assert plot_policy_densities(_data(trials), tmp_path) == []
    assert list(tmp_path.iterdir()) == []
