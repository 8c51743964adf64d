"""Safety metrics: prohibited intervals, exact prohibited mass, Clopper–Pearson bounds.

Layers: exact (hand-computed intervals and CDFs) and statistical (Monte-Carlo, fixed seed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fttpo_ray.distributions import HeavyTailedQGaussian, SparseQGaussian
from fttpo_ray.evaluation.safety import (
    action_grid,
    cdf_1d,
    clopper_pearson_upper,
    monte_carlo_prohibited_mass,
    prohibited_intervals,
    prohibited_mass,
)


def test_prohibited_intervals_from_a_hand_made_mask():
    grid = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    mask = np.array([True, False, True, True, False])
    # run at the left edge extends to -inf; interior run [0, 0.5] gets half-way boundaries
    assert prohibited_intervals(mask, grid) == [(-math.inf, -0.75), (-0.25, 0.75)]
    assert prohibited_intervals(np.zeros(5, bool), grid) == []
    assert prohibited_intervals(np.ones(5, bool), grid) == [(-math.inf, math.inf)]


def test_sparse_q0_cdf_is_the_epanechnikov_cdf():
    loc, half = 0.2, 0.5
    dist = SparseQGaussian(torch.full((3, 1), loc), torch.full((3, 1), half), 0.0)
    x = np.array([0.0, 0.45, 2.0])
    z = (x - loc) / half
    expected = np.clip((2 + 3 * z - z**3) / 4, 0, 1)
    expected[2] = 1.0
    np.testing.assert_allclose(cdf_1d(dist, x), expected, atol=1e-12)


@pytest.mark.parametrize(("q", "reference"), [(1.0, "normal"), (2.0, "cauchy")])
def test_fat_cdf_matches_reference(q, reference):
    dist = HeavyTailedQGaussian(torch.zeros(2, 1), torch.full((2, 1), 2.0), q)
    x = np.array([-1.0, 3.0])
    z = x / 2.0
    if reference == "cauchy":
        expected = 0.5 + np.arctan(z) / math.pi
    else:
        expected = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in z]))
    np.testing.assert_allclose(cdf_1d(dist, x), expected, rtol=1e-10)


def test_thin_mass_is_exactly_zero_when_the_support_misses_the_prohibited_set():
    # support [0.1, 0.5]; prohibited (-inf, -0.2] and (0.6, inf)
    dist = SparseQGaussian(torch.tensor([[0.3]]), torch.tensor([[0.2]]), 0.0)
    assert prohibited_mass(dist, [[(-math.inf, -0.2), (0.6, math.inf)]])[0] == 0.0
    # the fat policy with the same location never reaches exactly zero
    fat = HeavyTailedQGaussian(torch.tensor([[0.3]]), torch.tensor([[0.1]]), 2.0)
    assert prohibited_mass(fat, [[(-math.inf, -0.2), (0.6, math.inf)]])[0] > 0.0


def test_exact_mass_agrees_with_monte_carlo():
    # statistical: 200 000 samples, tolerance 5 standard errors (~0.005)
    torch.manual_seed(0)
    intervals = [[(-math.inf, -0.1), (0.25, 0.4)]]
    for dist in (
        SparseQGaussian(torch.tensor([[0.1]]), torch.tensor([[0.5]]), -1.0),
        HeavyTailedQGaussian(torch.tensor([[0.1]]), torch.tensor([[0.3]]), 1.5),
    ):
        exact = prohibited_mass(dist, intervals)[0]
        samples = dist.sample((200_000,)).double().numpy()[..., 0].clip(-1, 1)
        mc = monte_carlo_prohibited_mass(samples, intervals)[0]
        assert exact == pytest.approx(mc, abs=5 * math.sqrt(0.25 / 200_000))


def test_clopper_pearson_upper_bound():
    assert clopper_pearson_upper(0, 1000) == pytest.approx(1 - 0.05 ** (1 / 1000), rel=1e-9)
    assert clopper_pearson_upper(0, 1000) == pytest.approx(3 / 1000, rel=0.01)
    assert clopper_pearson_upper(10, 10) == 1.0
    # 10 of 100: the 95 % quantile of Beta(11, 90)
    assert clopper_pearson_upper(10, 100) == pytest.approx(0.16371762327581477, rel=1e-9)


def test_action_grid_resolution():
    grid = action_grid()
    assert grid.shape == (2001, 1)
    assert grid[1, 0] - grid[0, 0] == pytest.approx(1e-3)
