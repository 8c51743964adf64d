"""FtTPO: config, algorithm, learner, losses (RLlib's algorithm-package layout)."""

from fttpo_ray.algorithms.fttpo.fttpo import FtTPO, FtTPOConfig

__all__ = ["FtTPO", "FtTPOConfig"]
