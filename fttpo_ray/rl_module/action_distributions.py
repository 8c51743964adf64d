"""RLlib ``TorchDistribution`` adapters over the q-Gaussians of :mod:`fttpo_ray.distributions`.

RLlib builds action distributions with ``cls.from_logits(action_dist_inputs)``, which has no room
for a hyper-parameter, so the entropic index ``q`` is a class attribute: :func:`thin_dist_cls`
and :func:`fat_dist_cls` return (cached) subclasses with ``q`` fixed. The inputs are already the
distribution's parameters — the RLModule squashes the location into the action box and bounds
the scale — concatenated as ``[loc, scale]`` along the last axis.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.distribution.torch.torch_distribution import (
    TorchDeterministic,
    TorchDistribution,
)
from ray.rllib.utils.annotations import override

from fttpo_ray.distributions import HeavyTailedQGaussian, SparseQGaussian
from fttpo_ray.rl_module.certificate import CertifiedSupport, CertifiedThinDistribution


class _QGaussianAdapter(TorchDistribution):
    """Common part: ``[loc, scale]`` inputs, event = last axis, deterministic action = ``loc``."""

    q: float = float("nan")

    @override(TorchDistribution)
    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        self.loc = loc
        self.scale = scale
        super().__init__(loc=loc, scale=scale)

    @classmethod
    @override(TorchDistribution)
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> _QGaussianAdapter:
        loc, scale = logits.chunk(2, dim=-1)
        return cls(loc=loc, scale=scale)

    @staticmethod
    @override(Distribution)
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"q-Gaussian policies need a Box action space; got {space}")
        return int(np.prod(space.shape)) * 2

    @override(Distribution)
    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self.loc)


class TorchSparseQGaussian(_QGaussianAdapter):
    """The thin (sparse, q < 1) policy's action distribution; ``scale`` = support half-width."""

    q = 0.0

    @override(TorchDistribution)
    def _get_torch_distribution(self, loc: torch.Tensor, scale: torch.Tensor) -> SparseQGaussian:
        return SparseQGaussian(loc, scale, self.q, validate_args=False)


class TorchHeavyTailedQGaussian(_QGaussianAdapter):
    """The fat (1 <= q < 3) policy's action distribution; ``scale`` = Student-t scale."""

    q = 2.0

    @override(TorchDistribution)
    def _get_torch_distribution(
        self, loc: torch.Tensor, scale: torch.Tensor
    ) -> HeavyTailedQGaussian:
        return HeavyTailedQGaussian(loc, scale, self.q, validate_args=False)


@functools.cache
def thin_dist_cls(q: float) -> type[TorchSparseQGaussian]:
    """The sparse adapter class with entropic index ``q`` (< 1)."""
    return type(f"TorchSparseQGaussian_q{q:g}", (TorchSparseQGaussian,), {"q": float(q)})


@functools.cache
def fat_dist_cls(q: float) -> type[TorchHeavyTailedQGaussian]:
    """The heavy-tailed adapter class with entropic index ``q`` (1 <= q < 3)."""
    return type(f"TorchHeavyTailedQGaussian_q{q:g}", (TorchHeavyTailedQGaussian,), {"q": float(q)})


class TorchCertifiedThin(TorchDistribution):
    """The certified acting policy (docs/algorithm.md §5.1): inputs ``[low, high, abstain]`` of
    the certified support (1-D actions); the thin q-Gaussian re-fitted to ``[low, high]``, or
    the safe action (``low = high``) where ``abstain`` is 1."""

    q: float = 0.0

    @override(TorchDistribution)
    def __init__(self, low: torch.Tensor, high: torch.Tensor, abstain: torch.Tensor) -> None:
        self.low, self.high, self.abstain = low, high, abstain
        super().__init__(low=low, high=high, abstain=abstain)

    @override(TorchDistribution)
    def _get_torch_distribution(
        self, low: torch.Tensor, high: torch.Tensor, abstain: torch.Tensor
    ) -> CertifiedThinDistribution:
        nan = torch.full_like(low, float("nan"))
        support = CertifiedSupport(low, high, abstain > 0.5, nan, nan)
        return CertifiedThinDistribution(support, self.q)

    @classmethod
    @override(TorchDistribution)
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> TorchCertifiedThin:
        return cls(low=logits[..., 0], high=logits[..., 1], abstain=logits[..., 2])

    @staticmethod
    @override(Distribution)
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        if not (isinstance(space, gym.spaces.Box) and space.shape == (1,)):
            raise ValueError(f"the certified thin policy needs a 1-D Box action space; got {space}")
        return 3

    @override(Distribution)
    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self._dist.loc)


@functools.cache
def certified_dist_cls(q: float) -> type[TorchCertifiedThin]:
    """The certified adapter class with the thin policy's entropic index ``q`` (< 1)."""
    return type(f"TorchCertifiedThin_q{q:g}", (TorchCertifiedThin,), {"q": float(q)})
