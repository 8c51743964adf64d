"""Helpers shared by the test packages (their fixtures are in the ``conftest.py`` files): the
treatment dataset's names, FtTPO shrunk to seconds (a config and an experiment YAML), and the
``fttpo`` command line run in-process.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from fttpo_ray import FtTPOConfig
from fttpo_ray.cli import main

TREATMENT_ENV = "fttpo/TreatmentSim-v0"
#: The paper's treatment dataset (50 random episodes x 24 steps, seed 0).
TREATMENT_ID = "fttpo/treatment/random-v0"
#: :func:`tiny_yaml`'s dataset: 2 random treatment episodes.
TINY_ID = "test/tiny/treatment-v0"

#: :func:`tiny_fttpo_config`'s settings: FtTPO's ``training()`` settings, and four keys routed
#: elsewhere: ``fcnet_hiddens`` (the model config), ``evaluation_*`` (``evaluation()``) and
#: ``seed`` (``debugging()``).
TINY_FTTPO: Mapping[str, Any] = {
    "gamma": 0.9,
    "num_gradient_steps_per_iteration": 5,
    "train_batch_size_per_learner": 32,
    "fcnet_hiddens": [16, 16],
    "evaluation_duration": 3,
    "seed": 0,
}
HIDDENS = "fcnet_hiddens"
SEED = "seed"
EVALUATION_PREFIX = "evaluation_"


#: Keys of :func:`tiny_fttpo_config` that set the dataset's split (``.dataset()``).
SPLIT_KEYS = ("held_out_fraction", "split_seed")


def tiny_fttpo_config(
    settings: Mapping[str, Any] | None = None, /, **overrides: Any
) -> FtTPOConfig:
    """FtTPO on the treatment dataset, shrunk to seconds: :data:`TINY_FTTPO`, then ``settings``,
    then ``overrides`` (keys as in :data:`TINY_FTTPO`)."""
    merged = {**TINY_FTTPO, **(settings or {}), **overrides}
    hiddens, seed = merged.pop(HIDDENS), merged.pop(SEED)
    evaluation = {k: merged.pop(k) for k in list(merged) if k.startswith(EVALUATION_PREFIX)}
    split = {k: merged.pop(k) for k in list(merged) if k in SPLIT_KEYS}
    return (
        FtTPOConfig()
        .dataset(TREATMENT_ID, **split)
        .training(**merged)
        .rl_module(model_config={HIDDENS: list(hiddens)})
        .evaluation(**evaluation)
        .debugging(seed=seed)
    )


#: The FtTPO run of :func:`tiny_yaml`: one gradient step of 8 transitions, an 8-unit MLP;
#: ``fat_q`` and ``kl_weight`` listed (at their defaults) so that ``--set`` and ``search`` may
#: change them.
TINY_FTTPO_RUN_CONFIG: Mapping[str, Any] = {
    "fat_q": 2.0,
    "kl_weight": 0.1,
    "model_config": {HIDDENS: [8]},
    "num_gradient_steps_per_iteration": 1,
    "train_batch_size_per_learner": 8,
}


def tiny_yaml(
    path: Path,
    *,
    dataset_id: str = TINY_ID,
    config: Mapping[str, Any] | None = None,
    search: Mapping[str, Any] | None = None,
    extra_runs: list[dict[str, Any]] | None = None,
    **top: Any,
) -> Path:
    """An experiment YAML (valid as written) on a 2-episode treatment dataset ``dataset_id``:
    one FtTPO run named ``fttpo`` (:data:`TINY_FTTPO_RUN_CONFIG` updated with ``config``; its
    ``search`` block if given), then ``extra_runs``; one seed, one iteration, one evaluation
    episode; ``top`` replaces top-level blocks."""
    run: dict[str, Any] = {
        "algorithm": "FtTPO",
        "config": {**TINY_FTTPO_RUN_CONFIG, **(config or {})},
        "name": "fttpo",
    }
    if search:
        run["search"] = dict(search)
    data: dict[str, Any] = {
        "dataset": {"env": TREATMENT_ENV, "episodes": 2, "id": dataset_id},
        "evaluation": {"episodes": 1},
        "runs": [run, *(extra_runs or [])],
        "seeds": [0],
        "stop": {"iterations": 1},
        **top,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return path


class CliRun(NamedTuple):
    """What ``fttpo ARGS`` returned and printed."""

    rc: int
    stdout: str
    stderr: str


def run_cli(args: list[str]) -> CliRun:
    """``fttpo ARGS`` in this process, its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return CliRun(rc, out.getvalue(), err.getvalue())


def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: ``256k``, ``2M``) mounted at ``path``, for tests of
    a full disk; needs the superuser (skipped where mounting is not permitted). Unmounted
    lazily after the test: MLflow keeps an open engine on a store until the process ends."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)
