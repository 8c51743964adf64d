"""The losses of Fat-to-Thin Policy Optimization, as pure functions of tensors.

Zhu, Wang, Nagai, "Fat-to-Thin Policy Optimization: Offline RL with Sparse Policies", ICLR 2025
(arXiv 2501.14373), §4; described in ``docs/algorithm.md`` §2 (FtTPO) and §3 (the
sparse baselines RAR and reverse KL). Each function states its objective in its docstring and
depends on torch only: the learner selects heads, calls these, and logs the results.

Notation: ``s`` state, ``a`` dataset action, ``b ~ pi_theta(.|s)`` a thin-policy sample,
``Q1, Q2`` critics, ``Qbar`` their polyak-averaged targets, ``V`` the state-value net,
``pi_phi`` the heavy-tailed ("fat") proposal and ``pi_theta`` the sparse ("thin") policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fttpo_ray.distributions import exp_q

#: Lower clip of the advantage weights (docs/algorithm.md §2): weights at this value count as
#: "truncated".
WEIGHT_MIN = 1e-8


def td_target(
    rewards: torch.Tensor,
    terminateds: torch.Tensor,
    next_q_target_min: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Critic target ``y = r + gamma * (1 - d) * Qbar_min(s', a')`` with ``a' ~ pi_phi(.|s')``.

    ``d`` is the *termination* flag only: a truncated transition still bootstraps. The result
    carries no gradient.
    """
    not_done = 1.0 - terminateds.to(rewards.dtype)
    return (rewards + gamma * not_done * next_q_target_min).detach()


def critic_loss(q_preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_Q = sum_i 1/2 E[(Q_i(s, a) - y)^2]`` — summed over the ``E`` critics.

    ``q_preds`` has shape ``(E, B)`` (one row per critic of the ensemble), ``target`` ``(B,)``.
    Summing (rather than averaging) gives each critic the same gradient it would get from its own
    loss ``1/2 E[(Q_i - y)^2]``, so any number of critics train at the same effective rate.
    """
    return 0.5 * torch.mean((q_preds - target.detach()) ** 2, dim=-1).sum()


def value_loss(v: torch.Tensor, q_target_min_at_policy: torch.Tensor) -> torch.Tensor:
    """``L_V = 1/2 E[(V(s) - Qbar_min(s, b))^2]`` with ``b ~ pi_theta(.|s)`` (no gradient to b)."""
    return 0.5 * torch.mean((v - q_target_min_at_policy.detach()) ** 2)


@dataclass(frozen=True)
class AdvantageWeights:
    """Advantage weights ``w`` and diagnostics (all without gradient)."""

    weights: torch.Tensor
    advantages: torch.Tensor
    truncated: torch.Tensor
    """Boolean mask: the q-exponential gave (numerically) zero weight, clipped up to WEIGHT_MIN."""


def advantage_weights(
    q_min: torch.Tensor,
    v: torch.Tensor,
    kl_weight: float,
    weight_q: float,
    w_max: float,
) -> AdvantageWeights:
    """``w = clip(exp_{q_w}((Q_min(s,a) - V(s)) / tau), WEIGHT_MIN, w_max)`` (no gradient).

    With the default ``q_w = 0`` this is ``[1 + A / tau]_+``: actions whose advantage is below
    ``-tau`` get (almost) zero weight; ``q_w = 1`` is the exponential weighting of AWR/AWAC.
    """
    advantages = (q_min - v).detach()
    raw = exp_q(advantages / kl_weight, weight_q)
    truncated = raw <= WEIGHT_MIN
    weights = raw.clamp(min=WEIGHT_MIN, max=w_max)
    return AdvantageWeights(weights=weights, advantages=advantages, truncated=truncated)


def weighted_log_likelihood_loss(log_prob: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``L = -E[w * log pi(a|s)]`` — the fat proposal's loss on dataset actions (§2 of
    docs/algorithm.md).

    The fat policy has full support, so ``log pi_phi(a|s)`` is finite for every dataset action.
    Also the RAR baseline's loss, where ``a`` is the (replaced) action under the thin policy.
    """
    return -torch.mean(weights.detach() * log_prob)


def reverse_kl_estimate(
    thin_log_prob: torch.Tensor,
    fat_log_prob: torch.Tensor,
    ratio_clip: float = 1e4,
) -> torch.Tensor:
    """``KL(pi_theta || pi_phi) ~= E_{b ~ pi_theta}[r - 1 - log r]``, ``r = pi_phi(b)/pi_theta(b)``.

    The thin actor's knowledge-injection loss (docs/algorithm.md §2). ``b`` are
    reparameterised samples of the thin policy and both log-densities are evaluated at them
    (never at dataset actions, where the thin density may be zero). ``r - 1 - log r >= 0`` is
    the low-variance unbiased estimator of Schulman (2020, "Approximating KL divergence");
    ``r`` is clipped at ``ratio_clip`` (in log space, so the clip also bounds ``log r``). The fat
    policy's parameters must be detached by the caller: this loss trains only the thin policy.
    """
    log_ratio = (fat_log_prob - thin_log_prob).clamp(max=math.log(ratio_clip))
    return torch.mean(torch.exp(log_ratio) - 1.0 - log_ratio)


def reverse_kl_to_boltzmann_loss(
    thin_log_prob: torch.Tensor,
    q_min_at_samples: torch.Tensor,
    kl_weight: float,
) -> torch.Tensor:
    """Reverse-KL baseline: ``L = E_{b ~ pi_theta}[log pi_theta(b|s) - Q_min(s, b) / tau]``.

    Minimising it is minimising ``KL(pi_theta || exp(Q / tau) / Z)``. ``b`` is reparameterised,
    and ``Q_min(s, b)`` must carry gradient *to b* (but not to the critics' parameters): the
    authors' version detached Q and so had no policy-improvement signal (docs/algorithm.md §7).
    """
    return torch.mean(thin_log_prob - q_min_at_samples / kl_weight)


@dataclass(frozen=True)
class ReplacedActions:
    """Result of random action replacement."""

    actions: torch.Tensor
    replaced: torch.Tensor
    """Boolean mask over the batch: the dataset action lay outside the thin support."""


def random_action_replacement(
    actions: torch.Tensor,
    inside_support: torch.Tensor,
    candidates: torch.Tensor,
) -> ReplacedActions:
    """RAR (docs/algorithm.md §3): a dataset action outside the thin support is replaced by the
    nearest (L2) of ``M`` thin-policy samples; actions inside the support are kept.

    Args:
        actions: dataset actions, shape ``(B, n)``.
        inside_support: boolean ``(B,)``, whether each action lies inside the thin support.
        candidates: thin-policy samples, shape ``(M, B, n)`` (treated as data: no gradient).
    """
    candidates = candidates.detach()
    distances = torch.sum((candidates - actions.unsqueeze(0)) ** 2, dim=-1)
    nearest = candidates.gather(
        0, distances.argmin(dim=0).view(1, -1, 1).expand(1, *actions.shape)
    ).squeeze(0)
    replaced = ~inside_support
    return ReplacedActions(
        actions=torch.where(replaced.unsqueeze(-1), nearest, actions), replaced=replaced
    )
