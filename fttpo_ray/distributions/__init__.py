"""q-exponential family distributions in pure torch (no Ray import): docs/algorithm.md §1.

* :func:`exp_q`, :func:`log_q`: Tsallis q-exponential / q-logarithm.
* :class:`SparseQGaussian`: q < 1, finite (ellipsoidal) support, scale = support half-width.
* :class:`HeavyTailedQGaussian`: 1 <= q < 3, product of 1-D Student-t (q = 1: Gaussian).
"""

from __future__ import annotations

from fttpo_ray.distributions.q_exponential import exp_q, log_q
from fttpo_ray.distributions.q_gaussian import HeavyTailedQGaussian, SparseQGaussian

__all__ = ["HeavyTailedQGaussian", "SparseQGaussian", "exp_q", "log_q"]
