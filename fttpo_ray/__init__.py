"""fttpo-ray: Fat-to-Thin Policy Optimization (offline RL with sparse q-Gaussian policies) on Ray.

Importing the package registers, idempotently, the gymnasium environments and the RLlib/Tune
algorithm ``"FtTPO"`` (see :mod:`fttpo_ray.registry`).
"""

from __future__ import annotations

__version__ = "0.1.0"
