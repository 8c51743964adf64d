"""``fttpo eval``: returns and safety metrics of one algorithm checkpoint, on a local Ray."""

from __future__ import annotations

from pathlib import Path

from fttpo_ray.defaults import EVALUATION_EPISODES, EVALUATION_SEED
from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning.runtime import start_ray, stop_ray

#: The file that marks an RLlib algorithm checkpoint directory.
ALGORITHM_STATE_FILE = "rllib_checkpoint.json"


def evaluate(
    checkpoint: str | Path,
    *,
    episodes: int = EVALUATION_EPISODES,
    seed: int = EVALUATION_SEED,
    explore: bool = True,
) -> dict[str, dict[str, float]]:
    """Returns and safety metrics of an algorithm checkpoint (``fttpo eval``), per policy."""
    from fttpo_ray.algorithms.checkpoint_evaluation import check_checkpoint, evaluate_checkpoint

    path = Path(checkpoint).expanduser().resolve()
    if not path.exists():
        raise ConfigError(
            f"checkpoint '{checkpoint}' does not exist; give the checkpoint directory that "
            "`fttpo train` printed or a trial's checkpoint_NNNNNN"
        )
    if not (path / ALGORITHM_STATE_FILE).is_file():
        raise ConfigError(
            f"'{checkpoint}' is not an algorithm checkpoint (no {ALGORITHM_STATE_FILE}); give "
            "the checkpoint directory that `fttpo train` printed or a trial's checkpoint_NNNNNN"
        )
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1; got {episodes}")
    check_checkpoint(path)
    started_ray = start_ray(None)
    try:
        return evaluate_checkpoint(str(path), episodes=episodes, seed=seed, explore=explore)
    finally:
        stop_ray(started_ray)
