"""A tiny Tune function trainable that reports results shaped like FtTPO's (for the machinery
tests: real Tune and MLflow, no RLlib, a fraction of a second per iteration).

Its results are known in closed form, so report tables can be checked exactly:
``evaluation/thin/episode_return_mean = log10(kl_weight) + 0.5 * iteration + 0.1 * seed`` and
``evaluation/thin/violation_rate = 0.2 + 0.1 * thin_q - 0.01 * seed``.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from ray import tune

from fttpo_ray import metrics as m

TOY_NAME = "fttpo_toy"
#: Config keys: a directory where each trial start leaves a marker file (counts the starts),
#: and the driver pid to interrupt (SIGINT) when the trial with seed ``interrupt_seed`` starts
#: — only once: the interruption leaves :data:`INTERRUPTED_MARKER` in ``marker_dir``.
MARKER_DIR = "marker_dir"
DRIVER_PID = "driver_pid"
INTERRUPT_SEED = "interrupt_seed"
INTERRUPTED_MARKER = "interrupted"
#: Seconds the interrupting trial waits for Tune to stop it.
INTERRUPT_WAIT_S = 60


def thin_return(kl_weight: float, iteration: int, seed: int) -> float:
    return math.log10(kl_weight) + 0.5 * iteration + 0.1 * seed


def thin_violation_rate(thin_q: float, seed: int) -> float:
    return 0.2 + 0.1 * thin_q - 0.01 * seed


def toy_trainable(config: dict[str, Any]) -> None:
    seed = int(config["seed"])
    kl = float(config["kl_weight"])
    thin_q = float(config["thin_q"])
    markers = Path(config[MARKER_DIR]) if config.get(MARKER_DIR) else None
    if markers is not None:
        (markers / f"start_seed{seed}_kl{kl}_q{thin_q}_{os.getpid()}_{time.time_ns()}").touch()
        done = markers / INTERRUPTED_MARKER
        if int(config.get(INTERRUPT_SEED, -1)) == seed and not done.exists():
            done.touch()
            os.kill(int(config[DRIVER_PID]), signal.SIGINT)
            time.sleep(INTERRUPT_WAIT_S)
    for iteration in range(1, 1000):
        ret = thin_return(kl, iteration, seed)
        tune.report(
            {
                m.EVALUATION_PREFIX: {
                    m.THIN: {
                        m.EPISODE_RETURN_MEAN: ret,
                        m.EPISODE_RETURN_SEM: 0.1,
                        m.VIOLATION_RATE: thin_violation_rate(thin_q, seed),
                        m.PROHIBITED_MASS_MEAN: 0.0,
                    },
                    m.FAT: {m.EPISODE_RETURN_MEAN: ret - 1.0, m.VIOLATION_RATE: 0.3},
                },
                m.LEARNER_PREFIX: {m.CRITIC_LOSS: 1.0 / iteration},
                "ignored_by_tracking": {"x": 1.0},
            }
        )


def register() -> None:
    """Register the toy trainable with Tune (idempotent), pickled by value for the workers,
    with FtTPO's report vocabulary (its results are shaped like FtTPO's)."""
    import cloudpickle

    import tests.tuning.toy_trainable as module
    from fttpo_ray.algorithms.fttpo.vocabulary import VOCABULARY
    from fttpo_ray.tuning.trainables import register_report_vocabulary

    cloudpickle.register_pickle_by_value(module)
    tune.register_trainable(TOY_NAME, toy_trainable)
    register_report_vocabulary(TOY_NAME, VOCABULARY)


def toy_yaml(
    path: Path,
    *,
    seeds: list[int],
    iterations: int = 3,
    kl_weights: list[float] = (0.1,),
    thin_qs: list[float] = (0.0,),
    marker_dir: Path | None = None,
    interrupt_seed: int = -1,
    max_concurrent: int = 0,
) -> Path:
    """Write an experiment YAML with one toy run sweeping ``kl_weight`` x ``thin_q``."""
    import yaml

    config: dict[str, Any] = {"kl_weight": 0.1, "thin_q": 0.0}
    if marker_dir is not None:
        config.update(
            {MARKER_DIR: str(marker_dir), DRIVER_PID: os.getpid(), INTERRUPT_SEED: interrupt_seed}
        )
    data = {
        "dataset": {"env": "fttpo/TreatmentSim-v0", "id": "fttpo/treatment/random-v0"},
        "evaluation": {"episodes": 1},
        "max_concurrent": max_concurrent,
        "runs": [
            {
                "algorithm": TOY_NAME,
                "config": config,
                "name": "toy",
                "search": {
                    "kl_weight": {"grid_search": list(kl_weights)},
                    "thin_q": {"grid_search": list(thin_qs)},
                },
            }
        ],
        "seeds": seeds,
        "stop": {"iterations": iterations},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return path
