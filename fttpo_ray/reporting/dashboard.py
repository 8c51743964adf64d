"""MLflow's dashboard as a person sees it: pages of ``mlflow server`` rendered by headless
Chromium (Debian's ``chromium`` package) into a screenshot or the DOM, and shared views (a
grouping, a parallel-coordinates chart) stored in the experiment for a link to open.

Used by the browser test (``tests/tuning/test_dashboard_browser.py``) and by
``docs/make_dashboard_screenshots.py``. The shared-view state is MLflow 3.17's own (the UI's
"Share" button writes the same experiment tag); the browser test checks that it still opens.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: What ``.ci/run`` installs (``apt-get install -y chromium``).
CHROMIUM_NAMES = ("chromium", "chromium-browser")
WINDOW = (1800, 1100)
#: MLflow 3.17 opens its "MLflow Assistant" panel on a local server's first visit (it remembers
#: the choice in the browser's storage, which a fresh headless profile does not have): the
#: panel takes this share of the window at its right, after the page's margin.
ASSISTANT_SHARE = 0.25
PAGE_MARGIN_PX = 8
#: :func:`screenshot` renders in a window this wide, so that the page left of the panel is
#: :data:`WINDOW` wide, and cuts the panel off: the page a person sees once they close it.
SCREENSHOT_WIDTH = math.ceil((WINDOW[0] + PAGE_MARGIN_PX) / (1 - ASSISTANT_SHARE))
#: Virtual milliseconds a page gets to load its runs and draw its charts.
BUDGET_MS = 60_000
TIMEOUT_S = 180
#: The UI's query parameters: its model-training pages, the chart view, a shared view.
TRAINING = "workflowType=machine_learning"
CHART_VIEW = "compareRunsMode=CHART"
SHARE_QUERY = "viewStateShareKey"
SHARE_TAG_PREFIX = "mlflow.sharedViewState."
#: Height of the parallel-coordinates chart (MLflow's chart cards are 360 px high).
PARALLEL_HEIGHT_PX = 560
#: Names in the DOM: a drawn chart (Plotly's root element) and an empty chart section.
PLOT_CLASS = "js-plotly-plot"
NO_CHARTS = "No charts in this section"


def chromium() -> str | None:
    """The Chromium executable, if installed."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(
    args: Sequence[str], url: str, window: tuple[int, int] = WINDOW
) -> subprocess.CompletedProcess:
    executable = chromium()
    if executable is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    command = [
        executable,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--window-size={window[0]},{window[1]}",
        f"--virtual-time-budget={BUDGET_MS}",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=True)


def dump_dom(url: str) -> str:
    """The page's DOM once it has loaded (what a person would see, as HTML)."""
    return _run(["--dump-dom"], url).stdout


def screenshot(url: str, path: Path) -> Path:
    """A PNG of the page as a person sees it in a :data:`WINDOW`-sized browser window, the
    Assistant panel closed (:data:`SCREENSHOT_WIDTH`)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={path}"], url, (SCREENSHOT_WIDTH, WINDOW[1]))
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {path}")
    with Image.open(path) as image:
        page = image.crop((0, 0, *WINDOW))
    page.save(path)
    return path


def runs_url(server: str, experiment_id: str, *query: str) -> str:
    """The experiment's training-runs view on ``server`` with extra query parameters."""
    return f"{server}/#/experiments/{experiment_id}/runs?" + "&".join((TRAINING, *query))


def group_by_param(param: str) -> dict[str, Any]:
    """UI state: runs grouped by a param, charts drawing each group's mean and min-max band."""
    return {
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "param", "groupByData": param}],
        },
        "useGroupedValuesInCharts": True,
    }


def charts_matching(pattern: str) -> dict[str, Any]:
    """UI state: only the charts whose metric names match ``pattern`` (the charts' search box: a
    regular expression, case-insensitive)."""
    return {"chartsSearchFilter": pattern}


def parallel_coordinates(
    params: Sequence[str], metric: str, height_px: int = PARALLEL_HEIGHT_PX
) -> dict[str, Any]:
    """UI state: one parallel-coordinates chart of ``params`` against ``metric``, every run, in a
    section of its own as wide as the chart view and ``height_px`` high."""
    section = "comparison"
    return {
        "runsHiddenMode": "SHOWALL",
        "compareRunSections": [
            {
                "uuid": section,
                "name": "Comparison",
                "display": True,
                "isReordered": False,
                "columns": 1,
                "cardHeight": height_px,
            }
        ],
        "compareRunCharts": [
            {
                "type": "PARALLEL",
                "uuid": "parallel",
                "metricSectionId": section,
                "selectedParams": list(params),
                "selectedMetrics": [metric],
                "isGenerated": False,
                "deleted": False,
                "showAllRuns": True,
            }
        ],
        "viewMaximized": True,
    }


def share_view(client: Any, experiment_id: str, key: str, state: dict[str, Any]) -> str:
    """Store ``state`` as the experiment's shared view ``key``; the query that opens it."""
    client.set_experiment_tag(experiment_id, f"{SHARE_TAG_PREFIX}{key}", json.dumps(state))
    return f"{SHARE_QUERY}={key}"
