"""fttpo-ray: Fat-to-Thin Policy Optimization (offline RL with sparse q-Gaussian policies) on Ray.

Importing the package registers, idempotently, the gymnasium environments
(``fttpo/TreatmentSim-v0``, ``fttpo/TreatmentSimLethal-v0``) and the RLlib/Tune algorithm
``"FtTPO"`` (see :mod:`fttpo_ray.registry`).
"""

from __future__ import annotations

from importlib.metadata import version

from fttpo_ray.algorithms.fttpo.fttpo import FtTPO, FtTPOConfig
from fttpo_ray.registry import ALGORITHM_NAME, register_all

__version__ = version("fttpo-ray")

register_all()

__all__ = ["ALGORITHM_NAME", "FtTPO", "FtTPOConfig", "register_all"]
