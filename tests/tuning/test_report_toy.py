"""``fttpo report`` on a toy sweep whose results are known in closed form: the table's means
and standard errors over seeds, and the heat-map and learning-curve files (real Tune/MLflow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fttpo_ray.reporting.report import RESULTS_CSV, RESULTS_MD
from tests.helpers import run_cli
from tests.tuning.toy_trainable import thin_return, thin_violation_rate, toy_yaml

KL_WEIGHTS = [0.1, 1.0]
THIN_QS = [-1.0, 0.5]
SEEDS = [0, 1]
ITERATIONS = 3

pytestmark = pytest.mark.slow


def test_report_table_is_mean_and_standard_error_over_seeds(
    tmp_path: Path, ray_local: None, toy_registered: str
) -> None:
    path = toy_yaml(
        tmp_path / "toy_grid.yaml",
        seeds=SEEDS,
        iterations=ITERATIONS,
        kl_weights=KL_WEIGHTS,
        thin_qs=THIN_QS,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "report"
    assert run_cli(["sweep", str(path), "--mlflow-uri", uri, "--storage", str(tmp_path)]).rc == 0
    report = ["report", "--experiment", "toy_grid", "--mlflow-uri", uri, "--out", str(out)]
    assert run_cli(report).rc == 0

    table = pd.read_csv(out / RESULTS_CSV)
    thin = table[table["policy"] == "thin"]
    assert len(thin) == len(KL_WEIGHTS) * len(THIN_QS)
    for row in thin.to_dict("records"):
        returns = [thin_return(row["kl_weight"], ITERATIONS, s) for s in SEEDS]
        rates = [thin_violation_rate(row["thin_q"], s) for s in SEEDS]
        assert row["n"] == len(SEEDS)
        assert row["return_last_mean"] == pytest.approx(sum(returns) / 2)
        # two seeds: s.e. = |a - b| / 2
        assert row["return_last_sem"] == pytest.approx(abs(returns[0] - returns[1]) / 2)
        assert row["return_best_mean"] == pytest.approx(row["return_last_mean"])
        assert row["violation_rate_last_mean"] == pytest.approx(sum(rates) / 2)
    fat = table[table["policy"] == "fat"]
    assert (fat["violation_rate_last_mean"] == 0.3).all()

    assert (out / "learning_curves.png").is_file()
    assert (out / "heatmap_toy_fttpo_toy.png").is_file()
    assert not (out / "densities.png").exists()  # the toy trials have no checkpoints
    text = (out / RESULTS_MD).read_text()
    assert "![learning_curves](learning_curves.png)" in text
    assert "± 0.05" in text
