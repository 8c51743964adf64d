"""``fttpo sweep --resume`` after an interruption (real Tune and MLflow, the toy trainable):
finished trials are not re-run, the interrupted and pending ones are, and MLflow holds one run
per trial (none duplicated, all finished) with each iteration logged once. Neither command
shows Tune's own resume hint (``Tuner.restore(...)``, not a command line user's command) or its
warnings about the result files of trials that had not reported."""

from __future__ import annotations

import collections
import contextlib
import io
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fttpo_ray.cli import EXIT_INTERRUPTED, main
from fttpo_ray.tuning import tracking as tr
from tests.tuning.toy_trainable import INTERRUPTED_MARKER, toy_yaml

SEEDS = [0, 1, 2, 3]
INTERRUPT_AT_SEED = 2
ITERATIONS = 3

pytestmark = pytest.mark.slow


def starts_per_seed(markers: Path) -> dict[int, int]:
    counts: collections.Counter = collections.Counter()
    for marker in markers.glob("start_seed*"):
        counts[int(marker.name.split("_")[1].removeprefix("seed"))] += 1
    return dict(counts)


def test_interrupted_sweep_resumes_without_duplicates(
    tmp_path: Path, ray_local: None, toy_registered: str, capfd: pytest.CaptureFixture
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    path = toy_yaml(
        tmp_path / "toy_resume.yaml",
        seeds=SEEDS,
        iterations=ITERATIONS,
        marker_dir=markers,
        interrupt_seed=INTERRUPT_AT_SEED,
        max_concurrent=1,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["sweep", str(path), "--mlflow-uri", uri, "--storage", str(tmp_path / "results")]
    with contextlib.redirect_stdout(io.StringIO()):
        first = main(args)
    assert first == EXIT_INTERRUPTED
    err = capfd.readouterr().err
    assert f"fttpo sweep {path} --resume" in err
    assert "Tuner.restore(" not in err and "Failed to fetch metrics" not in err
    assert (markers / INTERRUPTED_MARKER).exists()
    assert starts_per_seed(markers) == {0: 1, 1: 1, 2: 1}

    with contextlib.redirect_stdout(io.StringIO()) as out:
        second = main([*args, "--resume"])
    assert second == 0, out.getvalue()
    err = capfd.readouterr().err
    assert "Tuner.restore(" not in err and "Failed to fetch metrics" not in err
    assert "Restoring run 'toy'" in err
    # Seeds 0 and 1 had finished: not re-run. Seed 2 was interrupted: run again. 3 ran once.
    assert starts_per_seed(markers) == {0: 1, 1: 1, 2: 2, 3: 1}

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("toy_resume")
    sweeps = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tr.KIND_TAG}` = '{tr.KIND_SWEEP}'"
    )
    assert len(sweeps) == 1
    assert sweeps[0].info.status == tr.FINISHED
    trials = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRIAL}'"
    )
    assert sorted(int(run.data.params["seed"]) for run in trials) == SEEDS
    for run in trials:
        assert run.info.status == tr.FINISHED
        assert run.data.tags[tr.SWEEP_RUN_ID_TAG] == sweeps[0].info.run_id
        history = client.get_metric_history(run.info.run_id, "evaluation/thin/episode_return_mean")
        assert sorted(point.step for point in history) == list(range(1, ITERATIONS + 1))
