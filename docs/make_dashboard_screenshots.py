"""Screenshots of the MLflow dashboard as a person sees it after a sweep (docs/tuning.md, "The
dashboard"), into ``docs/``:

* ``dashboard_runs.png`` — the quick start's training-runs view, every trial listed;
* ``dashboard_grouped.png`` — a q × τ sweep's chart view grouped by ``thin_q``: each group's
  mean over its seeds with a band;
* ``dashboard_parallel.png`` — the same sweep's parallel coordinates (``thin_q``, ``kl_weight``
  against the thin policy's return).

Run from anywhere with the project's environment (a few minutes on two cores)::

    .venv/bin/python docs/make_dashboard_screenshots.py [--out DIR] [--work DIR]

It runs, in a temporary directory (its own Minari root, MLflow store and Ray storage), a shrunk
``tune_configs/quickstart.yaml`` (all its runs and seeds, tiny budgets: the numbers are
meaningless, the layout is the real one) and a shrunk ``tune_configs/treatment_q_sweep.yaml``
(``thin_q`` ∈ {0, 0.5} × ``kl_weight`` ∈ {0.1, 1}, 2 seeds), each with ``fttpo sweep``; then
serves the store with ``mlflow server`` on 127.0.0.1 and a free port and photographs its pages
with headless Chromium (Debian's ``chromium`` package). Before writing a picture it checks the
page it shows: every trial's name in the runs view, drawn charts in the chart views.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from fttpo_ray.reporting import dashboard
from fttpo_ray.reporting.mlflow_server import mlflow_server
from fttpo_ray.tuning import tracking as tr

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs"
CONFIGS = REPO / "tune_configs"
RUNS_PNG = "dashboard_runs.png"
GROUPED_PNG = "dashboard_grouped.png"
PARALLEL_PNG = "dashboard_parallel.png"

#: The tiny budget of every trial: iterations, gradient steps per iteration, batch, network.
ITERATIONS = 3
STEPS = 20
BATCH = 64
HIDDENS = [32, 32]
#: The config key of the gradient steps per iteration: FtTPO's, RLlib's offline algorithms'.
STEPS_KEYS = {"FtTPO": "num_gradient_steps_per_iteration"}
DATASET_STEPS_KEY = "dataset_num_iters_per_learner"
EVALUATION_EPISODES = 5
SEEDS = [0, 1]
#: The q × τ grid of the grouped and parallel-coordinates views.
THIN_QS = [0.0, 0.5]
KL_WEIGHTS = [0.1, 1.0]
GROUP_PARAM = "thin_q"
#: The grouped view's charts (a regular expression, the charts' search box): six of the thin
#: policy's (the fat policy does not depend on thin_q), the return and what the support does.
THIN_CHARTS = (
    "evaluation/thin/(episode_return_mean|normalized_score|violation_rate"
    "|support_halfwidth_mean|prohibited_mass_mean)"
)
PARALLEL_PARAMS = ["thin_q", "kl_weight"]
PARALLEL_METRIC = "evaluation/thin/episode_return_mean"
#: Colours per PNG: the pictures are flat UI colours, a palette keeps them small.
COLOURS = 128
MINARI_ROOT_VARIABLE = "MINARI_DATASETS_PATH"


def _tiny(algorithm: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the tiny budget: :data:`STEPS` gradient steps per iteration on batches of
    :data:`BATCH`, networks of :data:`HIDDENS`."""
    return {
        **config,
        STEPS_KEYS.get(algorithm, DATASET_STEPS_KEY): STEPS,
        "train_batch_size_per_learner": BATCH,
        "model_config": {**config.get("model_config", {}), "fcnet_hiddens": HIDDENS},
    }


def _shrunk(data: dict[str, Any]) -> dict[str, Any]:
    """An experiment YAML with every budget cut to :data:`ITERATIONS` x :data:`STEPS`."""
    data["defaults"] = {name: _tiny(name, c) for name, c in data.get("defaults", {}).items()}
    for run in data["runs"]:
        run["config"] = _tiny(run["algorithm"], run.get("config", {}))
    data["checkpoint"] = {"num_to_keep": 1}
    data["evaluation"]["episodes"] = EVALUATION_EPISODES
    data["seeds"] = SEEDS
    data["stop"] = {"iterations": ITERATIONS}
    return data


def quickstart_yaml(directory: Path) -> Path:
    """``quickstart.yaml``: its runs and seeds, tiny budgets (the experiment keeps its name)."""
    data = _shrunk(yaml.safe_load((CONFIGS / "quickstart.yaml").read_text()))
    path = directory / "quickstart.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


def q_sweep_yaml(directory: Path) -> Path:
    """``treatment_q_sweep.yaml`` on a 2 x 2 grid of ``thin_q`` and ``kl_weight``, tiny budgets."""
    data = _shrunk(yaml.safe_load((CONFIGS / "treatment_q_sweep.yaml").read_text()))
    (run,) = data["runs"]
    run["search"] = {
        "kl_weight": {"grid_search": KL_WEIGHTS},
        "thin_q": {"grid_search": THIN_QS},
    }
    path = directory / "treatment_q_sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


def sweep(config: Path, uri: str, directory: Path) -> None:
    """``fttpo sweep config`` into the MLflow store ``uri`` (one torch thread per process)."""
    log = directory / f"{config.stem}.log"
    env = {
        **os.environ,
        MINARI_ROOT_VARIABLE: str(directory / "minari"),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "fttpo_ray.cli",
        "sweep",
        str(config),
        "--mlflow-uri",
        uri,
        "--storage",
        str(directory / "ray_results"),
    ]
    start = time.monotonic()
    with log.open("w") as out:
        code = subprocess.call(command, cwd=directory, env=env, stdout=out, stderr=out)
    if code != 0:
        raise SystemExit(f"fttpo sweep {config.name} failed ({code}):\n{log.read_text()[-3000:]}")
    print(f"swept {config.stem} in {time.monotonic() - start:.0f} s")


def trial_names(client: MlflowClient, experiment_id: str) -> list[str]:
    runs = client.search_runs([experiment_id], f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRIAL}'")
    return sorted(run.info.run_name for run in runs)


def check_runs_view(url: str, names: list[str]) -> None:
    page = dashboard.dump_dom(url)
    missing = [name for name in names if f">{name}<" not in page]
    if missing:
        raise SystemExit(f"the runs view {url} does not list {missing}")


def check_charts(url: str) -> None:
    page = dashboard.dump_dom(url)
    if page.count(dashboard.PLOT_CLASS) == 0:
        raise SystemExit(f"the chart view {url} draws no chart")


def save(url: str, out: Path) -> Path:
    """A screenshot of ``url``, written to ``out`` with a palette of :data:`COLOURS` colours."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = dashboard.screenshot(url, Path(tmp) / out.name)
        with Image.open(raw) as image:
            small = image.convert("RGB").quantize(COLOURS, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return out


def make_screenshots(out: Path, work: Path) -> list[Path]:
    """Sweep into ``work`` (an experiment already in its store is kept), serve the store and
    write the three PNGs into ``out``."""
    if dashboard.chromium() is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install -y chromium)")
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)
    database = store / "mlflow.db"
    uri = f"sqlite:///{database}"
    quickstart, q_sweep = quickstart_yaml(work), q_sweep_yaml(work)
    for config in (quickstart, q_sweep):
        if not database.exists() or MlflowClient(uri).get_experiment_by_name(config.stem) is None:
            sweep(config, uri, work)
    with mlflow_server(store) as server:
        client = MlflowClient(server.uri)
        quick_id = client.get_experiment_by_name(quickstart.stem).experiment_id
        q_id = client.get_experiment_by_name(q_sweep.stem).experiment_id

        runs_view = dashboard.runs_url(server.uri, quick_id)
        check_runs_view(runs_view, trial_names(client, quick_id))
        by_q = {**dashboard.group_by_param(GROUP_PARAM), **dashboard.charts_matching(THIN_CHARTS)}
        grouped = dashboard.share_view(client, q_id, "by-thin-q", by_q)
        grouped_view = dashboard.runs_url(server.uri, q_id, dashboard.CHART_VIEW, grouped)
        coordinates = dashboard.parallel_coordinates(PARALLEL_PARAMS, PARALLEL_METRIC)
        parallel = dashboard.share_view(client, q_id, "q-tau", coordinates)
        parallel_view = dashboard.runs_url(server.uri, q_id, dashboard.CHART_VIEW, parallel)
        for url in (grouped_view, parallel_view):
            check_charts(url)
        return [
            save(runs_view, out / RUNS_PNG),
            save(grouped_view, out / GROUPED_PNG),
            save(parallel_view, out / PARALLEL_PNG),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the PNGs")
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the sweeps (YAMLs, MLflow store, Ray storage, logs) in this folder and reuse "
        "the experiments already in its store (default: a temporary folder)",
    )
    args = parser.parse_args()
    if args.work is not None:
        make_screenshots(args.out, args.work.resolve())
        return
    with tempfile.TemporaryDirectory(prefix="fttpo-dashboard-") as tmp:
        make_screenshots(args.out, Path(tmp))


if __name__ == "__main__":
    main()
