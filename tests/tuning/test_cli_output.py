"""What ``fttpo sweep`` prints, run as a user runs it (a subprocess, real Ray, Tune and MLflow):
stdout holds the results and nothing else, stderr only the package's own log lines — none of
the Ray, Tune, RLlib or MLflow messages that give a user nothing to act on.

The sweep is tiny (an FtTPO and a CQL trial, two iterations of one gradient step, one evaluation
episode) but
checkpoints every iteration with ``num_to_keep: 1``, the setting that made Tune warn about
"experiment state snapshotting" on every iteration.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_yaml

pytestmark = pytest.mark.slow

#: The format of the package's log lines on stderr (``fttpo_ray.cli.LOG_FORMAT``).
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \S")
RESULTS_HEADER = re.compile(
    r"^Results of 'tiny' \(2 trials, 0 failed, \d+ s\): mean ± s\.e\. over seeds, last evaluation$"
)
WHERE_LINE = re.compile(
    r"^(MLflow store|MLflow dashboard|Training runs|Tune storage|Report) {2,}\S"
)
#: Parts of the messages that the command line must not show (see ``cli.QUIET_MESSAGES``).
NOISE = (
    "Token authentication",
    "snapshotting",
    "Tuner.restore(",
    "new API stack",
    "RLModuleConfig",
    "gputil",
    "Failed to fetch metrics",
    "mlflow.store.db.utils",
    "WARNING",
    "Traceback",
)


#: A CQL run beside the FtTPO one (its SAC config logs its own new-API-stack note).
CQL_RUN = {
    "algorithm": "CQL",
    "config": {
        "bc_iters": 0,
        "dataset_num_iters_per_learner": 1,
        "lr": None,
        "model_config": {"fcnet_hiddens": [8]},
        "train_batch_size_per_learner": 8,
    },
    "name": "cql",
}


def test_sweep_prints_only_results_on_stdout_and_only_progress_on_stderr(
    tmp_path: Path, minari_root: Path
) -> None:
    path = tiny_yaml(
        tmp_path / "tiny.yaml",
        extra_runs=[CQL_RUN],
        checkpoint={"at_end": True, "frequency": 1, "num_to_keep": 1},
        stop={"iterations": 2},
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fttpo_ray.cli", "sweep", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr

    header, table, where = proc.stdout.strip().split("\n\n")
    assert RESULTS_HEADER.match(header), header
    rows = table.splitlines()
    assert all(row.startswith("| ") and row.endswith(" |") for row in rows), table
    heading = [cell.strip() for cell in rows[0].split("|")]
    run, policy = heading.index("run"), heading.index("policy")
    cells = [[cell.strip() for cell in row.split("|")] for row in rows[2:]]
    assert sorted((row[run], row[policy]) for row in cells) == [
        ("cql", "fat"),
        ("fttpo", "fat"),
        ("fttpo", "thin"),
    ]
    assert all(WHERE_LINE.match(line) for line in where.splitlines()), where
    assert len(where.splitlines()) == 5

    err = proc.stderr.splitlines()
    assert [line for line in err if not LOG_LINE.match(line)] == []
    assert [line for line in err if any(part in line for part in NOISE)] == []
    assert any("fttpo 0_seed=0 iter 2/2: thin R=" in line for line in err), proc.stderr
