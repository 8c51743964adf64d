"""A 0-d tensor ``q`` (what the learner's compiled step passes, so one graph serves every q)
gives the float ``q``'s densities, samples, moments and entropy."""

from __future__ import annotations

import pytest
import torch

from fttpo_ray.distributions import HeavyTailedQGaussian, SparseQGaussian

LOC = torch.tensor([[0.1, -0.3], [0.5, 0.0], [-0.2, 0.4]])
SCALE = torch.tensor([[0.4, 0.7], [0.2, 0.3], [1.0, 0.5]])


@pytest.mark.parametrize(
    ("cls", "q"),
    [
        (SparseQGaussian, -1.0),
        (SparseQGaussian, 0.0),
        (SparseQGaussian, 0.5),
        (HeavyTailedQGaussian, 1.5),
        (HeavyTailedQGaussian, 2.0),
        (HeavyTailedQGaussian, 2.5),
    ],
)
def test_tensor_q_equals_float_q(cls, q):
    """Same seed: equal samples (the same random draws), log-densities at them and at points
    off a sparse support (-inf), mean, variance and entropy (float32 tolerance 1e-6)."""
    plain = cls(LOC, SCALE, q, validate_args=False)
    tensor = cls(LOC, SCALE, torch.tensor(q, dtype=torch.float64), validate_args=False)
    torch.manual_seed(0)
    expected = plain.rsample((5,))
    torch.manual_seed(0)
    got = tensor.rsample((5,))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    points = torch.cat([expected, LOC.unsqueeze(0) + 1.5 * SCALE.unsqueeze(0)])
    log_probs = tensor.log_prob(points)
    torch.testing.assert_close(log_probs, plain.log_prob(points), rtol=1e-6, atol=1e-6)
    assert got.dtype == log_probs.dtype == torch.float32
    for name in ("mean", "variance"):
        torch.testing.assert_close(getattr(tensor, name), getattr(plain, name), equal_nan=True)
    torch.testing.assert_close(tensor.entropy(), plain.entropy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [SparseQGaussian, HeavyTailedQGaussian])
def test_tensor_q_must_be_a_0d_float_tensor(cls):
    with pytest.raises(ValueError, match="a tensor `q` must be a 0-d floating-point tensor"):
        cls(LOC, SCALE, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="a tensor `q` must be a 0-d floating-point tensor"):
        cls(LOC, SCALE, torch.tensor(1))
