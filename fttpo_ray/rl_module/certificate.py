"""The safety certificate of the thin support (docs/algorithm.md §5.1): an ensemble model of the
expected immediate reward, a calibrated lower confidence bound (LCB) of the gain over the safe
action, and the certified cut of the thin support. Pure torch: fitting and calibration live in
:mod:`fttpo_ray.algorithms.fttpo.certificate`.

- :class:`RewardEnsemble`: ``E`` ReLU MLPs ``(standardised obs, action) -> r̂_e(s, a)``, stacked
  weights (one batched matmul per layer), all tensors *buffers*: no optimizer of the learner
  ever sees them, and the module's state (so every checkpoint) carries them.
- :class:`SafetyCertificate`: the ensemble plus the observation statistics it was fitted with,
  the safe action and the calibrated multiplier ``c``. The gain of a dose is
  ``ĝ(s, a) = mean_e [r̂_e(s, a) - r̂_e(s, safe)]``, its spread ``σ̂(s, a)`` the ensemble's
  standard deviation of the same differences, and ``LCB(s, a) = ĝ - c σ̂``; a dose is certified
  where ``LCB >= 0``.
- :meth:`SafetyCertificate.cut`: the thin support ``[loc - h, loc + h]`` is scanned at
  ``grid_points`` evenly spaced doses; the certified support is the longest run of consecutive
  certified grid doses (ties: the one nearest ``loc``), ``[lo, hi]``. Where no grid dose is
  certified the policy abstains and gives the safe action.
- :class:`CertifiedThinDistribution`: the acting policy: the thin q-Gaussian re-fitted to the
  certified support (same ``q``, centre ``(lo + hi) / 2``, half-width ``(hi - lo) / 2``), or the
  safe action itself (a point mass) where it abstains. Its samples never leave the thin support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from fttpo_ray.distributions import SparseQGaussian

#: Buffer names of :class:`SafetyCertificate` (part of the module state).
OBS_SHIFT = "obs_shift"
OBS_SCALE = "obs_scale"
SAFE_ACTION = "safe_action"
MULTIPLIER = "multiplier"
#: Smallest half-width of a certified support (a single certified grid dose).
MIN_HALFWIDTH = 1e-6


class RewardEnsemble(nn.Module):
    """``E`` ReLU MLPs ``in_dim -> hiddens... -> 1`` with stacked weights held as buffers.

    ``weight_l`` has shape ``[E, in, out]`` and ``bias_l`` ``[E, 1, out]``; initialised like
    ``nn.Linear`` (uniform in ``±1/sqrt(in)``), each member independently, from ``generator``.
    """

    def __init__(
        self,
        num_members: int,
        in_dim: int,
        hiddens: list[int],
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_members = num_members
        self.num_layers = len(hiddens) + 1
        for i, width in enumerate([*hiddens, 1]):
            bound = 1.0 / math.sqrt(in_dim)
            weight = (torch.rand(num_members, in_dim, width, generator=generator) * 2 - 1) * bound
            bias = (torch.rand(num_members, 1, width, generator=generator) * 2 - 1) * bound
            self.register_buffer(f"weight_{i}", weight)
            self.register_buffer(f"bias_{i}", bias)
            in_dim = width

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(weight_l, bias_l), ...]``, input layer first."""
        return [
            (getattr(self, f"weight_{i}"), getattr(self, f"bias_{i}"))
            for i in range(self.num_layers)
        ]

    def forward(
        self, x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """``[r̂_1(x), ..., r̂_E(x)]``, shape ``(E, B)``, for ``x`` of shape ``(B, in)`` (shared by
        every member) or ``(E, B, in)`` (one batch per member). ``layers`` replaces the stored
        weights (the fitting code passes its trainable copies)."""
        layers = self.layers() if layers is None else layers
        h = x if x.dim() == 3 else x.unsqueeze(0).expand(self.num_members, *x.shape)
        for i, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias, h, weight)
            if i < len(layers) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)


@dataclass(frozen=True)
class CertifiedSupport:
    """The certified cut of the thin support at a batch of states (shapes ``(B,)``)."""

    #: Ends of the certified support (``lo = hi = safe`` where it abstains).
    low: torch.Tensor
    high: torch.Tensor
    #: ``True`` where no dose of the thin support is certified.
    abstain: torch.Tensor
    #: Share of the scanned thin-support doses that are certified.
    certified_share: torch.Tensor
    #: Mean width ``c σ̂`` of the confidence bound over the scanned doses.
    bound_width: torch.Tensor


class SafetyCertificate(nn.Module):
    """Reward ensemble + calibration of the certified thin support (module docstring).

    Args:
        obs_dim: observation size.
        num_members: ensemble size ``E`` (>= 2: the bound needs a spread).
        hiddens: hidden layer widths of each member.
        grid_points: doses scanned per thin support (>= 2).
        safe_action: the safe action in normalised units (``[-1, 1]``), default 0.
    """

    def __init__(
        self,
        obs_dim: int,
        *,
        num_members: int,
        hiddens: list[int],
        grid_points: int,
        safe_action: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.grid_points = int(grid_points)
        self.ensemble = RewardEnsemble(num_members, obs_dim + 1, hiddens, generator=generator)
        self.register_buffer(OBS_SHIFT, torch.zeros(obs_dim))
        self.register_buffer(OBS_SCALE, torch.ones(obs_dim))
        self.register_buffer(SAFE_ACTION, torch.full((1,), float(safe_action)))
        # +inf until calibrated: nothing is certified by an uncalibrated certificate.
        self.register_buffer(MULTIPLIER, torch.tensor(math.inf))

    def member_rewards(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``r̂_e(s, a)``, shape ``(E, B, G)``, at raw ``obs`` ``(B, d)`` and doses ``(B, G)``."""
        batch, points = actions.shape
        x = (obs - self.obs_shift) / self.obs_scale
        x = x.unsqueeze(1).expand(batch, points, x.shape[-1])
        x = torch.cat([x, actions.unsqueeze(-1)], dim=-1).reshape(batch * points, -1)
        return self.ensemble(x).reshape(-1, batch, points)

    def gain(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ĝ, σ̂)``, each ``(B, G)``: ensemble mean and standard deviation of
        ``r̂_e(s, a) - r̂_e(s, safe)`` at doses ``actions`` ``(B, G)``."""
        safe = self.safe_action.expand(actions.shape[0], 1)
        rewards = self.member_rewards(obs, torch.cat([actions, safe], dim=-1))
        diff = rewards[..., :-1] - rewards[..., -1:]
        return diff.mean(dim=0), diff.std(dim=0, correction=1)

    def lower_bound(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``LCB(s, a) = ĝ - c σ̂`` at doses ``actions`` ``(B, G)``."""
        mean, spread = self.gain(obs, actions)
        return mean - self.multiplier * spread

    def cut(
        self, obs: torch.Tensor, loc: torch.Tensor, halfwidth: torch.Tensor
    ) -> CertifiedSupport:
        """The certified cut of the supports ``[loc - h, loc + h]`` (1-D actions: ``(B, 1)``)."""
        u = torch.linspace(-1.0, 1.0, self.grid_points, dtype=loc.dtype, device=loc.device)
        doses = loc + halfwidth * u  # (B, G)
        mean, spread = self.gain(obs, doses)
        certified = mean - self.multiplier * spread >= 0.0
        low_idx, high_idx = longest_run(certified, centre=(self.grid_points - 1) / 2.0)
        abstain = ~certified.any(dim=-1)
        rows = torch.arange(doses.shape[0], device=doses.device)
        safe = self.safe_action.expand(doses.shape[0])
        low = torch.where(abstain, safe, doses[rows, low_idx])
        high = torch.where(abstain, safe, doses[rows, high_idx])
        width = self.multiplier * spread
        return CertifiedSupport(
            low=low,
            high=high,
            abstain=abstain,
            certified_share=certified.float().mean(dim=-1),
            bound_width=width.mean(dim=-1),
        )


def longest_run(mask: torch.Tensor, centre: float) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index of the longest run of ``True`` in each row of ``mask`` ``(B, G)``;
    among equally long runs the one whose middle is nearest ``centre``. Rows without ``True``
    give ``(0, 0)``."""
    batch, points = mask.shape
    index = torch.arange(points, device=mask.device)
    m = mask.long()
    # start of the current run at each position: last index where a run began
    began = torch.where(
        mask & torch.cat([torch.ones_like(mask[:, :1]), ~mask[:, :-1]], dim=-1),
        index.expand(batch, points),
        torch.full_like(m, -1),
    )
    start = torch.cummax(began, dim=-1).values
    length = torch.where(mask, index - start + 1, torch.zeros_like(m))
    # a run's score: its length, then closeness of its middle to the centre (ends only)
    ends = mask & torch.cat([~mask[:, 1:], torch.ones_like(mask[:, :1])], dim=-1)
    middle = (start + index).double() / 2.0
    score = torch.where(
        ends,
        length.double() * (points + 1.0) - (middle - centre).abs(),
        torch.full_like(middle, -math.inf),
    )
    high = score.argmax(dim=-1)
    low = start.gather(1, high.unsqueeze(-1)).squeeze(-1).clamp(min=0)
    return low, high


class CertifiedThinDistribution(Distribution):
    """The certified acting policy (1-D): the thin q-Gaussian of index ``q`` re-fitted to the
    certified support ``[low, high]``, or the safe action where ``abstain`` (module docstring).

    ``loc`` (the deterministic action) is the support's centre, or the safe action.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(
        self, support: CertifiedSupport, q: float, multiplier: torch.Tensor | None = None
    ) -> None:
        self.certified = support
        #: The certificate's multiplier ``c`` (``nan`` where unknown).
        self.multiplier = (
            torch.tensor(math.nan, dtype=support.low.dtype) if multiplier is None else multiplier
        )
        centre = (0.5 * (support.low + support.high)).unsqueeze(-1)
        half = (0.5 * (support.high - support.low)).clamp(min=MIN_HALFWIDTH).unsqueeze(-1)
        self.thin = SparseQGaussian(centre, half, q, validate_args=False)
        self.abstain = support.abstain.unsqueeze(-1)
        self.loc = centre
        super().__init__(centre.shape[:-1], centre.shape[-1:], validate_args=False)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.real_vector

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            draws = self.thin.sample(sample_shape)
            return torch.where(self.abstain.expand_as(draws), self.loc.expand_as(draws), draws)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The re-fitted thin density; where it abstains 0 at the safe action, else ``-inf``."""
        thin = self.thin.log_prob(value)
        point = torch.where(
            (value == self.loc).all(-1), torch.zeros_like(thin), torch.full_like(thin, -math.inf)
        )
        return torch.where(self.abstain.squeeze(-1), point, thin)
