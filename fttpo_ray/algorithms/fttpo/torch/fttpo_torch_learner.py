"""Torch learner of FtTPO (spec ``shared/spec/fttpo.md`` §2; baselines §3).

One gradient step on a batch ``(s, a, r, s', d)``, in paper order: value, critic, fat proposal,
thin actor, then the polyak update of the target critics.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.typing import ModuleID, ParamDict

from fttpo_ray.algorithms.fttpo import losses
from fttpo_ray.algorithms.fttpo.fttpo_learner import (
    ADVANTAGE_MEAN,
    CRITIC,
    FAT,
    FAT_SCALE_MEAN,
    GRAD_STEPS,
    LOSS_KEYS,
    Q_MEAN,
    RAR_REPLACED_FRAC,
    TD_TARGET_MEAN,
    THIN,
    THIN_HALFWIDTH_MEAN,
    V_MEAN,
    VALUE,
    WEIGHT_MEAN,
    WEIGHT_TRUNCATED_FRAC,
    FtTPOLearner,
)
from fttpo_ray.errors import NonFiniteError
from fttpo_ray.rl_module.fttpo_rl_module import (
    FAT_SCALE,
    FAT_VARIANTS,
    LOC,
    THIN_ACTING_VARIANTS,
    THIN_HALFWIDTH,
    VARIANT_FTTPO,
    VARIANT_RAR,
    VARIANT_REVERSE_KL,
    FtTPOTorchRLModule,
    PolicyParams,
)

logger = logging.getLogger(__name__)

BATCH_COLUMNS = (
    Columns.OBS,
    Columns.ACTIONS,
    Columns.REWARDS,
    Columns.NEXT_OBS,
    Columns.TERMINATEDS,
)


def fttpo_losses(
    module: FtTPOTorchRLModule,
    batch: dict[str, Any],
    fwd_out: dict[str, Any],
    config: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """All losses of one gradient step (keyed by optimizer name) and diagnostics.

    ``config`` needs ``gamma, kl_weight, weight_q, w_max, kl_num_samples, kl_ratio_clip,
    rar_num_samples``. Pure with respect to the learner: tests call it on a bare module.
    """
    obs = batch[Columns.OBS]
    actions = batch[Columns.ACTIONS]
    params = PolicyParams(
        loc=fwd_out[LOC], fat_scale=fwd_out[FAT_SCALE], thin_halfwidth=fwd_out[THIN_HALFWIDTH]
    )
    variant = module.variant
    thin_acts = variant in THIN_ACTING_VARIANTS

    # Targets, without gradient: TD target with a' ~ proposal (fat, or thin if there is
    # none), value target with b ~ the acting policy.
    with torch.no_grad():
        next_params = module.policy_params(batch[Columns.NEXT_OBS])
        if variant in FAT_VARIANTS:
            next_actions = module.fat_distribution(next_params, detach=True).sample()
            next_actions = next_actions.clamp(-1.0, 1.0)
        else:
            next_actions = module.thin_distribution(next_params, detach_loc=True).sample()
        next_q = module.q_min(batch[Columns.NEXT_OBS], next_actions, target=True)
        target = losses.td_target(
            batch[Columns.REWARDS], batch[Columns.TERMINATEDS], next_q, config.gamma
        )
        if thin_acts:
            policy_actions = module.thin_distribution(params, detach_loc=True).sample()
        else:
            policy_actions = module.fat_distribution(params, detach=True).sample()
            policy_actions = policy_actions.clamp(-1.0, 1.0)
        q_target_at_policy = module.q_min(obs, policy_actions, target=True)

    q_preds = module.q_values(obs, actions)
    critic_loss = losses.critic_loss(q_preds, target)
    v = module.state_value(obs)
    value_loss = losses.value_loss(v, q_target_at_policy)

    q_min_data = (torch.minimum(*q_preds) if len(q_preds) == 2 else q_preds[0]).detach()
    weights = losses.advantage_weights(
        q_min_data, v.detach(), config.kl_weight, config.weight_q, config.w_max
    )

    named = {CRITIC: critic_loss, VALUE: value_loss}
    metrics: dict[str, torch.Tensor] = {
        Q_MEAN: q_min_data.mean(),
        V_MEAN: v.detach().mean(),
        TD_TARGET_MEAN: target.mean(),
        ADVANTAGE_MEAN: weights.advantages.mean(),
        WEIGHT_MEAN: weights.weights.mean(),
        WEIGHT_TRUNCATED_FRAC: weights.truncated.float().mean(),
    }

    if variant in FAT_VARIANTS:
        fat = module.fat_distribution(params, detach=False)
        named[FAT] = losses.weighted_log_likelihood_loss(fat.log_prob(actions), weights.weights)
        metrics[FAT_SCALE_MEAN] = params.fat_scale.detach().mean()

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
        named[THIN] = losses.weighted_log_likelihood_loss(
            thin.log_prob(replaced.actions), weights.weights
        )
        metrics[RAR_REPLACED_FRAC] = replaced.replaced.float().mean()
    elif variant == VARIANT_REVERSE_KL:
        thin = module.thin_distribution(params, detach_loc=False)
        samples = thin.rsample()
        q_at_samples = module.q_min(obs, samples, frozen=True)
        named[THIN] = losses.reverse_kl_to_boltzmann_loss(
            thin.log_prob(samples), q_at_samples, config.kl_weight
        )
    if thin_acts:
        metrics[THIN_HALFWIDTH_MEAN] = params.thin_halfwidth.detach().mean()

    return named, metrics


class FtTPOTorchLearner(FtTPOLearner, TorchLearner):
    """FtTPO's learner: four optimizers, losses from :mod:`..losses`, per-step polyak update.

    Deviations from a literal reading of the paper, and why:

    - **One backward pass.** The four losses are summed and differentiated once (RLlib's
      default ``compute_gradients``), then every optimizer steps. This equals running the four
      updates one after another *on the same parameters* (Jacobi order): every cross-network
      input is detached (TD and value targets, advantages, the fat policy inside the thin loss,
      the critics inside the reverse-KL loss), so each loss reaches only its own optimizer's
      parameters. ``tests/algorithms/test_fttpo_learner.py`` checks this gradient for gradient.
      It differs from the authors' Gauss–Seidel order (each update seeing the previous one's
      new parameters) by one step of staleness; one backward pass is what multi-learner DDP
      needs.
    - **Polyak update after every gradient step**, inside :meth:`apply_gradients` (RLlib's
      ``after_gradient_based_update`` runs once per ``update()`` call, i.e. once per iteration).
    - **Non-finite values stop training** with :class:`NonFiniteError` naming the loss (or the
      batch column) and the gradient step, instead of RLlib's zeroing of NaN gradients, so a
      NaN never reaches a checkpoint. One fused check per step replaces RLlib's two checks per
      parameter tensor.
    """

    def build(self) -> None:
        super().build()
        self._grad_step = 0
        self._last_batch: dict[str, torch.Tensor] | None = None

    # ---- optimizers ----------------------------------------------------------------------------

    def configure_optimizers_for_module(self, module_id: ModuleID, config=None) -> None:
        module: FtTPOTorchRLModule = self._module[module_id]
        groups: dict[str, tuple[list[torch.nn.Parameter], float]] = {}

        critic_params = list(module.q1.parameters())
        if module.twin_q:
            critic_params += list(module.q2.parameters())
        groups[CRITIC] = (critic_params, config.critic_lr)
        groups[VALUE] = (list(module.value.parameters()), config.value_lr)

        shared = list(module.policy_torso.parameters()) + list(module.loc_head.parameters())
        if module.variant in FAT_VARIANTS:
            groups[FAT] = (shared + list(module.fat_scale_head.parameters()), config.actor_lr)
        if module.variant in THIN_ACTING_VARIANTS:
            thin = list(module.thin_scale_head.parameters())
            if hasattr(module, "thin_torso"):
                thin += list(module.thin_torso.parameters())
            if module.variant != VARIANT_FTTPO:
                thin = shared + thin
            groups[THIN] = (thin, config.actor_lr)

        for name, (params, lr) in groups.items():
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.Adam(params),
                params=params,
                lr_or_lr_schedule=lr,
            )

    # ---- losses --------------------------------------------------------------------------------

    def compute_loss_for_module(
        self,
        *,
        module_id: ModuleID,
        config=None,
        batch: dict[str, Any],
        fwd_out: dict[str, Any],
    ) -> torch.Tensor:
        module: FtTPOTorchRLModule = self._module[module_id].unwrapped()
        named, metrics = fttpo_losses(module, batch, fwd_out, config)
        total = sum(named.values())
        if not torch.isfinite(total):
            self._raise_non_finite(batch, named)
        for name, loss in named.items():
            self.metrics.log_value((module_id, LOSS_KEYS[name]), loss.detach(), window=1)
        for key, value in metrics.items():
            self.metrics.log_value((module_id, key), value, window=1)
        return total

    def _raise_non_finite(self, batch: dict[str, Any], named: dict[str, torch.Tensor]) -> None:
        step = self._grad_step + 1
        for column in BATCH_COLUMNS:
            values = batch[column]
            if values.is_floating_point() and not torch.isfinite(values).all():
                raise NonFiniteError(
                    f"non-finite value in batch column '{column}' at gradient step {step}; "
                    "clean the dataset (NaN/inf in observations, actions or rewards)"
                )
        bad = [LOSS_KEYS[name] for name, loss in named.items() if not torch.isfinite(loss)]
        raise NonFiniteError(
            f"{', '.join(bad)} became non-finite at gradient step {step}; lower the learning "
            "rates or raise kl_weight (training stopped before the value reached a checkpoint)"
        )

    # ---- gradients -----------------------------------------------------------------------------

    def apply_gradients(self, gradients_dict: ParamDict) -> None:
        """Step every optimizer (one fused finiteness check), then polyak-update the targets."""
        grads = [g for g in gradients_dict.values() if g is not None]
        if grads:
            total = torch.stack(torch._foreach_norm(grads)).sum()
            if not torch.isfinite(total):
                raise NonFiniteError(
                    f"non-finite gradient at gradient step {self._grad_step + 1}; lower the "
                    "learning rates (training stopped before the value reached a checkpoint)"
                )
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id, optimizer_names in self._module_optimizers.items():
            for optimizer_name in optimizer_names:
                self.get_optimizer(module_id, optimizer_name).step()
        self._grad_step += 1
        self._polyak_update()

    @torch.no_grad()
    def _polyak_update(self) -> None:
        for module_id in self._module_optimizers:
            module: FtTPOTorchRLModule = self._module[module_id].unwrapped()
            tau = self.config.get_config_for_module(module_id).polyak
            for online, target in module.target_network_pairs():
                torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        for module_id in self._module_optimizers:
            self.metrics.log_value((module_id, GRAD_STEPS), self._grad_step, window=1)
