"""The reference FtTPO gradient step: the straightforward implementation the learner is checked
against (and that ``benchmarks/throughput.py`` times as its baseline).

One ``nn.Sequential`` MLP per critic and per target critic, Python ``min`` over them, one
``torch.optim.Adam`` per network group with torch's default CPU implementation (a Python loop
over the tensors), ``sum(losses).backward()``, a polyak update per critic, statistics read as
Python floats after every step. The policy and value networks are the library module's own; the
critics are copied from its :class:`~fttpo_ray.rl_module.fttpo_rl_module.CriticEnsemble`, so a
reference step and an optimised step start from the same parameters and, with the same seed,
draw the same random numbers in the same order.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from torch import nn

from fttpo_ray.algorithms.fttpo import losses
from fttpo_ray.algorithms.fttpo.fttpo_learner import (
    ADVANTAGE_MEAN,
    CRITIC,
    FAT,
    FAT_SCALE_MEAN,
    Q_MEAN,
    RAR_REPLACED_FRAC,
    TD_TARGET_MEAN,
    THIN,
    THIN_HALFWIDTH_MEAN,
    V_MEAN,
    VALUE,
    WEIGHT_MEAN,
    WEIGHT_TRUNCATED_FRAC,
)
from fttpo_ray.rl_module.fttpo_rl_module import (
    FAT_SCALE,
    LOC,
    THIN_HALFWIDTH,
    CriticEnsemble,
    FtTPOTorchRLModule,
    PolicyParams,
)
from fttpo_ray.rl_module.variants import (
    VARIANT_FAT_ONLY,
    VARIANT_FTTPO,
    VARIANT_RAR,
    VARIANT_REVERSE_KL,
)

# Written out here, not read from the variant table: the reference is independent of it.
FAT_VARIANTS = (VARIANT_FTTPO, VARIANT_FAT_ONLY)
THIN_ACTING_VARIANTS = (VARIANT_FTTPO, VARIANT_RAR, VARIANT_REVERSE_KL)


def mlps_from_ensemble(ensemble: CriticEnsemble) -> nn.ModuleList:
    """One ``Linear``/(``LayerNorm``)/``ReLU`` MLP per ensemble member, with that member's
    parameters."""
    nets = nn.ModuleList()
    for member in range(ensemble.num_members):
        layers: list[nn.Module] = []
        for i, (weight, bias) in enumerate(zip(ensemble.weights, ensemble.biases, strict=True)):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(weight[member].T)
                linear.bias.copy_(bias[member, 0])
            layers.append(linear)
            if ensemble.layer_norm and i < len(ensemble.norm_gains):
                norm = nn.LayerNorm(weight.shape[2])
                with torch.no_grad():
                    norm.weight.copy_(ensemble.norm_gains[i][member, 0])
                    norm.bias.copy_(ensemble.norm_shifts[i][member, 0])
                layers.append(norm)
            layers.append(nn.ReLU())
        nets.append(nn.Sequential(*layers[:-1]))
    return nets


def stacked(nets: nn.ModuleList) -> list[torch.Tensor]:
    """The MLPs' parameters in the ensemble's layout and order: every layer's weights
    ``[E, in, out]``, then every layer's biases ``[E, 1, out]``, then (layer norm) every hidden
    layer's gains and shifts ``[E, 1, out]``."""
    linears = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
    layers = range(len(linears[0]))
    weights = [torch.stack([net[layer].weight.T for net in linears]) for layer in layers]
    biases = [torch.stack([net[layer].bias.unsqueeze(0) for net in linears]) for layer in layers]
    norms = [[m for m in net if isinstance(m, nn.LayerNorm)] for net in nets]
    hidden = range(len(norms[0]))
    gains = [torch.stack([net[layer].weight.unsqueeze(0) for net in norms]) for layer in hidden]
    shifts = [torch.stack([net[layer].bias.unsqueeze(0) for net in norms]) for layer in hidden]
    return weights + biases + gains + shifts


class ReferenceStep:
    """The gradient step of FtTPO (every variant), written plainly; see the module docstring.

    ``fused`` and ``read_values`` switch single optimisations on (the benchmark times each one
    alone): ``fused=True`` builds fused Adam optimizers, ``read_values=False`` returns the
    statistics as tensors instead of reading them after every step.
    """

    def __init__(
        self,
        module: FtTPOTorchRLModule,
        config: Any,
        *,
        fused: bool = False,
        read_values: bool = True,
    ) -> None:
        self.module = module
        self.config = config
        self.read_values = read_values
        device = module.critics.weights[0].device
        self.critics = mlps_from_ensemble(module.critics).to(device)
        self.target_critics = (
            mlps_from_ensemble(module.target_critics).to(device).requires_grad_(False)
        )
        shared = list(module.policy_torso.parameters()) + list(module.loc_head.parameters())
        groups = [list(self.critics.parameters()), list(module.value.parameters())]
        lrs = [config.critic_lr, config.value_lr]
        if module.variant in FAT_VARIANTS:
            groups.append(shared + list(module.fat_scale_head.parameters()))
            lrs.append(config.actor_lr)
        if module.variant in THIN_ACTING_VARIANTS:
            thin = list(module.thin_scale_head.parameters())
            if hasattr(module, "thin_torso"):
                thin += list(module.thin_torso.parameters())
            groups.append(thin if module.variant == VARIANT_FTTPO else shared + thin)
            lrs.append(config.actor_lr)
        self.optimizers = [
            torch.optim.Adam(params, lr=lr, foreach=False, fused=fused or None)
            for params, lr in zip(groups, lrs, strict=True)
        ]
        if config.critic_weight_decay > 0.0:
            self.optimizers[0] = torch.optim.AdamW(
                groups[0],
                lr=config.critic_lr,
                weight_decay=config.critic_weight_decay,
                foreach=False,
                fused=fused or None,
            )

    def q_values(
        self, obs: torch.Tensor, actions: torch.Tensor, *, target: bool = False
    ) -> list[torch.Tensor]:
        x = torch.cat([(obs - self.module.obs_shift) / self.module.obs_scale, actions], dim=-1)
        nets = self.target_critics if target else self.critics
        return [net(x).squeeze(-1) for net in nets]

    def aggregate(self, qs: list[torch.Tensor]) -> torch.Tensor:
        """Minimum, or mean - kappa * (population) std, of the critics' values."""
        if self.config.critic_aggregation == "min":
            return functools.reduce(torch.minimum, qs)
        mean = sum(qs) / len(qs)
        std = torch.sqrt(sum((q - mean) ** 2 for q in qs) / len(qs))
        return mean - self.config.critic_kappa * std

    def q_min(self, obs: torch.Tensor, actions: torch.Tensor, **kwargs: bool) -> torch.Tensor:
        return self.aggregate(self.q_values(obs, actions, **kwargs))

    def frozen_q_min(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([(obs - self.module.obs_shift) / self.module.obs_scale, actions], dim=-1)
        qs = [
            torch.func.functional_call(
                net, {k: p.detach() for k, p in net.named_parameters()}, (x,)
            ).squeeze(-1)
            for net in self.critics
        ]
        return self.aggregate(qs)

    def _value(self, x: torch.Tensor) -> float | torch.Tensor:
        return x.item() if self.read_values else x

    def losses(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        module, config = self.module, self.config
        fwd_out = module.forward_train(batch)
        obs, actions = batch[Columns.OBS], batch[Columns.ACTIONS]
        params = PolicyParams(
            loc=fwd_out[LOC], fat_scale=fwd_out[FAT_SCALE], thin_halfwidth=fwd_out[THIN_HALFWIDTH]
        )
        variant = module.variant
        with torch.no_grad():
            next_params = module.policy_params(batch[Columns.NEXT_OBS])
            if variant in FAT_VARIANTS:
                next_actions = module.fat_distribution(next_params, detach=True).sample()
                next_actions = next_actions.clamp(-1.0, 1.0)
            else:
                next_actions = module.thin_distribution(next_params, detach_loc=True).sample()
            next_q = self.q_min(batch[Columns.NEXT_OBS], next_actions, target=True)
            not_done = 1.0 - batch[Columns.TERMINATEDS].float()
            target = batch[Columns.REWARDS] + config.gamma * not_done * next_q
            if variant in THIN_ACTING_VARIANTS:
                policy_actions = module.thin_distribution(params, detach_loc=True).sample()
            else:
                policy_actions = module.fat_distribution(params, detach=True).sample()
                policy_actions = policy_actions.clamp(-1.0, 1.0)
            q_target_at_policy = self.q_min(obs, policy_actions, target=True)

        q_preds = self.q_values(obs, actions)
        critic_loss = sum(0.5 * torch.mean((q - target) ** 2) for q in q_preds)
        v = module.state_value(obs)
        value_loss = 0.5 * torch.mean((v - q_target_at_policy) ** 2)
        q_min_data = self.aggregate(q_preds).detach()
        weights = losses.advantage_weights(
            q_min_data, v.detach(), config.kl_weight, config.weight_q, config.w_max
        )
        named = {CRITIC: critic_loss, VALUE: value_loss}
        metrics = {
            Q_MEAN: self._value(q_min_data.mean()),
            V_MEAN: self._value(v.detach().mean()),
            TD_TARGET_MEAN: self._value(target.mean()),
            ADVANTAGE_MEAN: self._value(weights.advantages.mean()),
            WEIGHT_MEAN: self._value(weights.weights.mean()),
            WEIGHT_TRUNCATED_FRAC: self._value(weights.truncated.float().mean()),
        }
        if variant in FAT_VARIANTS:
            fat = module.fat_distribution(params, detach=False)
            named[FAT] = -torch.mean(weights.weights * fat.log_prob(actions))
            metrics[FAT_SCALE_MEAN] = self._value(params.fat_scale.detach().mean())
        if variant == VARIANT_FTTPO:
            thin = module.thin_distribution(params, detach_loc=True)
            samples = thin.rsample((config.kl_num_samples,))
            fat_frozen = module.fat_distribution(params, detach=True)
            named[THIN] = losses.reverse_kl_estimate(
                thin.log_prob(samples), fat_frozen.log_prob(samples), config.kl_ratio_clip
            )
        elif variant == VARIANT_RAR:
            thin = module.thin_distribution(params, detach_loc=False)
            with torch.no_grad():
                inside = torch.isfinite(thin.log_prob(actions))
                candidates = thin.sample((config.rar_num_samples,))
            replaced = losses.random_action_replacement(actions, inside, candidates)
            named[THIN] = -torch.mean(weights.weights * thin.log_prob(replaced.actions))
            metrics[RAR_REPLACED_FRAC] = self._value(replaced.replaced.float().mean())
        elif variant == VARIANT_REVERSE_KL:
            thin = module.thin_distribution(params, detach_loc=False)
            samples = thin.rsample()
            q_at_samples = self.frozen_q_min(obs, samples)
            named[THIN] = torch.mean(thin.log_prob(samples) - q_at_samples / config.kl_weight)
        if variant in THIN_ACTING_VARIANTS:
            metrics[THIN_HALFWIDTH_MEAN] = self._value(params.thin_halfwidth.detach().mean())
        return named, metrics

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, Any]]:
        """One gradient step; returns the losses and diagnostics (Python floats, or tensors
        without ``read_values``)."""
        named, metrics = self.losses(batch)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        sum(named.values()).backward()
        for optimizer in self.optimizers:
            optimizer.step()
        with torch.no_grad():
            for online, target in zip(self.critics, self.target_critics, strict=True):
                torch._foreach_lerp_(
                    list(target.parameters()), list(online.parameters()), self.config.polyak
                )
        return {name: self._value(loss.detach()) for name, loss in named.items()}, metrics
