"""Bad input to ``fttpo sweep`` / ``report`` / ``eval`` / ``train``: one line on stderr naming
the problem, exit status 2, no traceback, and nothing started (no Ray for these)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import ray
import yaml

from fttpo_ray.cli import EXIT_ERROR, main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "tune_configs" / "quickstart.yaml")


def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_line_error(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_ERROR
    assert len(err) == 1, err
    assert err[0].startswith(f"fttpo {args[0]}: error: ")
    return err[0]


def test_missing_yaml(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    line = one_line_error(capsys, ["sweep", str(tmp_path / "nope.yaml")])
    assert "nope.yaml' not found" in line


def test_unknown_algorithm(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    data = yaml.safe_load(Path(QUICKSTART).read_text())
    data["runs"][2]["algorithm"] = "IQLL"
    path = tmp_path / "bad_algo.yaml"
    path.write_text(yaml.safe_dump(data))
    line = one_line_error(capsys, ["sweep", str(path), "--storage", str(tmp_path)])
    assert "`runs[2].algorithm`" in line and "unknown algorithm 'IQLL'" in line
    assert str(path) in line


def test_unreachable_address(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    port = closed_port()
    line = one_line_error(
        capsys,
        [
            "sweep",
            QUICKSTART,
            "--address",
            f"127.0.0.1:{port}",
            "--storage",
            str(tmp_path),
            "--mlflow-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in line
    assert not ray.is_initialized()


def test_unwritable_storage(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    line = one_line_error(capsys, ["sweep", QUICKSTART, "--storage", str(blocker / "results")])
    assert "cannot write to storage directory" in line and "--storage" in line


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////no/such/dir/mlflow.db", "directory '/no/such/dir' does not exist"),
        ("http://127.0.0.1:{port}", "cannot reach the MLflow server"),
        ("ftp://example.org/store", "unsupported scheme 'ftp'"),
    ],
)
def test_mlflow_store_that_cannot_be_opened(
    capsys: pytest.CaptureFixture, tmp_path: Path, uri: str, expected: str
) -> None:
    uri = uri.format(port=closed_port())
    line = one_line_error(
        capsys, ["sweep", QUICKSTART, "--storage", str(tmp_path), "--mlflow-uri", uri]
    )
    assert expected in line and "--mlflow-uri" in line


def test_corrupt_sqlite_store(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not an sqlite database" * 100)
    line = one_line_error(
        capsys,
        [
            "report",
            "--experiment",
            "x",
            "--mlflow-uri",
            f"sqlite:///{db}",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert "cannot open MLflow store" in line


def test_report_of_unknown_experiment(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    line = one_line_error(
        capsys,
        [
            "report",
            "--experiment",
            "nothing_here",
            "--mlflow-uri",
            uri,
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert "no MLflow experiment named 'nothing_here'" in line


def test_eval_of_a_directory_that_is_no_checkpoint(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    line = one_line_error(capsys, ["eval", str(tmp_path)])
    assert "is not an algorithm checkpoint" in line


def test_resume_without_a_previous_sweep(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    line = one_line_error(
        capsys,
        [
            "sweep",
            QUICKSTART,
            "--resume",
            "--storage",
            str(tmp_path),
            "--mlflow-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    assert "no sweep of 'quickstart' to resume" in line
