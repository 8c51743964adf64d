"""Multivariate q-Gaussians: the sparse (q < 1) and the heavy-tailed (1 <= q < 3) policies.

See ``docs/algorithm.md`` §1.1 (thin) and §1.2 (fat); §7 lists the defects of the
authors' research code that these classes deliberately do not repeat.

* :class:`SparseQGaussian` (q < 1, ``k = 1/(1-q)``) is the "beta-Gaussian" of Martins et al.
  2022, "Sparse continuous distributions and Fenchel-Young losses" (arXiv 2108.01988, §3; their
  alpha = 2 - q), re-parameterised by the per-dimension support half-width ``sigma``::

      p(x) = (1/Z) [1 - sum_i ((x_i - mu_i)/sigma_i)^2]_+^k
      Z    = prod_i sigma_i * pi^(n/2) * Gamma(k+1) / Gamma(k+1+n/2)

  Its support is the closed ellipsoid ``sum_i ((x_i - mu_i)/sigma_i)^2 <= 1``, so
  ``mu +- sigma`` is an exact per-dimension safety certificate.
* :class:`HeavyTailedQGaussian` (1 <= q < 3) is, per dimension, a Student-t with
  ``nu = (3-q)/(q-1)`` degrees of freedom (the q-Gaussian / Student-t identity; see e.g.
  Thistleton, Marsh, Nelson, Tsallis 2007, "Generalized Box-Muller method for generating
  q-Gaussian random deviates", IEEE Trans. Inf. Theory 53(12)), and the multivariate policy is
  the product of independent 1-D factors. q = 1 is exactly the Gaussian.

Both are ``torch.distributions.Distribution`` subclasses whose event is the last dimension of
``loc``; nothing here imports Ray.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor
from torch.distributions import Beta, Distribution, Independent, Normal, StudentT, constraints
from torch.distributions.utils import broadcast_all
from torch.types import _size

__all__ = ["Ellipsoid", "HeavyTailedQGaussian", "SparseQGaussian"]


def _check_q(q: float, cls_name: str) -> float:
    """Return ``q`` as a finite Python float or raise a ``ValueError`` naming it."""
    if isinstance(q, bool) or not isinstance(q, Real):
        raise ValueError(
            f"{cls_name}: `q` must be a real Python number (float); got {q!r} of type "
            f"{type(q).__name__}"
        )
    q = float(q)
    if not math.isfinite(q):
        raise ValueError(f"{cls_name}: `q` must be finite; got {q}")
    return q


def _check_tensor_q(q: Tensor, cls_name: str) -> Tensor:
    """A 0-d floating-point tensor ``q`` (its value is not read: no wait for the device), else a
    ``ValueError`` naming it. A tensor ``q`` lets one compiled graph serve every value of it."""
    if q.dim() != 0 or not q.is_floating_point():
        raise ValueError(
            f"{cls_name}: a tensor `q` must be a 0-d floating-point tensor; got shape "
            f"{tuple(q.shape)}, dtype {q.dtype}"
        )
    return q


def _lgamma(x: Tensor | float) -> Tensor | float:
    """``lgamma`` of a Python float (``math``) or of a tensor (float64 ``torch``)."""
    if isinstance(x, Tensor):
        return torch.lgamma(x.double())
    return math.lgamma(x)


def _log(x: Tensor | float) -> Tensor | float:
    """``log`` of a Python float (``math``) or of a tensor (float64 ``torch``)."""
    if isinstance(x, Tensor):
        return torch.log(x.double())
    return math.log(x)


def _scalar(x: Tensor | float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``x`` as a 0-d tensor of ``dtype`` on ``device``."""
    if isinstance(x, Tensor):
        return x.to(dtype=dtype, device=device)
    return torch.full((), x, dtype=dtype, device=device)


def _broadcast_params(
    loc: Tensor | float, scale: Tensor | float, cls_name: str
) -> tuple[Tensor, Tensor]:
    """Broadcast ``loc`` and ``scale`` to one floating-point shape with a non-empty last dim."""
    for name, value in (("loc", loc), ("scale", scale)):
        if not isinstance(value, (Tensor, Real)) or isinstance(value, bool):
            raise ValueError(
                f"{cls_name}: `{name}` must be a tensor or a real number; got "
                f"{type(value).__name__}"
            )
    try:
        loc, scale = broadcast_all(loc, scale)
    except RuntimeError as err:
        raise ValueError(
            f"{cls_name}: `loc` and `scale` must be broadcastable; got shapes "
            f"{tuple(torch.as_tensor(loc).shape)} and {tuple(torch.as_tensor(scale).shape)}"
        ) from err
    if loc.dim() < 1:
        raise ValueError(
            f"{cls_name}: `loc`/`scale` must have at least one dimension (the event dimension, "
            f"the last one); got 0-dimensional tensors. Use e.g. loc.unsqueeze(-1) for 1-D."
        )
    if loc.shape[-1] == 0:
        raise ValueError(
            f"{cls_name}: the event dimension (last dim of `loc`/`scale`) must have size >= 1; "
            f"got shape {tuple(loc.shape)}"
        )
    if not loc.is_floating_point():
        loc = loc.to(torch.get_default_dtype())
    if not scale.is_floating_point():
        scale = scale.to(loc.dtype)
    if loc.dtype != scale.dtype:
        dtype = torch.promote_types(loc.dtype, scale.dtype)
        loc, scale = loc.to(dtype), scale.to(dtype)
    return loc, scale


def _check_scale(scale: Tensor, cls_name: str, what: str) -> None:
    """Raise a ``ValueError`` naming ``scale`` if any entry is not > 0 (used under validation)."""
    bad = ~(scale > 0)
    if bool(bad.any()):
        first = scale[bad].flatten()[0].item()
        raise ValueError(
            f"{cls_name}: `scale` ({what}) must be > 0 everywhere; got {int(bad.sum())} "
            f"invalid entr{'y' if int(bad.sum()) == 1 else 'ies'} (e.g. {first}) in a tensor "
            f"of shape {tuple(scale.shape)}"
        )


def _params_repr(dist: Distribution, q: float) -> str:
    """``Name(q: ..., loc: ..., scale: ...)`` in the style of ``Distribution.__repr__``."""
    parts = [f"q: {q}"]
    for name in ("loc", "scale"):
        value = dist.__dict__.get(name)
        if isinstance(value, Tensor):
            parts.append(f"{name}: {value if value.numel() == 1 else value.size()}")
    return f"{type(dist).__name__}({', '.join(parts)})"


class Ellipsoid(constraints.Constraint):
    """The closed axis-aligned ellipsoid ``sum_i ((x_i - loc_i)/scale_i)^2 <= 1`` (event_dim 1).

    The support of :class:`SparseQGaussian`; ``check(value)`` returns a boolean tensor of shape
    ``value.shape[:-1]`` (broadcast with the batch shape of ``loc``/``scale``).
    """

    is_discrete = False
    event_dim = 1

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.loc = loc
        self.scale = scale
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        """Boolean membership of each event of ``value`` (NaN entries are not members)."""
        z = (value - self.loc) / self.scale
        return (z * z).sum(-1) <= 1.0

    def __repr__(self) -> str:
        return f"Ellipsoid(loc: {tuple(self.loc.shape)}, scale: {tuple(self.scale.shape)})"


class SparseQGaussian(Distribution):
    r"""Sparse (finite-support) multivariate q-Gaussian, q < 1, indexed by support half-widths.

    With ``k = 1/(1-q)``, ``n`` = event size (last dim of ``loc``)::

        p(x) = (1/Z) [1 - sum_i ((x_i - mu_i)/sigma_i)^2]_+^k
        Z    = prod_i sigma_i * pi^(n/2) * Gamma(k+1) / Gamma(k+1+n/2)

    * support: the closed ellipsoid ``sum_i ((x_i-mu_i)/sigma_i)^2 <= 1``; ``log_prob`` is
      ``-inf`` outside it and on its boundary (density 0), and never NaN for non-NaN input;
    * sampling (reparameterised): ``U`` uniform on the unit sphere (a normalised standard
      normal), ``B ~ Beta(n/2, k+1)`` (the law of the squared radius),
      ``x = mu + sigma * sqrt(B) * U``;
    * mean = mode = ``mu``; variance ``sigma_i^2 / (n + 2k + 2)``;
    * entropy ``H = log Z - k (psi(k+1) - psi(k+1+n/2))`` (``E[log(1-r^2)]`` of a Beta variable).

    q = 0 (k = 1) is the truncated paraboloid of the paper's thin policy (1-D: Epanechnikov).
    q -> -inf tends to the uniform distribution on the ellipsoid.

    Deviations from Martins et al. 2022 and from the authors' code, and why (docs/algorithm.md
    §1.1, §7):

    * the scale is the support half-width per dimension, not their scale matrix ``Sigma``
      (whose support radius couples all dimensions through ``|Sigma|^(-1/c)``), so narrow
      supports in high dimension need no clamping and the support is readable off ``scale``;
    * only axis-aligned (diagonal) ellipsoids are provided: that is what the thin policy uses.

    Deviation from the usual ``torch.distributions`` convention: with ``validate_args`` on,
    ``log_prob`` checks the value's shape and that it is a real vector, but it does *not* raise
    for values outside the ellipsoid; it returns ``-inf`` for them (docs/algorithm.md §1.1),
    so that e.g. prohibited-mass integration and the RAR baseline can score arbitrary actions.
    Use ``dist.support.check(x)`` to test membership.

    Numerical safety (float32): the squared radius ``B`` is clamped below
    ``1 - 4 eps (n + 2 + ||loc/scale||_2)`` (capped at 1/2), which exceeds the rounding error of
    ``x = loc + scale * z`` followed by ``((x - loc)/scale)^2``; any sample still recognised as
    on/outside the boundary by :meth:`log_prob`'s own arithmetic is replaced by ``loc``. Samples
    therefore always have a finite ``log_prob``. The clamp changes the law only in a shell of
    probability ``O(margin^(k+1))``.

    Args:
        loc: ``mu``, shape ``(*batch, n)``; broadcast with ``scale``.
        scale: ``sigma > 0``, the support half-width per dimension, shape broadcastable.
        q: entropic index, a finite Python float ``< 1``, or a 0-d floating-point tensor
            (not checked: its value is never read on the host, so one compiled graph serves
            every q; ``k`` and the normalising constant are then float64 tensors).
        validate_args: torch's argument validation switch (``None``: torch's default).

    Raises:
        ValueError: ``q >= 1`` (always checked), ``scale <= 0`` (when validating), 0-dim or
            empty ``loc``/``scale``, non-broadcastable shapes.

    Attributes:
        q: the entropic index (Python float or 0-d tensor, as given).
        k: ``1/(1-q)`` (of the same kind).
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.positive}
    has_rsample = True

    def __init__(
        self,
        loc: Tensor | float,
        scale: Tensor | float,
        q: float | Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if isinstance(q, Tensor):
            q = _check_tensor_q(q, "SparseQGaussian")
        else:
            q = _check_q(q, "SparseQGaussian")
            if q >= 1.0:
                raise ValueError(
                    f"SparseQGaussian: `q` must be < 1 for a sparse (finite-support) "
                    f"q-Gaussian; got {q} (use HeavyTailedQGaussian for 1 <= q < 3)"
                )
        self.loc, self.scale = _broadcast_params(loc, scale, "SparseQGaussian")
        self.q = q
        self.k = 1.0 / (1.0 - q)
        validate = Distribution._validate_args if validate_args is None else validate_args
        if validate:
            _check_scale(self.scale, "SparseQGaussian", "the support half-width")
        batch_shape, event_shape = self.loc.shape[:-1], self.loc.shape[-1:]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    # ----------------------------------------------------------------- torch protocol
    def expand(
        self, batch_shape: _size, _instance: SparseQGaussian | None = None
    ) -> SparseQGaussian:
        new = self._get_checked_instance(SparseQGaussian, _instance)
        batch_shape = torch.Size(batch_shape)
        param_shape = batch_shape + self.event_shape
        new.loc = self.loc.expand(param_shape)
        new.scale = self.scale.expand(param_shape)
        new.q = self.q
        new.k = self.k
        super(SparseQGaussian, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> Ellipsoid:
        return Ellipsoid(self.loc, self.scale)

    def __repr__(self) -> str:
        return _params_repr(self, self.q)

    # ----------------------------------------------------------------- closed forms
    @property
    def _dim(self) -> int:
        return self.loc.shape[-1]

    def _log_normalizer(self) -> Tensor:
        """Batch-shaped ``log Z = sum log sigma + (n/2) log pi + lgamma(k+1) - lgamma(k+1+n/2)``."""
        n, k = self._dim, self.k
        const = 0.5 * n * math.log(math.pi) + _lgamma(k + 1.0) - _lgamma(k + 1.0 + 0.5 * n)
        if isinstance(const, Tensor):
            const = const.to(self.scale.dtype)
        return self.scale.log().sum(-1) + const

    def _sq_radius(self, value: Tensor) -> Tensor:
        """``sum_i ((x_i - mu_i)/sigma_i)^2``; shared by log_prob and the sampler's guard."""
        z = (value - self.loc) / self.scale
        return (z * z).sum(-1)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return self.scale.pow(2) / (self._dim + 2.0 * self.k + 2.0)

    def entropy(self) -> Tensor:
        """``H = log Z - k (psi(k+1) - psi(k+1+n/2))``, batch-shaped."""
        n, k = self._dim, self.k
        if isinstance(k, Tensor):
            k64 = k.double()
            psi = torch.special.digamma(torch.stack([k64 + 1.0, k64 + 1.0 + 0.5 * n]))
            return self._log_normalizer() - (k64 * (psi[0] - psi[1])).to(self.scale.dtype)
        psi = torch.special.digamma(torch.tensor([k + 1.0, k + 1.0 + 0.5 * n], dtype=torch.float64))
        return self._log_normalizer() - k * (psi[0] - psi[1]).item()

    def support_bounds(self) -> tuple[Tensor, Tensor]:
        """``(loc - scale, loc + scale)``, shape ``batch + event``: the box enclosing the support.

        This is the per-dimension safety certificate: no sample ever leaves it.
        """
        return self.loc - self.scale, self.loc + self.scale

    # ----------------------------------------------------------------- sampling / density
    def rsample(self, sample_shape: _size = torch.Size()) -> Tensor:
        """``x = mu + sigma * sqrt(B) * U``, ``U`` uniform on the sphere, ``B ~ Beta(n/2, k+1)``.

        Differentiable in ``loc`` and ``scale``; see the class docstring for the boundary margin.
        """
        shape = self._extended_shape(sample_shape)
        dtype, device = self.loc.dtype, self.loc.device
        n = self._dim
        direction = torch.randn(shape, dtype=dtype, device=device)
        norm = torch.linalg.vector_norm(direction, dim=-1, keepdim=True)
        direction = direction / norm.clamp_min(torch.finfo(dtype).tiny)
        half_n = torch.full((), 0.5 * n, dtype=dtype, device=device)
        k_plus_1 = _scalar(self.k + 1.0, dtype, device)
        sq_radius = Beta(half_n, k_plus_1, validate_args=False).sample(shape[:-1])
        with torch.no_grad():
            eps = torch.finfo(dtype).eps
            ratio = torch.linalg.vector_norm(self.loc / self.scale, dim=-1)
            margin = (4.0 * eps * (n + 2.0 + ratio)).clamp(max=0.5)
        sq_radius = torch.minimum(sq_radius, 1.0 - margin)
        x = self.loc + self.scale * (sq_radius.sqrt().unsqueeze(-1) * direction)
        with torch.no_grad():
            outside = self._sq_radius(x) >= 1.0
        # Unconditional select: no branch on the tensor's value, so no wait for the device.
        return torch.where(outside.unsqueeze(-1), self.loc.expand(shape), x)

    def log_prob(self, value: Tensor) -> Tensor:
        """``k log(1 - r^2) - log Z`` inside the support, ``-inf`` on/outside it, NaN only for NaN.

        The off-support branch is evaluated at ``r^2 = 0`` so gradients stay finite (0 there).
        """
        if self._validate_args:
            self._validate_sample(value)
        r2 = self._sq_radius(value)
        inside = r2 < 1.0
        safe_r2 = torch.where(inside, r2, torch.zeros_like(r2))
        lp = self.k * torch.log1p(-safe_r2) - self._log_normalizer()
        out = torch.where(inside, lp, torch.full_like(lp, -math.inf))
        return torch.where(torch.isnan(r2), r2, out)

    def _validate_sample(self, value: Tensor) -> None:
        """Shape checks as in torch, membership in ``real_vector`` (not in the ellipsoid)."""
        if not isinstance(value, Tensor):
            raise ValueError(
                f"SparseQGaussian.log_prob: `value` must be a Tensor; got {type(value).__name__}"
            )
        if value.shape[-1:] != self.event_shape:
            raise ValueError(
                f"SparseQGaussian.log_prob: the last dim of `value` must match event_shape "
                f"{tuple(self.event_shape)}; got shape {tuple(value.shape)}"
            )
        expected = self.batch_shape + self.event_shape
        try:
            torch.broadcast_shapes(value.shape, expected)
        except RuntimeError as err:
            raise ValueError(
                f"SparseQGaussian.log_prob: `value` of shape {tuple(value.shape)} does not "
                f"broadcast with batch_shape + event_shape {tuple(expected)}"
            ) from err
        if not bool(constraints.real_vector.check(value).all()):
            raise ValueError("SparseQGaussian.log_prob: `value` contains NaN entries")


class HeavyTailedQGaussian(Distribution):
    r"""Heavy-tailed q-Gaussian, 1 <= q < 3: a product of independent 1-D Student-t factors.

    Per dimension, ``x_i = mu_i + sigma_i t_nu`` with ``nu = (3-q)/(q-1)``; the density is
    proportional to ``exp_q(-beta z^2)`` with ``beta = 1/((3-q) sigma^2)``, i.e. to
    ``(1 + z^2/nu)^(-(nu+1)/2)``. q = 1 is exactly ``Normal(mu, sigma)``; q = 2 (nu = 1) is
    Cauchy. ``log_prob`` and ``entropy`` are sums over the last dimension.

    Moments follow the Student-t conventions: the mean is ``mu`` for q < 2 and NaN for q >= 2;
    the variance is ``sigma^2 nu/(nu-2)`` for q < 5/3 (``sigma^2`` at q = 1), ``inf`` for
    5/3 <= q < 2 and NaN for q >= 2.

    Numerical note: sampling is delegated to torch's ``StudentT``/``Normal``, but for q > 1
    ``log_prob`` and ``entropy`` evaluate the Student-t formulas with their normalising constants
    computed in float64 from the Python float ``nu`` (``math.lgamma``). torch's ``StudentT``
    computes ``lgamma(nu/2) - lgamma((nu+1)/2)`` in the parameter dtype, which in float32 loses
    all precision for q near 1 (nu ~ 1e7: errors ~1 nat). Values agree with ``StudentT`` in float64.

    Deviations from the authors' code (docs/algorithm.md §7), on purpose: their Box-Muller
    sampler used the index ``(q-1)/(3-q)`` (a Gaussian at q = 2, a compact law at q = 1.5) and
    their density was an elliptical kernel with a 1-D normaliser (integral sqrt(2) in 1-D,
    improper for n >= 2). Here sampling is torch's Student-t reparameterisation and the
    multivariate density is the normalised product form (the elliptical form is not
    normalisable for q >= 1 + 2/n).

    Args:
        loc: ``mu``, shape ``(*batch, n)``; broadcast with ``scale``.
        scale: ``sigma > 0``, the Student-t (at q = 1: Gaussian) scale per dimension.
        q: entropic index, a finite Python float with ``1 <= q < 3``, or a 0-d floating-point
            tensor with ``1 < q < 3`` (a Student-t; not checked, its value is never read on the
            host, so one compiled graph serves every such q; q = 1, the Gaussian, is the float).
        validate_args: torch's argument validation switch (``None``: torch's default).

    Raises:
        ValueError: q outside ``[1, 3)`` (always checked), ``scale <= 0`` (when validating),
            0-dim or empty ``loc``/``scale``, non-broadcastable shapes.

    Attributes:
        q: the entropic index (Python float).
        df: ``nu = (3-q)/(q-1)`` (Python float; ``inf`` at q = 1).
        base_dist: the ``Independent(Normal | StudentT, 1)`` this distribution delegates to.
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        loc: Tensor | float,
        scale: Tensor | float,
        q: float | Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if isinstance(q, Tensor):
            q = _check_tensor_q(q, "HeavyTailedQGaussian")
        else:
            q = _check_q(q, "HeavyTailedQGaussian")
            if q < 1.0:
                raise ValueError(
                    f"HeavyTailedQGaussian: `q` must be in [1, 3) for a heavy-tailed "
                    f"q-Gaussian; got {q} (use SparseQGaussian for q < 1)"
                )
            if q >= 3.0:
                raise ValueError(
                    f"HeavyTailedQGaussian: `q` must be in [1, 3); got {q}: a q-Gaussian with "
                    f"q >= 3 is not normalisable"
                )
        self.loc, self.scale = _broadcast_params(loc, scale, "HeavyTailedQGaussian")
        self.q = q
        #: The Gaussian (Python float q = 1); a tensor q is a Student-t's (1 < q < 3).
        self.gaussian = not isinstance(q, Tensor) and q == 1.0
        self.df = math.inf if self.gaussian else (3.0 - q) / (q - 1.0)
        validate = Distribution._validate_args if validate_args is None else validate_args
        if validate:
            _check_scale(self.scale, "HeavyTailedQGaussian", "the Student-t scale")
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    @property
    def base_dist(self) -> Independent:
        """``Independent(Normal | StudentT, 1)`` with these parameters (built on each access;
        the hot paths, ``rsample`` and ``log_prob``, do not use it)."""
        if self.gaussian:
            base = Normal(self.loc, self.scale, validate_args=False)
        else:
            base = StudentT(self.df, self.loc, self.scale, validate_args=False)
        return Independent(base, 1, validate_args=False)

    def expand(
        self, batch_shape: _size, _instance: HeavyTailedQGaussian | None = None
    ) -> HeavyTailedQGaussian:
        new = self._get_checked_instance(HeavyTailedQGaussian, _instance)
        batch_shape = torch.Size(batch_shape)
        param_shape = batch_shape + self.event_shape
        new.loc = self.loc.expand(param_shape)
        new.scale = self.scale.expand(param_shape)
        new.q = self.q
        new.gaussian = self.gaussian
        new.df = self.df
        super(HeavyTailedQGaussian, new).__init__(
            batch_shape, self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def __repr__(self) -> str:
        return _params_repr(self, self.q)

    @property
    def mean(self) -> Tensor:
        if isinstance(self.q, Tensor):
            return torch.where(self.q < 2.0, self.loc, torch.full_like(self.loc, math.nan))
        if self.q < 2.0:
            return self.loc
        return torch.full_like(self.loc, math.nan)

    @property
    def mode(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        if self.gaussian:
            return self.scale.pow(2)
        if isinstance(self.q, Tensor):
            finite = self.scale.pow(2) * (self.df / (self.df - 2.0))
            fill = torch.where(self.q < 2.0, math.inf, math.nan).to(self.scale.dtype)
            return torch.where(self.q < 5.0 / 3.0, finite, fill)
        if self.q < 5.0 / 3.0:
            return self.scale.pow(2) * (self.df / (self.df - 2.0))
        fill = math.inf if self.q < 2.0 else math.nan
        return torch.full_like(self.scale, fill)

    def entropy(self) -> Tensor:
        if self.gaussian:
            return self.base_dist.entropy()
        # Student-t entropy per dimension:
        # H = log sigma + (nu+1)/2 (psi((nu+1)/2) - psi(nu/2)) + log(sqrt(nu) B(nu/2, 1/2)).
        nu = self.df
        log_beta = _lgamma(0.5 * nu) + math.lgamma(0.5) - _lgamma(0.5 * (nu + 1.0))
        if isinstance(nu, Tensor):
            nu64 = nu.double()
            psi = torch.special.digamma(torch.stack([0.5 * (nu64 + 1.0), 0.5 * nu64]))
            const = 0.5 * (nu64 + 1.0) * (psi[0] - psi[1]) + 0.5 * torch.log(nu64) + log_beta
            return (self.scale.log() + const.to(self.scale.dtype)).sum(-1)
        psi = torch.special.digamma(torch.tensor([0.5 * (nu + 1.0), 0.5 * nu], dtype=torch.float64))
        const = 0.5 * (nu + 1.0) * (psi[0] - psi[1]).item() + 0.5 * math.log(nu) + log_beta
        return (self.scale.log() + const).sum(-1)

    def rsample(self, sample_shape: _size = torch.Size()) -> Tensor:
        """``loc + scale * eps``, ``eps`` standard normal (q = 1) or ``Z / sqrt(G / nu)`` with
        ``Z`` standard normal and ``G ~ Chi2(nu)`` (q > 1): the draws of torch's ``Normal`` and
        ``StudentT``, without building them (and their argument checks) at every call."""
        shape = self._extended_shape(sample_shape)
        eps = torch.empty(shape, dtype=self.loc.dtype, device=self.loc.device).normal_()
        if self.gaussian:
            return self.loc + eps * self.scale
        df = _scalar(self.df, self.loc.dtype, self.loc.device)
        half_nu = (0.5 * df).expand(shape).contiguous()
        chi2 = torch._standard_gamma(half_nu) / 0.5
        chi2 = chi2.clamp(min=torch.finfo(chi2.dtype).tiny)
        return self.loc + self.scale * (eps * torch.rsqrt(chi2 / df))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if self.gaussian:  # torch's Normal.log_prob, summed over the event
            z2 = (value - self.loc) ** 2 / (2.0 * self.scale**2)
            return (-z2 - self.scale.log() - 0.5 * math.log(2.0 * math.pi)).sum(-1)
        nu = self.df
        z = (value - self.loc) / self.scale
        const = 0.5 * _log(nu * math.pi) + _lgamma(0.5 * nu) - _lgamma(0.5 * (nu + 1.0))
        if isinstance(const, Tensor):
            const = const.to(self.scale.dtype)
        per_dim = -0.5 * (nu + 1.0) * torch.log1p(z * z / nu) - self.scale.log() - const
        return per_dim.sum(-1)
