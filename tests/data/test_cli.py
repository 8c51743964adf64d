"""``fttpo collect``: a real subprocess for success and for a user error (exit 2, one line, no
traceback); the other error paths through ``cli.main`` in-process (same code, no start-up cost)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import minari
import pytest

from fttpo_ray.cli import main
from fttpo_ray.data import DatasetInfo
from tests.helpers import TREATMENT_ID

#: The format of the package's log lines on stderr (``fttpo_ray.cli.LOG_FORMAT``).
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \S")


def _fttpo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fttpo_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_collect_subprocess_writes_the_dataset_and_prints_a_summary(minari_root: Path) -> None:
    out = _fttpo(
        "collect",
        "--env",
        "fttpo/TreatmentSim-v0",
        "--episodes",
        "4",
        "--dataset-id",
        "test/cli/random-v0",
        "--seed",
        "3",
        "--reference-policy",
        "none",
    )
    assert out.returncode == 0, out.stderr
    # stdout: the summary line alone; stderr: the package's progress lines alone.
    (summary,) = out.stdout.strip().splitlines()
    assert summary.startswith("dataset 'test/cli/random-v0' at ")
    assert "4 episodes, 96 steps" in summary
    assert [line for line in out.stderr.splitlines() if not LOG_LINE.match(line)] == []
    assert minari.load_dataset("test/cli/random-v0").total_steps == 96


def test_collect_subprocess_existing_id_exits_2_with_one_line(
    treatment_dataset: DatasetInfo,
) -> None:
    out = _fttpo(
        "collect", "--env", "fttpo/TreatmentSim-v0", "--episodes", "1", "--dataset-id", TREATMENT_ID
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"fttpo collect: error: dataset '{TREATMENT_ID}' already exists at "
        f"{treatment_dataset.path}; pass --overwrite (overwrite=True) to replace it"
    )
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "NoSuchEnv-v0"], "unknown environment id 'NoSuchEnv-v0'"),
        (["--episodes", "0"], "`episodes` must be an integer >= 1; got 0"),
        (["--policy", "/does/not/exist"], "neither 'random' nor an existing checkpoint"),
        (["--dataset-id", "bad id"], "dataset id 'bad id' is malformed"),
    ],
)
def test_collect_errors_exit_2(
    minari_root: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    defaults = {
        "--env": "fttpo/TreatmentSim-v0",
        "--episodes": "1",
        "--dataset-id": "test/cli-err-v0",
    }
    defaults.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["collect", "--reference-policy", "none"] + [x for kv in defaults.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fttpo collect: error: ") and message in err
    assert not (minari_root / "test" / "cli-err-v0").exists()


def test_collect_halfcheetah_through_the_cli(
    minari_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["collect", "--env", "HalfCheetah-v5", "--policy", "random", "--episodes", "1"]
    assert main(argv + ["--dataset-id", "test/cli/halfcheetah-random-v0"]) == 0
    assert "1 episodes, 1000 steps" in capsys.readouterr().out
