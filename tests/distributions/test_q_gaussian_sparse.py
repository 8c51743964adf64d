"""Tests of SparseQGaussian (docs/algorithm.md §1.1).

Each test names its layer in its docstring:
* exact       — closed forms and identities on hand-computed tensors, float64, tight tolerances;
* statistical — Monte-Carlo with fixed seeds; tolerances are a stated number of standard errors
                (estimated from the same samples), so a failure is a > 5-sigma event;
* regression  — named after a defect of the authors' code or a numerical trap we hit.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate
from torch.distributions import constraints

from fttpo_ray.distributions import SparseQGaussian, exp_q

F64 = torch.float64
QS = [-1.0, 0.0, 0.5]
DIMS = [1, 2, 3, 6]


def _params(n: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Unequal locations and half-widths per dimension."""
    loc = torch.linspace(-0.5, 0.5, n, dtype=dtype)
    scale = torch.linspace(0.3, 1.7, n, dtype=dtype) if n > 1 else torch.tensor([0.7], dtype=dtype)
    return loc, scale


# ================================================================== exact identities
@pytest.mark.parametrize("sigma", [0.2, 1.0, 3.0])
def test_exact_q0_1d_is_epanechnikov(sigma: float) -> None:
    """Exact: q = 0, n = 1 is the Epanechnikov density 3/(4 sigma) (1 - z^2) (rtol 1e-13)."""
    d = SparseQGaussian(torch.tensor([0.1], dtype=F64), torch.tensor([sigma], dtype=F64), 0.0)
    z = torch.linspace(-0.999, 0.999, 201, dtype=F64)
    x = (0.1 + sigma * z).unsqueeze(-1)
    expected = torch.log(3.0 / (4.0 * sigma) * (1.0 - z**2))
    torch.testing.assert_close(d.log_prob(x), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("q", [-5.0, -1.0, 0.0, 0.5, 0.9])
@pytest.mark.parametrize("n", DIMS)
def test_exact_density_is_normalised_q_exponential(q: float, n: int) -> None:
    """Exact: p(x) = exp_q(-k r^2) / Z with r^2 = sum ((x-mu)/sigma)^2, k = 1/(1-q) (rtol 1e-12)."""
    torch.manual_seed(0)
    loc, scale = _params(n)
    d = SparseQGaussian(loc, scale, q)
    x = loc + scale * (0.6 * torch.rand(50, n, dtype=F64) - 0.3)
    r2 = (((x - loc) / scale) ** 2).sum(-1)
    k = 1.0 / (1.0 - q)
    log_z = scale.log().sum() + 0.5 * n * math.log(math.pi)
    log_z = log_z + math.lgamma(k + 1) - math.lgamma(k + 1 + n / 2)
    expected = exp_q(-k * r2, q).log() - log_z
    torch.testing.assert_close(d.log_prob(x), expected, rtol=1e-12, atol=1e-12)


def test_exact_uniform_limit_for_very_negative_q() -> None:
    """Exact (limit): q -> -inf gives the uniform law on the ellipse; at q = -1e9 the density
    at the centre is 1/(pi sigma_1 sigma_2) within 1e-7 relative."""
    scale = torch.tensor([0.5, 2.0], dtype=F64)
    d = SparseQGaussian(torch.zeros(2, dtype=F64), scale, -1e9)
    expected = -math.log(math.pi * 0.5 * 2.0)
    assert d.log_prob(torch.zeros(2, dtype=F64)).item() == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("q", QS + [-5.0, 0.9])
@pytest.mark.parametrize("n", DIMS)
def test_exact_normalisation_by_radial_quadrature(q: float, n: int) -> None:
    """Exact (quadrature): integrating log_prob's density along a ray against the shell area,
    prod(sigma) * S_{n-1} * int_0^1 p(mu + sigma r e) r^(n-1) dr = 1,
    S_{n-1} = 2 pi^(n/2)/Gamma(n/2) (the unit sphere's area).
    scipy.integrate.quad; tolerance 1e-9 (measured errors <= 1e-13)."""
    loc, scale = _params(n)
    d = SparseQGaussian(loc, scale, q)
    direction = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=F64)
    direction = direction / direction.norm()

    def radial(r: float) -> float:
        return d.log_prob(loc + scale * r * direction).exp().item() * r ** (n - 1)

    shell = 2.0 * math.pi ** (n / 2) / math.gamma(n / 2)
    total, _ = integrate.quad(radial, 0.0, 1.0, limit=200)
    assert total * shell * scale.prod().item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("q", QS)
def test_exact_1d_normalisation_and_entropy_by_quadrature(q: float) -> None:
    """Exact (quadrature): 1-D, int p = 1 and -int p log p = entropy(); scipy.integrate.quad over
    the support; tolerance 1e-9 (measured: <= 2e-15 for the mass, <= 4e-13 for the entropy)."""
    d = SparseQGaussian(torch.tensor([0.3], dtype=F64), torch.tensor([0.7], dtype=F64), q)

    def density(x: float) -> float:
        return d.log_prob(torch.tensor([x], dtype=F64)).exp().item()

    def neg_p_log_p(x: float) -> float:
        lp = d.log_prob(torch.tensor([x], dtype=F64)).item()
        return -math.exp(lp) * lp if math.isfinite(lp) else 0.0

    mass, _ = integrate.quad(density, -0.4, 1.0, limit=200)
    entropy, _ = integrate.quad(neg_p_log_p, -0.4, 1.0, limit=200)
    assert mass == pytest.approx(1.0, abs=1e-9)
    assert entropy == pytest.approx(d.entropy().item(), abs=1e-9)


@pytest.mark.parametrize("q", QS)
def test_exact_2d_normalisation_and_entropy_on_grid(q: float) -> None:
    """Exact (quadrature): 2-D midpoint rule on a 1000 x 1000 grid over the bounding box,
    sigma = (0.5, 1.5); tolerance 1e-4 on the mass and 1e-3 on the entropy (measured on 2000^2:
    mass 4e-7, entropy 2e-6 at q = -1, where the density has a sqrt edge)."""
    scale = torch.tensor([0.5, 1.5], dtype=F64)
    d = SparseQGaussian(torch.zeros(2, dtype=F64), scale, q)
    m = 1000
    u = (torch.arange(m, dtype=F64) + 0.5) / m * 2.0 - 1.0
    grid = torch.stack(torch.meshgrid(u * scale[0], u * scale[1], indexing="ij"), dim=-1)
    log_p = d.log_prob(grid)
    p = log_p.exp()
    cell = (2.0 / m) ** 2 * scale.prod()
    mass = (p.sum() * cell).item()
    entropy = -(torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum() * cell).item()
    assert mass == pytest.approx(1.0, abs=1e-4)
    assert entropy == pytest.approx(d.entropy().item(), abs=1e-3)


@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("n", DIMS)
def test_exact_moments_closed_form(q: float, n: int) -> None:
    """Exact: mean = mode = loc, variance = sigma^2/(n + 2k + 2), stddev its root."""
    loc, scale = _params(n)
    d = SparseQGaussian(loc, scale, q)
    k = 1.0 / (1.0 - q)
    assert torch.equal(d.mean, loc) and torch.equal(d.mode, loc)
    torch.testing.assert_close(d.variance, scale**2 / (n + 2 * k + 2), rtol=1e-15, atol=0.0)
    torch.testing.assert_close(d.stddev, scale / math.sqrt(n + 2 * k + 2), rtol=1e-15, atol=0.0)
    assert d.q == q and d.k == k


# ================================================================== statistical
@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("n", DIMS)
def test_statistical_normalisation_importance_sampling_from_box(q: float, n: int) -> None:
    """Statistical: Z_hat = vol(box) * mean p(x), x ~ U(loc +- scale), 1e5 draws (seed 0);
    |Z_hat - 1| < 5 standard errors + 1e-3, and the standard error is < 0.02 (test has power).
    Measured with this seed: |error| <= 1.9e-3 (n <= 2), <= 2.1e-3 (n = 3), <= 2.8e-2 (n = 6,
    se 1.9e-2); all within 1.5 se."""
    torch.manual_seed(0)
    loc, scale = _params(n)
    d = SparseQGaussian(loc, scale, q)
    num = 100_000
    x = loc + scale * (2.0 * torch.rand(num, n, dtype=F64) - 1.0)
    weights = d.log_prob(x).exp() * (2.0**n * scale.prod())
    estimate, stderr = weights.mean().item(), weights.std().item() / math.sqrt(num)
    assert stderr < 0.02
    assert abs(estimate - 1.0) < 5 * stderr + 1e-3


@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("n", DIMS)
def test_statistical_entropy_and_moments_vs_own_samples(q: float, n: int) -> None:
    """Statistical: on 1e5 rsample draws (seed 1), -mean log p matches entropy(), the sample mean
    matches loc and the sample variance matches sigma^2/(n+2k+2), each within 5 standard errors
    (measured entropy errors with this seed: <= 3.2e-3, all within 1.8 se)."""
    torch.manual_seed(1)
    loc, scale = _params(n)
    d = SparseQGaussian(loc, scale, q)
    num = 100_000
    x = d.rsample((num,))
    log_p = d.log_prob(x)
    assert abs(-log_p.mean().item() - d.entropy().item()) < 5 * log_p.std().item() / math.sqrt(num)
    centred = x - loc
    mean_se = centred.std(0) / math.sqrt(num)
    assert ((centred.mean(0)).abs() < 5 * mean_se).all()
    sq = centred**2
    assert ((sq.mean(0) - d.variance).abs() < 5 * sq.std(0) / math.sqrt(num)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("q", QS + [-20.0])
@pytest.mark.parametrize("n", DIMS)
def test_statistical_samples_inside_support_with_finite_log_prob(
    q: float, n: int, dtype: torch.dtype
) -> None:
    """Statistical (all draws): 1e5 samples (seed 2) lie in the support, inside the bounding box
    and have finite log_prob, in float32 and float64 (no sample lands on the boundary)."""
    torch.manual_seed(2)
    loc, scale = _params(n, dtype)
    d = SparseQGaussian(loc, scale, q)
    x = d.sample((100_000,))
    assert x.dtype == dtype
    assert d.support.check(x).all()
    low, high = d.support_bounds()
    assert ((x >= low) & (x <= high)).all()
    assert torch.isfinite(d.log_prob(x)).all()


@pytest.mark.parametrize("q", [-20.0, 0.0])
def test_regression_float32_samples_near_box_edge_keep_finite_log_prob(q: float) -> None:
    """Regression (float32 rounding): with |loc/scale| ~ 1000 (a narrow support at the edge of
    the action box), clamping B at 1 - 4 eps alone let 2 of 1e5 samples round onto/outside the
    boundary (log_prob = -inf); the loc-aware margin keeps every log_prob finite."""
    torch.manual_seed(1)
    loc = torch.full((6,), 0.999)
    scale = torch.full((6,), 1e-3)
    d = SparseQGaussian(loc, scale, q)
    x = d.sample((100_000,))
    assert torch.isfinite(d.log_prob(x)).all()


# ================================================================== -inf outside, never NaN
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("q", QS)
def test_exact_log_prob_minus_inf_outside_and_on_boundary(q: float, dtype: torch.dtype) -> None:
    """Exact: log_prob is -inf (not NaN) on the boundary and outside, finite inside; its gradient
    wrt value, loc and scale is finite everywhere (0 outside)."""
    loc = torch.tensor([0.5, -1.0], dtype=dtype, requires_grad=True)
    scale = torch.tensor([0.5, 2.0], dtype=dtype, requires_grad=True)
    d = SparseQGaussian(loc, scale, q)
    x = torch.tensor(
        [[1.0, -1.0], [0.5, 1.0], [0.0, -1.0], [2.0, 5.0], [100.0, 0.0], [0.6, -0.5], [0.5, -1.0]],
        dtype=dtype,
        requires_grad=True,
    )
    lp = d.log_prob(x)
    assert torch.equal(lp[:5], torch.full((5,), -math.inf, dtype=dtype))
    assert torch.isfinite(lp[5:]).all()
    grads = torch.autograd.grad(lp[5:].sum() + lp[:5].clamp(min=0.0).sum(), [x, loc, scale])
    for grad in grads:
        assert torch.isfinite(grad).all()
    assert torch.equal(grads[0][:5], torch.zeros(5, 2, dtype=dtype))


def test_exact_log_prob_nan_input_gives_nan_not_minus_inf() -> None:
    """Exact: a NaN value is not silently scored -inf (without validation it propagates)."""
    d = SparseQGaussian(torch.zeros(2), torch.ones(2), 0.0, validate_args=False)
    assert torch.isnan(d.log_prob(torch.tensor([math.nan, 0.0])))


def test_exact_validation_scores_outside_points_but_rejects_bad_values() -> None:
    """Exact: with validate_args=True, outside points still get -inf (documented deviation from
    torch's support check); wrong event size or NaN raise ValueError."""
    d = SparseQGaussian(torch.zeros(2), torch.ones(2), 0.0, validate_args=True)
    assert d.log_prob(torch.tensor([3.0, 0.0])).item() == -math.inf
    with pytest.raises(ValueError, match="event_shape"):
        d.log_prob(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        d.log_prob(torch.tensor([math.nan, 0.0]))
    with pytest.raises(ValueError, match="broadcast"):
        SparseQGaussian(torch.zeros(4, 2), 1.0, 0.0, validate_args=True).log_prob(torch.zeros(3, 2))


# ================================================================== gradients
@pytest.mark.parametrize("q", [-1.0, 0.0, 0.5])
def test_exact_gradcheck_log_prob_wrt_loc_and_scale(q: float) -> None:
    """Exact: torch.autograd.gradcheck (float64, default tolerances) of log_prob wrt loc, scale
    and value, at points well inside the support."""
    loc = torch.tensor([[0.2, -0.3, 0.1], [0.0, 0.5, -0.5]], dtype=F64, requires_grad=True)
    scale = torch.tensor([0.9, 1.3, 0.7], dtype=F64, requires_grad=True)
    value = loc.detach() + 0.3 * scale.detach() * torch.tensor([0.5, -0.4, 0.3], dtype=F64)
    value.requires_grad_(True)

    def fn(loc_: torch.Tensor, scale_: torch.Tensor, value_: torch.Tensor) -> torch.Tensor:
        return SparseQGaussian(loc_, scale_, q).log_prob(value_)

    assert torch.autograd.gradcheck(fn, (loc, scale, value))


@pytest.mark.parametrize("q", [-1.0, 0.0, 0.5])
def test_exact_gradcheck_rsample_wrt_loc_and_scale(q: float) -> None:
    """Exact: gradcheck (float64) of rsample wrt loc and scale with the noise fixed by seeding
    inside the function (x = loc + scale * sqrt(B) U is affine in loc and scale)."""
    loc = torch.tensor([[0.2, -0.3], [0.0, 0.5]], dtype=F64, requires_grad=True)
    scale = torch.tensor([0.9, 1.3], dtype=F64, requires_grad=True)

    def fn(loc_: torch.Tensor, scale_: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(3)
        return SparseQGaussian(loc_, scale_, q).rsample((4,))

    assert torch.autograd.gradcheck(fn, (loc, scale))


def test_exact_entropy_gradient_wrt_scale() -> None:
    """Exact: dH/dsigma_i = 1/sigma_i (H = sum log sigma + const)."""
    scale = torch.tensor([0.5, 2.0, 1.0], dtype=F64, requires_grad=True)
    h = SparseQGaussian(torch.zeros(3, dtype=F64), scale, 0.0).entropy()
    (grad,) = torch.autograd.grad(h, scale)
    torch.testing.assert_close(grad, 1.0 / scale.detach(), rtol=1e-15, atol=0.0)


# ================================================================== torch protocol
def test_exact_support_is_a_parameter_bound_ellipsoid() -> None:
    """Exact: support is a Constraint (continuous, event_dim 1) checking the closed ellipsoid;
    at class level it is a dependent property, as torch's Uniform."""
    assert constraints.is_dependent(SparseQGaussian.support)
    d = SparseQGaussian(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([1.0, 0.5]), 0.0)
    support = d.support
    assert isinstance(support, constraints.Constraint)
    assert support.event_dim == 1 and not support.is_discrete
    x = torch.tensor([[0.9, 0.1], [1.0, 1.5]])  # inside / on the boundary (closed set)
    assert support.check(x).tolist() == [True, True]
    assert support.check(torch.tensor([1.0, 0.0])).tolist() == [True, False]
    assert "Ellipsoid" in repr(support)
    assert SparseQGaussian.has_rsample and d.has_rsample


def test_exact_support_bounds_is_the_bounding_box() -> None:
    """Exact: support_bounds() = (loc - scale, loc + scale), shape batch + event."""
    loc = torch.tensor([[0.0, 1.0], [0.5, -0.5], [0.2, 0.2]])
    scale = torch.tensor([0.1, 0.3])
    low, high = SparseQGaussian(loc, scale, 0.0).support_bounds()
    assert torch.equal(low, loc - scale) and torch.equal(high, loc + scale)


def test_exact_batch_shapes_broadcasting_and_expand() -> None:
    """Exact: loc (4,1,3) with scale (5,3) -> batch (4,5), event (3,); samples, log_prob,
    entropy, support checks have the torch shapes; expand keeps q, k and the values."""
    torch.manual_seed(4)
    loc = torch.randn(4, 1, 3) * 0.1
    scale = torch.rand(5, 3) + 0.5
    d = SparseQGaussian(loc, scale, 0.5)
    assert d.batch_shape == (4, 5) and d.event_shape == (3,)
    x = d.rsample((2,))
    assert x.shape == (2, 4, 5, 3)
    assert d.log_prob(x).shape == (2, 4, 5)
    assert d.log_prob(torch.zeros(3)).shape == (4, 5)
    assert d.entropy().shape == (4, 5) and d.variance.shape == (4, 5, 3)
    assert d.support.check(x).shape == (2, 4, 5)
    e = d.expand((7, 4, 5))
    assert isinstance(e, SparseQGaussian) and e.q == 0.5 and e.k == 2.0
    assert e.batch_shape == (7, 4, 5) and e.sample((3,)).shape == (3, 7, 4, 5, 3)
    torch.testing.assert_close(e.log_prob(x[0]), d.log_prob(x[0]).expand(7, 4, 5))
    torch.testing.assert_close(e.entropy(), d.entropy().expand(7, 4, 5))
    assert e._validate_args == d._validate_args
    scalar_scale = SparseQGaussian(torch.zeros(2, 3), 0.5, 0.0)
    assert scalar_scale.scale.shape == (2, 3) and scalar_scale.batch_shape == (2,)


def test_exact_repr_and_dtypes() -> None:
    """Exact: repr names q, loc, scale; float64 parameters give float64 samples and log_prob."""
    d = SparseQGaussian(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64), 0.0)
    assert repr(d).startswith("SparseQGaussian(q: 0.0, loc:")
    assert d.sample().dtype == F64 and d.log_prob(torch.zeros(2, dtype=F64)).dtype == F64
    assert d.entropy().dtype == F64


# ================================================================== bad arguments
@pytest.mark.parametrize("q", [1.0, 1.3, 2.0, 5.0, math.nan, math.inf, -math.inf, "0"])
def test_exact_bad_q_raises_value_error(q: object) -> None:
    """Exact (argument checks): q must be a finite float < 1; checked even without validation."""
    with pytest.raises(ValueError, match="`q`"):
        SparseQGaussian(
            torch.zeros(2),
            torch.ones(2),
            q,
            validate_args=False,  # type: ignore[arg-type]
        )


def test_exact_q_error_message_points_to_heavy_tailed_class() -> None:
    """Exact: the q >= 1 message gives the value, the valid range and the class to use."""
    with pytest.raises(ValueError, match=r"`q` must be < 1 .*got 1\.3 .*HeavyTailedQGaussian"):
        SparseQGaussian(torch.zeros(2), torch.ones(2), 1.3)


@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan])
def test_exact_bad_scale_raises_value_error_when_validating(bad: float) -> None:
    """Exact (argument checks): scale <= 0 (or NaN) raises naming `scale` with validate_args=True;
    torch-style, it is not checked with validate_args=False."""
    scale = torch.tensor([1.0, bad])
    with pytest.raises(ValueError, match="`scale`"):
        SparseQGaussian(torch.zeros(2), scale, 0.0, validate_args=True)
    SparseQGaussian(torch.zeros(2), scale, 0.0, validate_args=False)


@pytest.mark.parametrize(
    ("loc", "scale", "name"),
    [
        (torch.tensor(0.0), torch.tensor(1.0), "`loc`"),
        (torch.zeros(3, 0), torch.ones(3, 0), "event dimension"),
        (torch.zeros(3), torch.ones(2), "broadcastable"),
        ([0.0, 1.0], 1.0, "`loc`"),
    ],
)
def test_exact_bad_shapes_raise_value_error(loc: object, scale: object, name: str) -> None:
    """Exact (argument checks): 0-dim, empty-event, non-broadcastable or non-tensor parameters."""
    with pytest.raises(ValueError, match=name):
        SparseQGaussian(loc, scale, 0.0)  # type: ignore[arg-type]
