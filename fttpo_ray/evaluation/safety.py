"""Safety metrics of docs/algorithm.md §5: prohibited intervals, prohibited mass,
Clopper–Pearson bounds.

The treatment simulator's oracle (``env.unwrapped.prohibited(actions)``) says which doses are
prohibited at the current state. For a 1-D action the prohibited set is a union of intervals; we
find them on a fine grid and integrate each policy's density over them *exactly* with its CDF
(Beta for the sparse q-Gaussian, Student-t / normal for the fat one), so a thin policy whose
support misses the prohibited set has prohibited mass exactly 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special, stats

from fttpo_ray.distributions import HeavyTailedQGaussian, SparseQGaussian

#: Grid resolution of the prohibited-interval search on [-1, 1] (boundaries within 1e-3).
GRID_POINTS = 2001


def action_grid(low: float = -1.0, high: float = 1.0, points: int = GRID_POINTS) -> np.ndarray:
    """The dose grid on which prohibited intervals are located, shape ``(points, 1)``."""
    return np.linspace(low, high, points, dtype=np.float64).reshape(-1, 1)


def prohibited_intervals(mask: np.ndarray, grid: np.ndarray) -> list[tuple[float, float]]:
    """Maximal runs of prohibited grid points as intervals ``(lo, hi)``.

    Interior boundaries lie half-way between neighbouring grid points; a run that touches the
    box edge extends to ``-inf`` / ``+inf``, because an executed action is clipped to the box
    and so the policy's mass beyond the edge lands on the (prohibited) edge action.
    """
    grid = grid.reshape(-1)
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    intervals: list[tuple[float, float]] = []
    if not mask.any():
        return intervals
    edges = np.flatnonzero(np.diff(mask.astype(np.int8)))
    starts = [0] if mask[0] else []
    ends: list[int] = []
    for e in edges:
        if mask[e + 1]:
            starts.append(e + 1)
        else:
            ends.append(e)
    if mask[-1]:
        ends.append(len(mask) - 1)
    for s, e in zip(starts, ends, strict=True):
        lo = -math.inf if s == 0 else 0.5 * (grid[s - 1] + grid[s])
        hi = math.inf if e == len(mask) - 1 else 0.5 * (grid[e] + grid[e + 1])
        intervals.append((lo, hi))
    return intervals


def cdf_1d(dist: torch.distributions.Distribution, x: np.ndarray) -> np.ndarray:
    """``P(A <= x)`` for each state of a batch of 1-D action distributions.

    ``dist`` has batch shape ``(B,)`` and event shape ``(1,)`` (our q-Gaussians) or is a
    ``Normal`` with shape ``(B, 1)``; ``x`` has shape ``(B,)`` (``+-inf`` allowed).
    """
    x = np.asarray(x, dtype=np.float64)
    if isinstance(dist, SparseQGaussian):
        loc = dist.loc.detach().double().reshape(-1).numpy()
        half = dist.scale.detach().double().reshape(-1).numpy()
        # 1-D sparse q-Gaussian: (1 - z^2)^k on [-1, 1] is Beta(k+1, k+1) on u = (1 + z) / 2.
        u = np.clip((1.0 + (x - loc) / half) / 2.0, 0.0, 1.0)
        k = float(dist.k)
        return special.betainc(k + 1.0, k + 1.0, u)
    if isinstance(dist, HeavyTailedQGaussian):
        loc = dist.loc.detach().double().reshape(-1).numpy()
        scale = dist.scale.detach().double().reshape(-1).numpy()
        z = (x - loc) / scale
        if dist.q == 1.0:
            return special.ndtr(z)
        df = (3.0 - dist.q) / (dist.q - 1.0)
        return special.stdtr(df, z)
    if isinstance(dist, torch.distributions.Normal):
        loc = dist.loc.detach().double().reshape(-1).numpy()
        scale = dist.scale.detach().double().reshape(-1).numpy()
        return special.ndtr((x - loc) / scale)
    raise TypeError(f"no closed-form CDF for {type(dist).__name__}")


def prohibited_mass(
    dist: torch.distributions.Distribution, intervals: list[list[tuple[float, float]]]
) -> np.ndarray:
    """``pi(A_bad | s)`` for each state: the sum of the CDF differences over its intervals."""
    batch = len(intervals)
    mass = np.zeros(batch, dtype=np.float64)
    depth = max((len(iv) for iv in intervals), default=0)
    for j in range(depth):
        lo = np.array([iv[j][0] if j < len(iv) else 0.0 for iv in intervals])
        hi = np.array([iv[j][1] if j < len(iv) else 0.0 for iv in intervals])
        mass += np.clip(cdf_1d(dist, hi) - cdf_1d(dist, lo), 0.0, 1.0)
    return np.clip(mass, 0.0, 1.0)


def monte_carlo_prohibited_mass(
    samples: np.ndarray, intervals: list[list[tuple[float, float]]]
) -> np.ndarray:
    """Fallback for distributions without a CDF: share of ``samples`` (shape ``(M, B)``,
    already clipped to the box) falling in each state's intervals."""
    inside = np.zeros(samples.shape, dtype=bool)
    for b, ivs in enumerate(intervals):
        for lo, hi in ivs:
            inside[:, b] |= (samples[:, b] > lo) & (samples[:, b] <= hi)
    return inside.mean(axis=0)


def clopper_pearson_upper(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a binomial rate (``~3/N`` for 0 of ``N``)."""
    if trials <= 0:
        return float("nan")
    if successes >= trials:
        return 1.0
    return float(stats.beta.ppf(confidence, successes + 1, trials - successes))
