"""Tests of exp_q / log_q (docs/algorithm.md §1).

Layers: exact (hand-computed values, identities, limits)."""

from __future__ import annotations

import math

import pytest
import torch

from fttpo_ray.distributions import exp_q, log_q

QS = [-3.0, -1.0, 0.0, 0.5, 0.9, 1.0, 1.5, 2.0, 2.9]


# --------------------------------------------------------------------- exact: hand-computed values
def test_exact_q1_is_exp_and_log() -> None:
    """Exact: q = 1 is torch.exp / torch.log bit for bit."""
    x = torch.linspace(-5.0, 5.0, 101, dtype=torch.float64)
    assert torch.equal(exp_q(x, 1.0), torch.exp(x))
    assert torch.equal(log_q(x.exp(), 1.0), torch.log(x.exp()))


def test_exact_hand_computed_values() -> None:
    """Exact: closed forms for particular q (float64, tolerance 1e-15 relative)."""
    x = torch.tensor([-0.5, 0.0, 0.25, 0.75], dtype=torch.float64)
    torch.testing.assert_close(exp_q(x, 0.0), 1.0 + x, rtol=1e-15, atol=0.0)  # [1 + x]_+
    torch.testing.assert_close(exp_q(x, 0.5), (1.0 + x / 2) ** 2, rtol=1e-15, atol=0.0)
    torch.testing.assert_close(exp_q(x, 2.0), 1.0 / (1.0 - x), rtol=1e-15, atol=0.0)
    y = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(log_q(y, 0.0), y - 1.0, rtol=1e-15, atol=0.0)
    torch.testing.assert_close(log_q(y, 2.0), 1.0 - 1.0 / y, rtol=1e-15, atol=0.0)
    torch.testing.assert_close(log_q(y, -1.0), (y**2 - 1.0) / 2.0, rtol=1e-15, atol=0.0)


@pytest.mark.parametrize("q", QS)
def test_exact_inverse_pairs(q: float) -> None:
    """Exact: exp_q(log_q(y)) = y on y > 0 and log_q(exp_q(x)) = x on exp_q's domain.

    Tolerance 1e-8 relative (float64): the round trip is ill-conditioned by ~ y^-(1-q) near the
    cut-off (e.g. q = -3, y = 1e-2 loses 8 digits to cancellation in 1 + (1-q) log_q(y)).
    """
    y = torch.logspace(-2, 2, 61, dtype=torch.float64)
    torch.testing.assert_close(exp_q(log_q(y, q), q), y, rtol=1e-8, atol=0.0)
    if q < 1:
        x = torch.linspace(-1.0 / (1.0 - q) + 1e-3, 5.0, 61, dtype=torch.float64)
    elif q > 1:
        x = torch.linspace(-5.0, 1.0 / (q - 1.0) - 1e-3, 61, dtype=torch.float64)
    else:
        x = torch.linspace(-5.0, 5.0, 61, dtype=torch.float64)
    torch.testing.assert_close(log_q(exp_q(x, q), q), x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("eps", [1e-6, -1e-6])
def test_exact_limit_q_to_1(eps: float) -> None:
    """Exact (limit): q = 1 +- 1e-6 is within 1e-5 (relative) of exp / log on moderate x."""
    x = torch.linspace(-3.0, 3.0, 61, dtype=torch.float64)
    torch.testing.assert_close(exp_q(x, 1.0 + eps), x.exp(), rtol=1e-5, atol=0.0)
    y = torch.linspace(0.1, 10.0, 61, dtype=torch.float64)
    torch.testing.assert_close(log_q(y, 1.0 + eps), y.log(), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------- exact: cut-off and edges
@pytest.mark.parametrize("q", [-3.0, -1.0, 0.0, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_zero_at_and_beyond_cutoff_with_finite_gradient(q: float, dtype: torch.dtype) -> None:
    """Exact: for q < 1, exp_q(x) == 0 for x <= -1/(1-q); gradient there is 0 (not NaN)."""
    cut = -1.0 / (1.0 - q)
    x = torch.tensor([cut - 10.0, cut - 1e-3, cut, cut + 0.5], dtype=dtype, requires_grad=True)
    y = exp_q(x, q)
    assert torch.equal(y[:3], torch.zeros(3, dtype=dtype))
    assert y[3] > 0
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[:3], torch.zeros(3, dtype=dtype))


@pytest.mark.parametrize("q", [1.5, 2.0, 3.0])
def test_exact_pole_for_q_above_1(q: float) -> None:
    """Exact: for q > 1, exp_q is +inf at and beyond its pole x = 1/(q-1), gradient finite.

    (q chosen so that 1 + (1-q)/(q-1) rounds to exactly 0.)
    """
    pole = 1.0 / (q - 1.0)
    x = torch.tensor([pole - 0.5, pole, pole + 1.0], dtype=torch.float64, requires_grad=True)
    y = exp_q(x, q)
    assert torch.isfinite(y[0]) and torch.isinf(y[1:]).all()
    (grad,) = torch.autograd.grad(y[0] + y[1:].clamp(max=0.0).sum(), x)
    assert not torch.isnan(grad).any()


@pytest.mark.parametrize("q", QS)
def test_exact_log_q_edges(q: float) -> None:
    """Exact: log_q(0) is its limit (-1/(1-q) for q < 1, -inf otherwise), negatives give NaN,
    and the gradient is never NaN (0 at x <= 0)."""
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    y = log_q(x, q)
    assert torch.isnan(y[:2]).all()
    expected_at_zero = -1.0 / (1.0 - q) if q < 1 else -math.inf
    assert y[2].item() == expected_at_zero
    assert y[3].item() == 0.0
    (grad,) = torch.autograd.grad(y[3], x)
    assert not torch.isnan(grad).any()


def test_exact_nan_propagates() -> None:
    """Exact: NaN in gives NaN out (the cut-off mask must not hide a NaN input)."""
    x = torch.tensor([math.nan, 0.0])
    for q in (-1.0, 0.0, 1.0, 2.0):
        assert torch.isnan(exp_q(x, q)[0])
        assert torch.isnan(log_q(x, q)[0])


def test_exact_integer_input_promoted() -> None:
    """Exact: integer tensors and Python numbers are promoted to the default float dtype."""
    assert exp_q(torch.tensor([0, 1]), 0.0).dtype == torch.get_default_dtype()
    assert log_q(2, 0.0).item() == 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.5", True, None, torch.tensor(0.5)])
def test_bad_q_raises_value_error_naming_q(bad: object) -> None:
    """Exact (argument checks): q must be a finite real number; message names `q`."""
    with pytest.raises(ValueError, match="`q`"):
        exp_q(torch.zeros(2), bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`q`"):
        log_q(torch.ones(2), bad)  # type: ignore[arg-type]
