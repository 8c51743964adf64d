"""Bad input to ``fttpo sweep`` / ``train`` / ``report`` / ``eval``: one line on stderr naming the
problem (parameter, value, valid range), exit status 2, no traceback, within seconds, and
nothing left behind — no Ray started, no dataset collected, and no file, folder, SQLite store or
MLflow experiment in the working directory or the storage directory.

Each command runs in-process in an empty working directory (so the default ``./ray_results``
and ``./mlflow.db`` would land there); the YAML lives outside it. Timings exclude Python's
imports (the command modules are imported once per module) and allow generous slack for the
shared test machine: the point is seconds instead of the minutes that starting Ray, collecting
the dataset or MLflow's retries took.
"""

from __future__ import annotations

import importlib
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from fttpo_ray.cli import EXIT_ERROR, main
from tests.helpers import tiny_yaml

#: Seconds a failing command may take (it takes about one; the machine is shared).
FAST_S = 15.0
#: A file can never be created in /proc, not even by the superuser (mode bits do not bind root).
UNWRITABLE_DIR = Path("/proc")


@pytest.fixture(scope="module", autouse=True)
def command_modules() -> None:
    """Import what the commands import, so that the timings measure the commands."""
    modules = (
        "fttpo_ray.runs.train",
        "fttpo_ray.runs.evaluate",
        "fttpo_ray.tuning.sweep",
        "fttpo_ray.reporting.report",
    )
    for name in modules:
        importlib.import_module(name)


def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def datasets(minari_root: Path) -> set[str]:
    """The Minari datasets under ``minari_root`` (the folders holding a ``metadata.json``)."""
    return {str(p.parent.relative_to(minari_root)) for p in minari_root.rglob("metadata.json")}


@dataclass
class Failure:
    line: str
    seconds: float


def fails(
    capsys: pytest.CaptureFixture, args: list[str], *, watch: list[Path], minari: Path
) -> Failure:
    """Run ``fttpo ARGS``: exit status 2, one line on stderr, no Ray, nothing new in ``watch``
    (every file and folder below them, recursively) and no dataset collected."""
    before = {root: listing(root) for root in watch}
    minari_before = datasets(minari)
    start = time.monotonic()
    rc = main(args)
    seconds = time.monotonic() - start
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == EXIT_ERROR, captured
    assert len(err) == 1, err
    assert err[0].startswith(f"fttpo {args[0]}: error: ")
    assert captured.out == ""
    assert not ray.is_initialized()
    for root in watch:
        assert listing(root) == before[root], f"left behind in {root}"
    assert datasets(minari) == minari_before, "a dataset was collected"
    return Failure(err[0], seconds)


def test_missing_yaml(capsys: pytest.CaptureFixture, cwd: Path, minari_root: Path) -> None:
    failure = fails(
        capsys, ["sweep", str(cwd.parent / "nope.yaml")], watch=[cwd], minari=minari_root
    )
    assert "nope.yaml' not found" in failure.line


def test_unknown_algorithm(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    path = tiny_yaml(tmp_path / "bad_algo.yaml")
    data = yaml.safe_load(path.read_text())
    data["runs"].append({"algorithm": "IQLL", "config": {}, "name": "iql"})
    path.write_text(yaml.safe_dump(data))
    failure = fails(capsys, ["sweep", str(path)], watch=[cwd], minari=minari_root)
    assert "`runs[1].algorithm`" in failure.line and "unknown algorithm 'IQLL'" in failure.line
    assert str(path) in failure.line


def test_train_out_of_range_value_fails_before_anything_starts(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    path = tiny_yaml(tmp_path / "tiny.yaml")
    failure = fails(
        capsys, ["train", str(path), "--set", "fat_q=0.5"], watch=[cwd], minari=minari_root
    )
    assert "`runs[0].config`" in failure.line
    assert "`fat_q` must be in [1, 3)" in failure.line and "got 0.5" in failure.line
    assert failure.seconds < FAST_S


def test_train_checks_the_config_of_a_run_that_has_a_search_block(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    path = tiny_yaml(tmp_path / "tiny.yaml", search={"kl_weight": {"grid_search": [0.1, 1.0]}})
    failure = fails(
        capsys, ["train", str(path), "--set", "fat_q=0.5"], watch=[cwd], minari=minari_root
    )
    assert "`runs[0].config` (run 'fttpo'): `fat_q` must be in [1, 3)" in failure.line


def test_train_minus_one_is_checked_like_any_value(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    path = tiny_yaml(tmp_path / "tiny.yaml")
    failure = fails(
        capsys, ["train", str(path), "--set", "kl_weight=-1"], watch=[cwd], minari=minari_root
    )
    assert "`kl_weight` (tau) must be > 0; got -1" in failure.line


def test_sweep_search_value_out_of_range_fails_before_tune_starts(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    path = tiny_yaml(tmp_path / "tiny.yaml", search={"fat_q": {"grid_search": [2.0, 3.5]}})
    failure = fails(capsys, ["sweep", str(path)], watch=[cwd], minari=minari_root)
    assert "`runs[0].search.fat_q` = 3.5" in failure.line
    assert "`fat_q` must be in [1, 3)" in failure.line and "got 3.5" in failure.line
    assert failure.seconds < FAST_S


def test_sweep_config_error_adds_no_experiment_or_run_to_an_existing_store(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.search_experiments()
    path = tiny_yaml(tmp_path / "tiny.yaml", config={"thin_q": 1.5})
    failure = fails(
        capsys, ["sweep", str(path), "--mlflow-uri", uri], watch=[cwd], minari=minari_root
    )
    assert "`thin_q` must be < 1" in failure.line and "got 1.5" in failure.line
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert client.search_runs(["0"]) == []


def test_sweep_range_domain_checked_at_its_lower_bound(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    path = tiny_yaml(tmp_path / "tiny.yaml", search={"kl_weight": {"uniform": [-0.5, 1.0]}})
    failure = fails(capsys, ["sweep", str(path)], watch=[cwd], minari=minari_root)
    assert "`runs[0].search.kl_weight` = -0.5" in failure.line
    assert "must be > 0; got -0.5" in failure.line


def test_unreachable_address(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    port = closed_port()
    path = tiny_yaml(tmp_path / "tiny.yaml")
    failure = fails(
        capsys,
        ["sweep", str(path), "--address", f"127.0.0.1:{port}"],
        watch=[cwd],
        minari=minari_root,
    )
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in failure.line
    assert failure.seconds < FAST_S


def test_unwritable_storage(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    path = tiny_yaml(tmp_path / "tiny.yaml")
    failure = fails(
        capsys,
        ["sweep", str(path), "--storage", str(blocker / "results")],
        watch=[cwd],
        minari=minari_root,
    )
    assert "cannot write to storage directory" in failure.line and "--storage" in failure.line
    assert f"'{blocker}' is not a directory" in failure.line


def test_storage_is_not_created_by_a_failing_command(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    storage = tmp_path / "new" / "results"
    path = tiny_yaml(tmp_path / "tiny.yaml")
    failure = fails(
        capsys,
        ["train", str(path), "--set", "fat_q=3", "--storage", str(storage)],
        watch=[cwd, tmp_path],
        minari=minari_root,
    )
    assert "got 3" in failure.line
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_unwritable_sqlite_store_fails_within_seconds(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path, command: str
) -> None:
    uri = f"sqlite:///{UNWRITABLE_DIR / 'mlflow.db'}"
    path = tiny_yaml(tmp_path / "tiny.yaml")
    failure = fails(
        capsys, [command, str(path), "--mlflow-uri", uri], watch=[cwd], minari=minari_root
    )
    assert f"MLflow store '{uri}': cannot create '{UNWRITABLE_DIR / 'mlflow.db'}'" in failure.line
    assert "--mlflow-uri" in failure.line
    assert failure.seconds < FAST_S


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////no/such/dir/mlflow.db", "directory '/no/such/dir' does not exist"),
        ("http://127.0.0.1:{port}", "cannot reach the MLflow server"),
        ("ftp://example.org/store", "unsupported scheme 'ftp'"),
    ],
)
def test_mlflow_store_that_cannot_be_opened(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    cwd: Path,
    minari_root: Path,
    uri: str,
    expected: str,
) -> None:
    uri = uri.format(port=closed_port())
    path = tiny_yaml(tmp_path / "tiny.yaml")
    failure = fails(
        capsys, ["sweep", str(path), "--mlflow-uri", uri], watch=[cwd], minari=minari_root
    )
    assert expected in failure.line and "--mlflow-uri" in failure.line


def test_corrupt_sqlite_store(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not an sqlite database" * 100)
    args = ["report", "--experiment", "x", "--mlflow-uri", f"sqlite:///{db}", "--out", "r"]
    failure = fails(capsys, args, watch=[cwd, tmp_path], minari=minari_root)
    assert "cannot open MLflow store" in failure.line and "is not SQLite" in failure.line
    assert failure.seconds < FAST_S


def test_report_of_a_store_that_does_not_exist_creates_none(
    capsys: pytest.CaptureFixture, cwd: Path, minari_root: Path
) -> None:
    failure = fails(
        capsys, ["report", "--experiment", "x", "--out", "r"], watch=[cwd], minari=minari_root
    )
    assert f"MLflow store 'sqlite:///{cwd / 'mlflow.db'}' does not exist" in failure.line


def test_report_of_unknown_experiment(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    args = ["report", "--experiment", "nothing_here", "--mlflow-uri", uri, "--out", "r"]
    failure = fails(capsys, args, watch=[cwd], minari=minari_root)
    assert "no MLflow experiment named 'nothing_here'" in failure.line
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["Default"]


def test_eval_of_a_path_that_does_not_exist(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    missing = tmp_path / "nonexistent"
    failure = fails(capsys, ["eval", str(missing)], watch=[cwd], minari=minari_root)
    assert f"checkpoint '{missing}' does not exist" in failure.line


def test_eval_of_a_directory_that_is_no_checkpoint(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    failure = fails(capsys, ["eval", str(tmp_path)], watch=[cwd], minari=minari_root)
    assert "is not an algorithm checkpoint" in failure.line


def test_resume_without_a_previous_sweep(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    path = tiny_yaml(tmp_path / "tiny.yaml")
    failure = fails(capsys, ["sweep", str(path), "--resume"], watch=[cwd], minari=minari_root)
    assert "no sweep of 'tiny' to resume" in failure.line
