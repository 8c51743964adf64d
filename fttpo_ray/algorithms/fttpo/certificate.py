"""Fitting and calibration of the safety certificate (docs/algorithm.md §5.1).

:func:`fit_reward_ensemble` trains the :class:`~fttpo_ray.rl_module.certificate.RewardEnsemble`
of a :class:`~fttpo_ray.rl_module.certificate.SafetyCertificate` on the *training* episodes:
member ``e`` regresses the immediate reward on ``(s, a)`` (mean squared error, full batch, Adam
with decoupled weight decay) on its own bootstrap resample of the training episodes, so the
spread of the members measures how much the fit depends on which episodes were logged.

:func:`calibrate_multiplier` chooses the multiplier ``c`` of ``LCB = ĝ - c σ̂`` on the
*held-out* episodes by conformal risk control (Angelopoulos et al., "Conformal risk control",
ICLR 2024) over a grid of ``c``. The held-out label of the gain of the logged dose ``a_i`` at
``s_i`` is ``y_i = r_i - r̂(s_i, safe)`` (``r̂``: the ensemble mean), and the loss of pair ``i``
is ``L_i(c) = 1[LCB_c(s_i, a_i) >= 0 and y_i < LCB_c(s_i, a_i)]``: "certified, and the logged
reward fell below the bound". ``L_i`` does not increase with ``c``, and the smallest ``c`` with
``(n R̂(c) + 1) / (n + 1) <= alpha / 2`` gives ``E[L_{n+1}(c)] <= alpha / 2`` for a new pair
exchangeable with the held-out ones. If the reward noise has median 0 given ``(s, a)``, a dose
whose mean gain is below its bound has its logged reward below the bound with probability at
least 1/2, so the rate of falsely certified doses, ``P(LCB >= 0 and E[y | s, a] < 0)``, is at
most ``alpha``. The assumptions, and what that rate is *not*, are spelled out in
docs/algorithm.md §5.1.

The settings group ``FtTPOConfig.certificate(...)`` owns :func:`check_certificate` (every
precondition, in one place) and :func:`certificate_shape` (the module's certificate shape);
:func:`fit_certificate` fits and calibrates on the prepared split (``FtTPO.prepared``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from fttpo_ray.algorithms.offline_data import SplitTransitions
from fttpo_ray.errors import ConfigError
from fttpo_ray.rl_module.certificate import SafetyCertificate
from fttpo_ray.rl_module.fttpo_rl_module import (
    CERTIFICATE_GRID_POINTS,
    CERTIFICATE_HIDDENS,
    CERTIFICATE_MEMBERS,
    SAFE_ACTION,
)
from fttpo_ray.rl_module.variants import Policy, variant_spec, variants_acting

logger = logging.getLogger(__name__)

#: Multipliers ``c`` searched by the calibration: 0 and a geometric grid up to 1 000.
MULTIPLIER_GRID = (0.0, *np.geomspace(0.01, 1000.0, 301).tolist())
#: Full-batch Adam steps of each ensemble member, learning rate and weight decay.
FIT_STEPS = 500
FIT_LR = 5e-3
FIT_WEIGHT_DECAY = 1e-4


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate_multiplier` chose and saw on the held-out pairs."""

    multiplier: float
    #: ``R̂(c)``: the held-out share of certified pairs whose reward fell below the bound.
    held_out_risk: float
    #: Share of the held-out pairs (logged doses) certified at ``c``.
    held_out_certified: float
    held_out_pairs: int
    alpha: float


def _standardise(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    obs = np.asarray(obs, dtype=np.float64)
    return obs.mean(axis=0), np.maximum(obs.std(axis=0), 1e-6)


def fit_reward_ensemble(
    certificate: SafetyCertificate,
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    episode_ids: np.ndarray,
    *,
    seed: int,
    steps: int = FIT_STEPS,
) -> float:
    """Fit the ensemble on the training transitions (each member on a bootstrap resample of
    the episodes); sets the certificate's observation statistics. Returns the mean squared
    training error of the ensemble mean."""
    if actions.ndim != 2 or actions.shape[1] != 1:
        raise ConfigError(
            f"`safety_certificate` needs a 1-D action space; got actions of shape "
            f"{tuple(actions.shape[1:])}: set safety_certificate=False"
        )
    generator = np.random.default_rng(seed)
    shift, scale = _standardise(obs)
    certificate.obs_shift.copy_(torch.as_tensor(shift, dtype=torch.float32))
    certificate.obs_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
    x = np.concatenate([(obs - shift) / scale, actions], axis=1)
    x_t = torch.as_tensor(x, dtype=torch.float32)
    y_t = torch.as_tensor(rewards, dtype=torch.float32)
    episodes = np.unique(episode_ids)
    rows_of = {e: np.flatnonzero(episode_ids == e) for e in episodes}
    members = certificate.ensemble.num_members
    # bootstrap: each member sees its own resample of the episodes (as row weights)
    weights = np.zeros((members, len(rewards)), dtype=np.float32)
    for e in range(members):
        for episode in generator.choice(episodes, size=len(episodes), replace=True):
            weights[e, rows_of[episode]] += 1.0
    w_t = torch.as_tensor(weights / weights.sum(axis=1, keepdims=True))
    torch_gen = torch.Generator().manual_seed(int(generator.integers(2**62)))
    fresh = type(certificate.ensemble)(
        members,
        x.shape[1],
        [w.shape[-1] for w, _ in certificate.ensemble.layers()[:-1]],
        generator=torch_gen,
    )
    params = [t.clone().requires_grad_(True) for pair in fresh.layers() for t in pair]
    layers = [(params[2 * i], params[2 * i + 1]) for i in range(len(params) // 2)]
    optimizer = torch.optim.AdamW(params, lr=FIT_LR, weight_decay=FIT_WEIGHT_DECAY)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            pred = certificate.ensemble(x_t, layers)
            loss = ((pred - y_t) ** 2 * w_t).sum(dim=1).sum()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        for (weight, bias), (new_w, new_b) in zip(
            certificate.ensemble.layers(), layers, strict=True
        ):
            weight.copy_(new_w)
            bias.copy_(new_b)
        mse = float(((certificate.ensemble(x_t).mean(dim=0) - y_t) ** 2).mean())
    logger.info("Certificate: reward ensemble of %d fitted, training MSE %.3f", members, mse)
    return mse


def calibrate_multiplier(
    certificate: SafetyCertificate,
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    *,
    alpha: float,
) -> Calibration:
    """Conformal risk control of ``c`` on held-out pairs (module docstring); sets it.

    Where no ``c`` of the grid controls the risk (too few held-out pairs for ``alpha``), the
    multiplier is ``+inf``: nothing is certified and the policy always gives the safe action.
    """
    n = len(rewards)
    if n == 0:
        raise ConfigError(
            "`safety_certificate` calibrates on held-out episodes; got none: set "
            "held_out_fraction > 0"
        )
    obs_t = torch.as_tensor(obs, dtype=torch.float32)
    act_t = torch.as_tensor(actions, dtype=torch.float32).reshape(n, 1)
    with torch.no_grad():
        mean, spread = certificate.gain(obs_t, act_t)
        safe = certificate.safe_action.expand(n, 1)
        safe_reward = certificate.member_rewards(obs_t, safe).mean(dim=0)
    mean, spread = mean[:, 0].double().numpy(), spread[:, 0].double().numpy()
    labels = rewards.astype(np.float64) - safe_reward[:, 0].double().numpy()
    target = alpha / 2.0
    chosen, risk, certified_share = math.inf, 0.0, 0.0
    for c in sorted(MULTIPLIER_GRID):
        bound = mean - c * spread
        certified = bound >= 0.0
        loss = certified & (labels < bound)
        empirical = float(loss.mean())
        if (n * empirical + 1.0) / (n + 1.0) <= target:
            chosen, risk, certified_share = c, empirical, float(certified.mean())
            break
    certificate.multiplier.fill_(chosen)
    logger.info(
        "Certificate calibrated on %d held-out pairs at alpha=%g: c=%g, %.1f%% of logged "
        "doses certified",
        n,
        alpha,
        chosen,
        100.0 * certified_share,
    )
    return Calibration(
        multiplier=chosen,
        held_out_risk=risk,
        held_out_certified=certified_share,
        held_out_pairs=n,
        alpha=alpha,
    )


def check_certificate(config: Any) -> None:
    """The certificate's preconditions (``.certificate(enabled=True)``), all checked here.

    It cuts the thin policy's support (a thin-acting variant), is calibrated on held-out
    episodes (``held_out_fraction > 0``) and scans a dose grid (a 1-D action space: checked
    once the spaces are known, i.e. when the algorithm is set up).
    """
    if config.safety_certificate is not True:
        return
    if variant_spec(config.variant).acting_policy is not Policy.THIN:
        raise ConfigError(
            "`safety_certificate` cuts the acting thin policy's support; in variant "
            f"{config.variant!r} no thin policy acts: use one of "
            f"{', '.join(variants_acting(Policy.THIN))}"
        )
    if config.held_out_fraction == 0.0:
        raise ConfigError(
            "`safety_certificate` is calibrated on held-out episodes; got "
            "held_out_fraction=0: set it in (0, 1), e.g. 0.2"
        )
    space = config.action_space
    if space is not None and getattr(space, "shape", None) != (1,):
        raise ConfigError(
            "`safety_certificate` scans a dose grid and needs a 1-D action space; "
            f"'{config.dataset_id}' has actions of shape {getattr(space, 'shape', None)}: "
            "set safety_certificate=False"
        )


def certificate_shape(config: Any) -> dict[str, Any] | None:
    """The module's certificate shape (``None`` without one); the safe action normalised to the
    module's [-1, 1] actions with the action space's bounds, where they are known."""
    if not config.safety_certificate:
        return None
    safe = float(config.safe_action)
    space = config.action_space
    if isinstance(space, gym.spaces.Box) and np.all(np.isfinite(space.low)):
        low, high = float(space.low.reshape(-1)[0]), float(space.high.reshape(-1)[0])
        safe = 2.0 * (safe - low) / (high - low) - 1.0
    return {
        CERTIFICATE_MEMBERS: int(config.certificate_members),
        CERTIFICATE_HIDDENS: [int(w) for w in config.certificate_hiddens],
        CERTIFICATE_GRID_POINTS: int(config.certificate_grid_points),
        SAFE_ACTION: safe,
    }


def fit_certificate(
    config: Any, split: SplitTransitions
) -> tuple[dict[str, torch.Tensor], Calibration]:
    """The fitted and calibrated certificate of a set-up :class:`FtTPOConfig`: its state (for
    ``SafetyCertificate.load_state_dict``) and the calibration. Trains on the training episodes
    of ``split`` and calibrates on its held-out ones; seeded by ``config.split_seed``."""
    transitions, held_out = split.transitions, split.held_out
    shape = certificate_shape(config)
    generator = torch.Generator().manual_seed(config.split_seed)
    certificate = SafetyCertificate(
        transitions.obs_dim,
        num_members=shape[CERTIFICATE_MEMBERS],
        hiddens=shape[CERTIFICATE_HIDDENS],
        grid_points=shape[CERTIFICATE_GRID_POINTS],
        safe_action=shape[SAFE_ACTION],
        generator=generator,
    )
    train = split.train
    fit_reward_ensemble(
        certificate,
        transitions.obs[train],
        transitions.actions[train],
        transitions.rewards[train],
        transitions.episode_ids[train],
        seed=config.split_seed,
    )
    calibration = calibrate_multiplier(
        certificate,
        transitions.obs[held_out],
        transitions.actions[held_out],
        transitions.rewards[held_out],
        alpha=float(config.certificate_alpha),
    )
    return certificate.state_dict(), calibration


def recalibrate(
    certificate: SafetyCertificate, split: SplitTransitions, alpha: float
) -> Calibration:
    """Calibrate a fitted certificate again at another ``alpha`` on the held-out episodes of
    ``split`` (``FtTPO.prepared.split``; the ensemble is unchanged): one trained module, several
    alphas."""
    transitions, held_out = split.transitions, split.held_out
    return calibrate_multiplier(
        certificate,
        transitions.obs[held_out],
        transitions.actions[held_out],
        transitions.rewards[held_out],
        alpha=alpha,
    )
