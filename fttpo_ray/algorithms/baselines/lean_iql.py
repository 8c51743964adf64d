"""RLlib's IQL with a lean forward pass, one backward pass and per-step target updates.

RLlib 2.60's IQL module runs SAC's whole training forward pass before adding IQL's own terms:
the policy on the next observations, actions re-sampled from the policy and their Q-values, and
target Q-values of the next observations, none of which IQL's loss reads; its learner then runs
one backward pass per optimizer over the shared graph, steps four per-tensor Adam optimizers, and
moves the target critics towards the critics once per ``update()`` call, that is once per
``dataset_num_iters_per_learner`` gradient steps (with ``tau = 0.005`` and 5 000 steps per
call, the targets stay near their initial weights for a whole run).

:class:`LeanIQLTorchRLModule` has the IQL paper's MuJoCo policy (a Gaussian with ``tanh`` mean,
:class:`TanhMeanGaussian`, instead of SAC's tanh-squashed Gaussian) and critics (one MLP on the
concatenated observation and action,
:class:`~fttpo_ray.algorithms.baselines.lean_parts.ConcatCriticCatalog`, instead of RLlib's
multi-stream critic with about 9 times its multiply-adds) and computes exactly what RLlib's IQL loss
reads (the policy's distribution inputs at the observations, both critics at the logged actions, the
minimum of the target critics under ``no_grad``, the value function at the observations, and at the
next observations under ``no_grad``). :class:`LeanIQLTorchLearner` keeps RLlib's loss
(``IQLTorchLearner.compute_loss_for_module``, unchanged), backpropagates the sum of the four losses
once (each loss reaches only its own optimizer's parameters, so the gradients are the same), uses
fused Adam with RLlib's settings, and moves the targets by ``tau`` after every gradient step
(:class:`PerStepTargetUpdate`), as the IQL paper does. ``tests/algorithms/test_lean_iql.py`` checks
losses, gradients and a whole step against RLlib's own classes.

:func:`use_lean_iql` plugs both into an ``IQLConfig``; :func:`fttpo_ray.algorithms.baselines.
builtin_offline.configure_builtin_offline` does it on the in-memory path.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.algorithms.iql import IQLConfig
from ray.rllib.algorithms.iql.iql_learner import QF_TARGET_PREDS, VF_PREDS_NEXT
from ray.rllib.algorithms.iql.torch.default_iql_torch_rl_module import DefaultIQLTorchRLModule
from ray.rllib.algorithms.iql.torch.iql_torch_learner import IQLTorchLearner
from ray.rllib.algorithms.sac.sac_learner import QF_PREDS, QF_TWIN_PREDS
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT
from ray.rllib.utils.typing import ModuleID, ParamDict, TensorType

from fttpo_ray.algorithms.baselines.lean_parts import (
    ConcatCriticCatalog,
    ConcatCriticModule,
    PerStepTargetUpdate,
    register_fused_optimizers,
)
from fttpo_ray.errors import ConfigError

#: RLlib's IQL optimizers: name -> (module attributes whose parameters it updates, the config
#: field holding its learning rate). The twin critic's optimizer exists with ``twin_q`` only.
IQL_OPTIMIZERS = {
    "qf": (("qf_encoder", "qf"), "critic_lr"),
    "qf_twin": (("qf_twin_encoder", "qf_twin"), "critic_lr"),
    "policy": (("pi_encoder", "pi"), "actor_lr"),
    "value": (("vf_encoder", "vf"), "value_lr"),
}
#: Adam's epsilon in RLlib's IQL learner.
IQL_ADAM_EPS = 1e-7


class TanhMeanGaussian(TorchDiagGaussian):
    """Diagonal Gaussian whose mean is ``tanh`` of the policy head's location output: the IQL
    paper's policy for MuJoCo (its log-std clipped as RLlib clips it).

    RLlib's IQL uses SAC's tanh-*squashed* Gaussian, whose log-likelihood of a logged action
    ``a`` is that of ``atanh(a)``: logged actions at the bounds (common in data from SAC
    behaviour policies; about 6 % of the HalfCheetah stand-ins' action entries have
    ``|a| > 0.99``) map to ``atanh(1 - 1e-6) = 7.25`` and dominate the advantage-weighted
    likelihood. Here the likelihood is of ``a`` itself; samples leave the box only by the
    Gaussian's noise (the environment's box clips them), and the deterministic action, the mean,
    always lies inside it.
    """

    @classmethod
    @override(TorchDiagGaussian)
    def from_logits(cls, logits: torch.Tensor, **kwargs: Any) -> TanhMeanGaussian:
        loc, log_std = logits.chunk(2, dim=-1)
        log_std = torch.clamp(log_std, MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT)
        return cls(loc=torch.tanh(loc), scale=log_std.exp())


class IQLPaperCatalog(ConcatCriticCatalog):
    """:class:`~fttpo_ray.algorithms.baselines.lean_parts.ConcatCriticCatalog` with the IQL
    paper's policy distribution (:class:`TanhMeanGaussian`) for Box action spaces."""

    @override(ConcatCriticCatalog)
    def get_action_dist_cls(self, framework: str) -> type:
        if isinstance(self.action_space, gym.spaces.Box):
            return TanhMeanGaussian
        return super().get_action_dist_cls(framework)


class LeanIQLTorchRLModule(ConcatCriticModule, DefaultIQLTorchRLModule):
    """RLlib's IQL module with the concatenated critic; its training forward pass computes only
    what the IQL loss reads."""

    @override(DefaultIQLTorchRLModule)
    def setup(self) -> None:
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ConfigError(f"IQL needs a continuous (Box) action space; got {self.action_space}")
        super().setup()

    @override(DefaultIQLTorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        observations = {Columns.OBS: batch[Columns.OBS]}
        logged = {Columns.OBS: batch[Columns.OBS], Columns.ACTIONS: batch[Columns.ACTIONS]}
        output = {
            Columns.ACTION_DIST_INPUTS: self.pi(self.pi_encoder(observations)[ENCODER_OUT]),
            QF_PREDS: self._qf_forward_train_helper(logged, self.qf_encoder, self.qf),
            Columns.VF_PREDS: self.compute_values(observations),
        }
        if self.twin_q:
            output[QF_TWIN_PREDS] = self._qf_forward_train_helper(
                logged, self.qf_twin_encoder, self.qf_twin
            )
        with torch.no_grad():
            output[QF_TARGET_PREDS] = self.forward_target(logged)
            output[VF_PREDS_NEXT] = self.compute_values({Columns.OBS: batch[Columns.NEXT_OBS]})
        return output


class LeanIQLTorchLearner(PerStepTargetUpdate, IQLTorchLearner):
    """RLlib's IQL learner with one backward pass, fused Adam and per-step target updates.

    The loss is RLlib's (``compute_loss_for_module`` is inherited unchanged).
    """

    @override(IQLTorchLearner)
    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        register_fused_optimizers(self, module_id, config, IQL_OPTIMIZERS, IQL_ADAM_EPS)

    @override(IQLTorchLearner)
    def compute_gradients(
        self, loss_per_module: dict[ModuleID, TensorType], **kwargs: Any
    ) -> ParamDict:
        """One backward pass of the summed losses. RLlib's IQL loss is the sum of the value,
        policy and critic losses, and each reaches only its own optimizer's parameters (the
        targets and next-state values enter without gradient, the advantages are detached), so
        the gradients equal those of RLlib's one-backward-per-optimizer loop."""
        self._temp_losses.clear()
        return TorchLearner.compute_gradients(self, loss_per_module, **kwargs)


def use_lean_iql(config: IQLConfig) -> IQLConfig:
    """Train ``config``'s IQL with :class:`LeanIQLTorchRLModule` and :class:`LeanIQLTorchLearner`
    (same loss, same hyper-parameters; the targets follow ``tau`` after every gradient step)."""
    if not isinstance(config, IQLConfig):
        raise ConfigError(f"use_lean_iql needs an IQLConfig; got {type(config).__name__}")
    config.rl_module(
        rl_module_spec=RLModuleSpec(
            module_class=LeanIQLTorchRLModule, catalog_class=IQLPaperCatalog
        )
    )
    config.learners(learner_class=LeanIQLTorchLearner)
    return config
