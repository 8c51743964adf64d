"""Concise progress of a sweep, as log lines (Tune's own status tables are switched off).

One line per trial result with the key metrics (return and violation rate of each evaluated
policy), one line per finished or failed trial, and a status count at most every
:data:`STATUS_EVERY_S` seconds.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from ray.tune import Callback

from fttpo_ray import metrics as m
from fttpo_ray.tuning.tracking import TRAINING_ITERATION, flatten

logger = logging.getLogger(__name__)

STATUS_EVERY_S = 30.0


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

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        logger.warning(
            "%s %s FAILED (see %s)", self.run_name, trial.experiment_tag, getattr(trial, "path", "")
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
