"""Candidate actions of a 1-D action space, as the environments' oracles take them."""

from __future__ import annotations

from typing import Any

import numpy as np

from fttpo_ray.errors import EnvironmentSpecError, NonFiniteError


def action_vector(actions: Any, *, what: str, finite: bool = False) -> np.ndarray:
    """``actions`` as a float64 vector ``(N,)``: a scalar, ``(N,)`` or ``(N, 1)``.

    ``what`` names them in the error (e.g. ``"doses"``); with ``finite`` a NaN or inf is
    refused too.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim != 1:
        raise EnvironmentSpecError(
            f"{what} must have shape (N,) or (N, 1) for a 1-D action space; got shape "
            f"{a.shape}; reshape them"
        )
    if finite and not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{what} must be finite; got {a}; check the policy output")
    return a
