"""Pieces shared by the lean versions of RLlib's SAC-family offline learners (IQL, CQL).

- :class:`ConcatCriticCatalog`: the critics (and their targets) as one MLP on the concatenated
  observation and action, ``fcnet_hiddens`` wide with ``fcnet_activation``, then RLlib's
  one-output head: the critic of the IQL and CQL papers, and the shape of FtTPO's critics.
  RLlib 2.60's SAC catalog builds a multi-stream critic instead (an observation MLP and an action
  MLP, each ``fcnet_hiddens``, then a ``fusionnet_hiddens`` fusion network with skip
  connections): with 2 x 256 layers it has about 9 times the multiply-adds per row of the
  concatenated critic.
- :class:`ConcatCriticModule`: the module side of that critic (observation and action are
  concatenated before the encoder).
- :class:`PerStepTargetUpdate`: ``target <- (1 - tau) target + tau online`` after every gradient
  step. RLlib's ``DQNLearner`` (which IQL's and CQL's learners extend) updates the targets once
  per ``update()`` call, i.e. once per ``dataset_num_iters_per_learner`` gradient steps offline.
- :func:`register_fused_optimizers`: RLlib's optimizers (names, parameters, learning rates) as
  Adam with ``fused=True`` (one kernel per optimizer step instead of one per tensor).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.dqn.dqn_learner import DQNLearner
from ray.rllib.algorithms.sac.sac_catalog import SACCatalog
from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.models.base import ENCODER_OUT, Encoder, Model
from ray.rllib.core.models.configs import MLPEncoderConfig
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import ParamDict

#: ``model_config`` keys the concatenated critic reads (RLlib's names).
HIDDENS = "fcnet_hiddens"
ACTIVATION = "fcnet_activation"


class ConcatCriticCatalog(SACCatalog):
    """RLlib's SAC catalog with a concatenated-input MLP critic for Box action spaces."""

    @override(SACCatalog)
    def _build_qf_encoder_continuous(self, framework: str) -> Encoder:
        hiddens = list(self._model_config_dict[HIDDENS])
        activation = self._model_config_dict[ACTIVATION]
        inputs = int(np.prod(self.observation_space.shape)) + int(np.prod(self.action_space.shape))
        self.qf_encoder_config = MLPEncoderConfig(
            input_dims=(inputs,),
            hidden_layer_dims=hiddens[:-1],
            hidden_layer_activation=activation,
            output_layer_dim=self.latent_dims[0],
            output_layer_activation=activation,
        )
        return self.qf_encoder_config.build(framework=framework)


class ConcatCriticModule:
    """Module mixin (before RLlib's SAC-family module in the bases): every critic call, online
    or target, sees ``[observation, action]`` as one input (:class:`ConcatCriticCatalog`)."""

    @override(DefaultSACTorchRLModule)
    def _qf_forward_train_helper(
        self, batch: dict[str, Any], encoder: Encoder, head: Model, squeeze: bool = True
    ) -> torch.Tensor:
        inputs = torch.cat(
            [batch[Columns.OBS].flatten(1), batch[Columns.ACTIONS].flatten(1)], dim=-1
        )
        values = head(encoder({Columns.OBS: inputs})[ENCODER_OUT])
        return values.squeeze(-1) if squeeze else values


class PerStepTargetUpdate:
    """Learner mixin (before RLlib's learner in the bases): after every gradient step
    (:meth:`apply_gradients`) every target network moves by ``tau`` towards its online network
    (:meth:`update_targets`), and ``DQNLearner``'s once-per-``update()`` target update is skipped.
    """

    @override(TorchLearner)
    def apply_gradients(self, gradients_dict: ParamDict) -> None:
        super().apply_gradients(gradients_dict)
        self.update_targets()

    @override(DQNLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        """RLlib's per-``update()`` hooks without ``DQNLearner``'s target update."""
        TorchLearner.after_gradient_based_update(self, timesteps=timesteps)

    def update_targets(self) -> None:
        with torch.no_grad():
            for module_id, module in self.module.items():
                tau = float(self.config.get_config_for_module(module_id).tau)
                online, target = [], []
                for main_net, target_net in module.unwrapped().get_target_network_pairs():
                    online += list(main_net.parameters())
                    target += list(target_net.parameters())
                torch._foreach_lerp_(target, online, tau)


#: Name of the twin critic's optimizer in RLlib's SAC-family learners (exists with ``twin_q``).
TWIN_OPTIMIZER = "qf_twin"


def register_fused_optimizers(
    learner: TorchLearner,
    module_id: str,
    config: Any,
    table: dict[str, tuple[tuple[str, ...], str]],
    eps: float,
    extra_params: dict[str, list[torch.Tensor]] | None = None,
) -> None:
    """Register one fused Adam per entry of ``table`` (name -> (module attributes whose
    parameters it updates, the config field holding its learning rate)), under RLlib's optimizer
    names; ``extra_params`` gives the parameters of entries with no module attribute (CQL's
    ``log(alpha)``). The twin critic's optimizer is skipped without ``twin_q``."""
    module = learner._module[module_id]
    for name, (parts, lr_field) in table.items():
        if name == TWIN_OPTIMIZER and not config.twin_q:
            continue
        params = [p for part in parts for p in learner.get_parameters(getattr(module, part))]
        if not parts:
            params = (extra_params or {})[name]
        learner.register_optimizer(
            module_id=module_id,
            optimizer_name=name,
            optimizer=torch.optim.Adam(params, eps=eps, fused=True),
            params=params,
            lr_or_lr_schedule=getattr(config, lr_field),
        )
