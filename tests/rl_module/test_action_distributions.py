"""RLlib's view of the policies (``fttpo_ray/rl_module/action_distributions.py``): the adapters
split ``[loc, scale]`` (or ``[low, high, abstain]``), and their ``logp`` is the q-Gaussian density
written out by hand — the paraboloid of q = 0, Student-t for 1 < q < 3, the certified policy's
point mass where it abstains."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from fttpo_ray.rl_module.action_distributions import (
    certified_dist_cls,
    fat_dist_cls,
    thin_dist_cls,
)
from fttpo_ray.rl_module.certificate import MIN_HALFWIDTH


def box(*shape: int) -> gym.spaces.Box:
    return gym.spaces.Box(-1.0, 1.0, shape, np.float32)


def test_thin_q0_logp_is_the_paraboloid_by_hand() -> None:
    """q = 0, 1-D: p(x) = 3 / (4 h) (1 - ((x - loc) / h)^2) on (loc - h, loc + h), else 0."""
    dist = thin_dist_cls(0.0).from_logits(torch.tensor([[0.2, 0.5], [-0.4, 0.1]]))
    x = torch.tensor([[0.45], [-0.4]])
    expected = [math.log(0.75 / 0.5 * (1 - 0.5**2)), math.log(0.75 / 0.1)]
    torch.testing.assert_close(dist.logp(x), torch.tensor(expected), rtol=1e-6, atol=1e-6)
    outside = dist.logp(torch.tensor([[0.71], [-0.51]]))  # beyond loc + h, below loc - h
    assert outside.tolist() == [-math.inf, -math.inf]


def test_thin_q0_in_two_dimensions_is_one_ellipsoid_not_a_product() -> None:
    """n = 2: p(x) = 2 / (pi h1 h2) (1 - r^2), r^2 = sum ((x_i - loc_i) / h_i)^2 (one density
    for the event, not one per dimension)."""
    dist = thin_dist_cls(0.0).from_logits(torch.tensor([[0.0, 0.1, 0.5, 0.2]]))
    x = torch.tensor([[0.25, 0.2]])
    r2 = (0.25 / 0.5) ** 2 + (0.1 / 0.2) ** 2
    expected = math.log(2.0 / (math.pi * 0.5 * 0.2) * (1 - r2))
    assert dist.logp(x).shape == (1,)
    assert dist.logp(x).item() == pytest.approx(expected, rel=1e-6)


def test_thin_q_minus_one_uses_its_own_exponent() -> None:
    """q = -1 (k = 1/2), 1-D: Z = h sqrt(pi) Gamma(3/2) / Gamma(2) = h pi / 2, so
    p(x) = 2 / (pi h) sqrt(1 - z^2) (the semicircle)."""
    dist = thin_dist_cls(-1.0).from_logits(torch.tensor([[0.0, 0.5]]))
    z = 0.3 / 0.5
    expected = math.log(2.0 / (math.pi * 0.5) * math.sqrt(1 - z**2))
    assert dist.logp(torch.tensor([[0.3]])).item() == pytest.approx(expected, rel=1e-6)


def test_fat_q2_is_a_product_of_cauchy_densities() -> None:
    """q = 2 (nu = 1): log p(x) = sum_i -log(pi s_i) - log(1 + z_i^2)."""
    dist = fat_dist_cls(2.0).from_logits(torch.tensor([[0.1, -0.2, 0.5, 2.0]]))
    x = torch.tensor([[1.1, 0.8]])
    expected = sum(
        -math.log(math.pi * s) - math.log(1 + ((v - m) / s) ** 2)
        for v, m, s in ((1.1, 0.1, 0.5), (0.8, -0.2, 2.0))
    )
    assert dist.logp(x).item() == pytest.approx(expected, rel=1e-6)


def test_fat_q1_5_is_student_t_with_three_degrees_of_freedom() -> None:
    """q = 1.5: nu = (3 - q) / (q - 1) = 3, p(x) = 2 / (sqrt(3) pi s) (1 + z^2 / 3)^-2."""
    dist = fat_dist_cls(1.5).from_logits(torch.tensor([[0.0, 0.5]]))
    z = 0.4 / 0.5
    expected = math.log(2.0 / (math.sqrt(3.0) * math.pi * 0.5) * (1 + z**2 / 3) ** -2)
    assert dist.logp(torch.tensor([[0.4]])).item() == pytest.approx(expected, rel=1e-6)


def test_deterministic_action_is_the_location() -> None:
    logits = torch.tensor([[0.3, -0.6, 0.2, 0.4]])
    for cls in (thin_dist_cls(0.0), fat_dist_cls(2.0)):
        deterministic = cls.from_logits(logits).to_deterministic()
        torch.testing.assert_close(deterministic.sample(), logits[:, :2], rtol=0, atol=0)


def test_thin_samples_stay_in_the_support_with_the_paraboloid_variance() -> None:
    """20 000 seeded draws of q = 0 (loc 0.2, h 0.5): all inside the support, variance
    h^2 / 5 = 0.05 (n + 2k + 2 = 5). The sample variance's s.e. is about 0.05 sqrt(0.8 / 20 000)
    (kurtosis of the paraboloid: 2.14) = 3.2e-4; tolerance 1.5e-3 (about 5 s.e.)."""
    torch.manual_seed(0)
    dist = thin_dist_cls(0.0).from_logits(torch.tensor([[0.2, 0.5]]).expand(20_000, 2))
    draws = dist.sample()
    assert draws.shape == (20_000, 1)
    assert bool(((draws > -0.3) & (draws < 0.7)).all())
    assert draws.var().item() == pytest.approx(0.05, abs=1.5e-3)


def test_classes_are_cached_per_q_and_carry_it() -> None:
    assert thin_dist_cls(0.0) is thin_dist_cls(0.0)
    assert thin_dist_cls(-1.0) is not thin_dist_cls(0.0)
    assert (thin_dist_cls(-1.0).q, fat_dist_cls(1.5).q, certified_dist_cls(0.0).q) == (
        -1.0,
        1.5,
        0.0,
    )
    assert fat_dist_cls(1.5) is fat_dist_cls(1.5)


def test_input_sizes_and_refused_spaces() -> None:
    assert thin_dist_cls(0.0).required_input_dim(box(3)) == 6
    assert fat_dist_cls(2.0).required_input_dim(box(2, 2)) == 8
    assert certified_dist_cls(0.0).required_input_dim(box(1)) == 3
    with pytest.raises(ValueError, match="need a Box action space; got Discrete"):
        thin_dist_cls(0.0).required_input_dim(gym.spaces.Discrete(3))
    with pytest.raises(ValueError, match="needs a 1-D Box action space"):
        certified_dist_cls(0.0).required_input_dim(box(2))


def test_certified_policy_is_the_paraboloid_refitted_to_its_support() -> None:
    """Row 0: support [-0.2, 0.6] (centre 0.2, half-width 0.4); row 1 abstains to the safe
    action 0.1 (low = high = 0.1): log p = 0 there, -inf elsewhere, every sample 0.1."""
    logits = torch.tensor([[-0.2, 0.6, 0.0], [0.1, 0.1, 1.0]])
    dist = certified_dist_cls(0.0).from_logits(logits)
    expected = math.log(0.75 / 0.4 * (1 - (0.1 / 0.4) ** 2))
    logp = dist.logp(torch.tensor([[0.3], [0.1]]))
    assert logp[0].item() == pytest.approx(expected, rel=1e-6)
    assert logp[1].item() == 0.0
    assert dist.logp(torch.tensor([[0.61], [0.2]])).tolist() == [-math.inf, -math.inf]
    torch.manual_seed(0)
    draws = torch.stack([dist.sample() for _ in range(200)])  # (200, 2, 1)
    assert bool(((draws[:, 0] > -0.2) & (draws[:, 0] < 0.6)).all())
    assert bool((draws[:, 1] == 0.1).all())
    deterministic = dist.to_deterministic().sample()
    torch.testing.assert_close(deterministic, torch.tensor([[0.2], [0.1]]))


def test_a_single_certified_dose_is_a_narrow_paraboloid() -> None:
    """low = high without abstaining (one certified grid dose): half-width MIN_HALFWIDTH."""
    dist = certified_dist_cls(0.0).from_logits(torch.tensor([[0.3, 0.3, 0.0]]))
    assert dist.logp(torch.tensor([[0.3]])).item() == pytest.approx(
        math.log(0.75 / MIN_HALFWIDTH), rel=1e-6
    )
