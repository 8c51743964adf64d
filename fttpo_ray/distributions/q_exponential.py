"""Tsallis q-exponential and q-logarithm, vectorised over tensors.

See ``docs/algorithm.md`` §1 (the q-exponential family); the definitions are the
standard ones of Tsallis statistics, as used by Zhu, Wang, Nagai (ICLR 2025, arXiv 2501.14373
and arXiv 2408.07245) and Martins et al. 2022 (arXiv 2108.01988)::

    exp_q(x) = [1 + (1 - q) x]_+ ^ (1 / (1 - q))      (q != 1),    exp_1 = exp
    ln_q(x)  = (x ^ (1 - q) - 1) / (1 - q)   (x > 0)  (q != 1),    ln_1  = ln

``ln_q`` is the inverse of ``exp_q`` on the range of ``exp_q``. For q < 1, ``exp_q`` is exactly
zero once ``x <= -1 / (1 - q)``: this cut-off is what makes q < 1 distributions sparse.

Numerical habit: every branch that could produce a NaN (a negative base raised to a fractional
power, ``0 ** negative``) is evaluated on a *safe* input selected by ``torch.where`` and then
masked out, so that neither values nor gradients are NaN at or beyond the cut-off (the
"double ``where``" pattern; masking only the output is not enough because autograd multiplies the
unselected branch's NaN/inf gradient by zero, see pytorch/pytorch issue #23395).
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

__all__ = ["exp_q", "log_q"]


def _check_q(q: float, name: str) -> float:
    """Return ``q`` as a finite Python float or raise a ``ValueError`` naming it."""
    if isinstance(q, bool) or not isinstance(q, Real):
        raise ValueError(
            f"{name}: `q` must be a real Python number (float); got {q!r} of type "
            f"{type(q).__name__}"
        )
    q = float(q)
    if not math.isfinite(q):
        raise ValueError(f"{name}: `q` must be finite; got {q}")
    return q


def _as_float_tensor(x: Tensor | float) -> Tensor:
    """Return ``x`` as a floating-point tensor (integers become the default dtype)."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return x


def exp_q(x: Tensor | float, q: float) -> Tensor:
    r"""Tsallis q-exponential :math:`\exp_q(x) = [1 + (1-q)x]_+^{1/(1-q)}`, elementwise.

    Args:
        x: input tensor (or number); integer tensors are promoted to the default dtype.
        q: the entropic index, a finite Python float.

    Returns:
        A tensor of the shape and dtype of ``x``:

        * ``q == 1``: exactly ``torch.exp(x)``.
        * ``q < 1``: ``[1 + (1-q) x] ** (1/(1-q))`` where ``x > -1/(1-q)`` and exactly ``0``
          where ``x <= -1/(1-q)`` (the cut-off). The gradient there is ``0``, never NaN.
        * ``q > 1``: ``[1 + (1-q) x] ** (1/(1-q))`` where ``x < 1/(q-1)``; the function has a
          pole at ``x = 1/(q-1)`` and is ``+inf`` at and beyond it (gradient ``0`` there).

        NaN inputs give NaN outputs.

    Raises:
        ValueError: if ``q`` is not a finite real number.
    """
    q = _check_q(q, "exp_q")
    x = _as_float_tensor(x)
    if q == 1.0:
        return torch.exp(x)
    one_minus_q = 1.0 - q
    base = 1.0 + one_minus_q * x
    valid = base > 0
    safe_base = torch.where(valid, base, torch.ones_like(base))
    value = safe_base.pow(1.0 / one_minus_q)
    beyond = torch.zeros_like(base) if q < 1.0 else torch.full_like(base, math.inf)
    # NaN inputs fail ``base > 0`` and would otherwise be mapped to the cut-off value.
    beyond = torch.where(torch.isnan(base), base, beyond)
    return torch.where(valid, value, beyond)


def log_q(x: Tensor | float, q: float) -> Tensor:
    r"""Tsallis q-logarithm :math:`\ln_q(x) = (x^{1-q} - 1)/(1-q)`, elementwise; inverse of exp_q.

    Defined for ``x > 0``. At the domain's edges it follows ``torch.log``'s conventions,
    generalised to the q-case:

    * ``x == 0`` gives the limit ``lim_{x -> 0+} ln_q(x)``: ``-inf`` for ``q >= 1`` and the
      finite value ``-1/(1-q)`` for ``q < 1`` (which is exactly where ``exp_q`` reaches 0, so
      ``exp_q(log_q(0)) == 0`` stays true);
    * ``x < 0`` gives NaN (as ``torch.log`` does), also for q where ``x ** (1-q)`` would be
      defined for negative ``x`` (e.g. q = -1);
    * ``x == +inf`` gives ``+inf`` for ``q < 1`` and ``1/(q-1)`` for ``q > 1``.

    Gradients at ``x <= 0`` are ``0`` (never NaN). ``q == 1`` has exactly the values of
    ``torch.log(x)`` (with the same never-NaN gradient convention).

    Args:
        x: input tensor (or number); integer tensors are promoted to the default dtype.
        q: the entropic index, a finite Python float.

    Raises:
        ValueError: if ``q`` is not a finite real number.
    """
    q = _check_q(q, "log_q")
    x = _as_float_tensor(x)
    positive = x > 0
    safe_x = torch.where(positive, x, torch.ones_like(x))
    if q == 1.0:
        value = torch.log(safe_x)
        at_zero = -math.inf
    else:
        one_minus_q = 1.0 - q
        value = (safe_x.pow(one_minus_q) - 1.0) / one_minus_q
        at_zero = -1.0 / one_minus_q if q < 1.0 else -math.inf
    edge = torch.where(x == 0, torch.full_like(x, at_zero), torch.full_like(x, math.nan))
    return torch.where(positive, value, edge)
