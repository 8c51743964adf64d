"""MLflow's dashboard as a person sees it (real sweep, real ``mlflow server``, headless
Chromium): on a tiny quick-start sweep's store, the training-runs view that ``fttpo sweep``
prints lists every trial with its dataset, the chart view draws charts on first open, and the
views grouped by a param (mean and band over seeds) and of parallel coordinates open."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fttpo_ray.reporting import dashboard
from fttpo_ray.reporting.mlflow_server import mlflow_server
from fttpo_ray.tuning import tracking as tr
from tests.helpers import run_cli
from tests.tuning.test_sweep_e2e import tiny_quickstart

EXPERIMENT = "tiny_quickstart"
DATASET_ID = "fttpo/treatment/random-v0"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(dashboard.chromium() is None, reason="needs chromium (.ci/run installs it)"),
]


def test_trials_listed_and_charted_on_first_open(tmp_path: Path, ray_local: None) -> None:
    path = tiny_quickstart(tmp_path / f"{EXPERIMENT}.yaml")
    with mlflow_server(tmp_path) as server:
        rc, stdout, _ = run_cli(
            ["sweep", str(path), "--mlflow-uri", server.uri, "--storage", str(tmp_path),
             "--iterations", "2"]
        )  # fmt: skip
        assert rc == 0, stdout
        client = MlflowClient(server.uri)
        exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        trials = client.search_runs([exp_id], f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRIAL}'")
        names = {run.info.run_name for run in trials}
        assert len(names) == 3
        (printed,) = re.findall(r"Training runs +(\S+)", stdout)
        assert printed == dashboard.runs_url(server.uri, exp_id)

        runs_view = dashboard.dump_dom(printed)
        for name in names:  # every trial listed, not folded under the sweep run
            assert f">{name}<" in runs_view, name
        assert DATASET_ID in runs_view  # the Datasets column
        assert "Overview" not in re.findall(r">([^<]+)</h\d", runs_view)

        chart_view = dashboard.runs_url(server.uri, exp_id, dashboard.CHART_VIEW)
        charts = dashboard.dump_dom(chart_view)
        assert charts.count(dashboard.PLOT_CLASS) >= 1
        for section in ("evaluation/thin", "evaluation/fat", "learner"):
            assert f">{section}<" in charts or f">{section} (" in charts, section

        by_variant = dashboard.group_by_param("variant")
        grouped = dashboard.share_view(client, exp_id, "by-variant", by_variant)
        page = dashboard.dump_dom(
            dashboard.runs_url(server.uri, exp_id, dashboard.CHART_VIEW, grouped)
        )
        assert "Group by: variant" in page
        assert page.count(dashboard.PLOT_CLASS) >= 1
