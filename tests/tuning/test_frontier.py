"""The return/violation frontier: pooled learned points from trials' last evaluations, and the
PNG."""

from __future__ import annotations

import pandas as pd
import pytest

from fttpo_ray import metrics as m
from fttpo_ray.evaluation.safety import clopper_pearson_upper
from fttpo_ray.reporting.columns import RUN_ID
from fttpo_ray.reporting.frontier import CERTIFIED, CONSTANT, LEARNED, FrontierPoint, frontier_plot
from fttpo_ray.reporting.references import _learned_points
from fttpo_ray.tuning.tracking import ENV_PARAM, RUN_PARAM, SEED_PARAM


def _final(ret: float, violations: int, actions: int, policy: str) -> dict[str, float]:
    return {
        m.evaluation_key(policy, m.EPISODE_RETURN_MEAN): ret,
        m.evaluation_key(policy, m.VIOLATIONS): violations,
        m.evaluation_key(policy, m.ACTIONS): actions,
    }


def test_learned_points_pool_violations_over_seeds_per_group_and_policy() -> None:
    trials = pd.DataFrame(
        {
            RUN_ID: ["a", "b", "c"],
            ENV_PARAM: ["env"] * 3,
            RUN_PARAM: ["fttpo"] * 3,
            "certificate_alpha": ["0.1", "0.1", "0.4"],
            SEED_PARAM: ["0", "1", "0"],
        }
    )
    finals = {
        "a": {**_final(1.0, 2, 100, m.THIN), **_final(0.5, 0, 100, m.CERTIFIED)},
        "b": {**_final(3.0, 4, 100, m.THIN), **_final(0.7, 1, 100, m.CERTIFIED)},
        "c": _final(2.0, 10, 50, m.THIN),
    }
    points = {
        p.label: p
        for p in _learned_points(trials, finals, [ENV_PARAM, RUN_PARAM, "certificate_alpha"])
    }
    thin = points["thin certificate_alpha=0.1"]
    assert thin.kind == LEARNED
    assert thin.episode_return == pytest.approx(2.0) and thin.return_sem == pytest.approx(1.0)
    assert thin.violation_rate == pytest.approx(6 / 200)
    assert thin.violation_ub95 == pytest.approx(clopper_pearson_upper(6, 200))
    certified = points["certified certificate_alpha=0.1"]
    assert certified.kind == CERTIFIED and certified.violation_rate == pytest.approx(1 / 200)
    single = points["thin certificate_alpha=0.4"]
    assert single.return_sem == 0.0 and single.violation_rate == pytest.approx(0.2)
    assert "certified certificate_alpha=0.4" not in points


def test_frontier_plot_writes_a_png(tmp_path) -> None:
    points = [
        FrontierPoint(f"{d:g}", CONSTANT, d, 0.1, abs(d) / 10, abs(d) / 10 + 0.01)
        for d in (-0.5, 0.0, 0.5)
    ] + [FrontierPoint("certified", CERTIFIED, 0.2, 0.05, 0.0, 0.003)]
    path = frontier_plot(points, tmp_path / "frontier.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
