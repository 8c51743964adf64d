"""Concise progress of a sweep, as log lines (Tune's own status tables are switched off).

One line per trial result with the key metrics (return and violation rate of each evaluated
policy), one line per finished, restarted or failed trial (naming its error and where its
traceback is), and a status count at most every :data:`STATUS_EVERY_S` seconds.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ray.tune import Callback

from fttpo_ray import metrics as m
from fttpo_ray.tuning.tracking import TRAINING_ITERATION, flatten

logger = logging.getLogger(__name__)

STATUS_EVERY_S = 30.0
#: A traceback's exception line: ``ZeroDivisionError: float division by zero``,
#: ``fttpo_ray.errors.DatasetError: ...``.
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?")
#: The terminal colour codes Ray puts in its actor names.
ERROR_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def describe_result(result: dict[str, Any]) -> str:
    """``thin R=-3.21±0.40 viol=0.120 | fat R=... viol=...`` for the policies in ``result``."""
    flat = flatten(result)
    parts = []
    for policy in m.POLICIES:
        ret = flat.get(m.evaluation_key(policy, m.EPISODE_RETURN_MEAN))
        if ret is None:
            continue
        sem = flat.get(m.evaluation_key(policy, m.EPISODE_RETURN_SEM))
        rate = flat.get(m.evaluation_key(policy, m.VIOLATION_RATE))
        text = f"{policy} R={float(ret):.3g}"
        if sem is not None:
            text += f"±{float(sem):.2g}"
        if rate is not None:
            text += f" viol={float(rate):.3f}"
        parts.append(text)
    return " | ".join(parts) if parts else "no evaluation this iteration"


class ProgressCallback(Callback):
    """Logs trial results and a periodic status count of one Tune run."""

    def __init__(self, run_name: str, iterations: int) -> None:
        self.run_name = run_name
        self.iterations = iterations
        self._last_status = 0.0

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        logger.info(
            "%s %s iter %s/%d: %s",
            self.run_name,
            trial.experiment_tag,
            result.get(TRAINING_ITERATION, "?"),
            self.iterations,
            describe_result(result),
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = int((getattr(trial, "last_result", None) or {}).get(TRAINING_ITERATION) or 0)
        if done and done < self.iterations:
            logger.info(
                "%s %s stopped early at iteration %d", self.run_name, trial.experiment_tag, done
            )
            return
        logger.info("%s %s finished", self.run_name, trial.experiment_tag)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        logger.warning(
            "%s %s failed: %s; restarting it (traceback: %s)",
            self.run_name,
            trial.experiment_tag,
            trial_error(trial),
            traceback_path(trial),
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        logger.warning(
            "%s %s FAILED: %s (traceback: %s)",
            self.run_name,
            trial.experiment_tag,
            trial_error(trial),
            traceback_path(trial),
        )

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last_status < STATUS_EVERY_S:
            return
        self._last_status = now
        counts = Counter(trial.status.lower() for trial in trials)
        logger.info(
            "%s: %s", self.run_name, ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        )


def traceback_path(trial: Any) -> str:
    """Where the traceback of a failed trial is kept: its error file in the trial's folder of the
    sweep's storage (Tune writes it in Ray's session folder first, then copies it there)."""
    error_file = getattr(trial, "error_file", None)
    folder = getattr(trial, "path", None)
    if error_file and folder:
        return str(Path(folder) / Path(error_file).name)
    return str(error_file or folder or "")


def trial_error(trial: Any) -> str:
    """The error a failed trial ended with, as one line: the last ``Type: message`` line of the
    traceback Tune wrote to the trial's error file (the cause, past Ray's actor errors)."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace") if path else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if ERROR_LINE.match(line):
            return ERROR_COLOURS.sub("", line)
    return lines[-1] if lines else "unknown error"
