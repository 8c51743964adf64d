"""A Tune function trainable that checkpoints and restores its state, for the scheduler tests
(PBT clones a trial from another's checkpoint): real Tune and MLflow, no RLlib.

Its return climbs by ``gain(kl_weight) = 1 - (log10(kl_weight) + 1) ** 2`` per iteration (best
at ``kl_weight = 0.1``), from the value saved in the checkpoint it was started from; each
iteration sleeps :data:`STEP_S` seconds so that the trials of a population run side by side.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from fttpo_ray import metrics as m

NAME = "fttpo_toy_checkpointing"
STATE_FILE = "state.json"
STEP_S = 0.3


def gain(kl_weight: float) -> float:
    return 1.0 - (math.log10(kl_weight) + 1.0) ** 2


def checkpointing_trainable(config: dict[str, Any]) -> None:
    iteration, total = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = json.loads((Path(directory) / STATE_FILE).read_text())
        iteration, total = state["iteration"], state["total"]
    frequency = int(config.get("checkpoint_frequency") or 0)
    while True:
        time.sleep(STEP_S)
        iteration += 1
        total += gain(float(config["kl_weight"]))
        metrics = {
            m.EVALUATION_PREFIX: {
                m.THIN: {m.EPISODE_RETURN_MEAN: total, m.VIOLATION_RATE: 0.0},
                m.FAT: {m.EPISODE_RETURN_MEAN: total - 1.0, m.VIOLATION_RATE: 0.5},
            }
        }
        if frequency and iteration % frequency == 0:
            with tempfile.TemporaryDirectory() as directory:
                state = {"iteration": iteration, "total": total}
                (Path(directory) / STATE_FILE).write_text(json.dumps(state))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(metrics)


def register() -> str:
    """Register the trainable with Tune (pickled by value for the workers); its name."""
    import cloudpickle

    import tests.tuning.pbt_trainable as module

    cloudpickle.register_pickle_by_value(module)
    tune.register_trainable(NAME, checkpointing_trainable)
    return NAME
