"""q-exponential family distributions in pure torch (no Ray import): spec §1.

* :func:`exp_q`, :func:`log_q`: Tsallis q-exponential / q-logarithm.
"""

from __future__ import annotations

from fttpo_ray.distributions.q_exponential import exp_q, log_q

__all__ = ["exp_q", "log_q"]
