"""RLlib's CQL with the same loss and gradients at a fraction of the work per gradient step.

RLlib 2.60's CQL (``ray/rllib/algorithms/cql/torch/``; Kumar et al. 2020, "Conservative
Q-Learning for Offline Reinforcement Learning", the entropy version CQL(H)) computes its module
output as SAC's whole training forward pass followed by three ``_repeat_actions`` calls, each
with its own policy forward over ``num_actions`` copies of every observation and its own forward
through each critic, with the policy's (or critics') ``requires_grad`` toggled around them; its
learner then runs one backward pass per optimizer and steps four per-tensor Adams, and moves the
target critics once per ``update()`` call (that is once per ``dataset_num_iters_per_learner``
gradient steps offline). Here:

- :class:`LeanCQLTorchRLModule` computes exactly the tensors RLlib's CQL loss reads, drawing the
  random numbers in RLlib's order and shapes (a seeded step draws the same samples):

  * one policy forward over ``[obs; next_obs]``; the ``num_actions`` copies of an observation
    have the same logits, so the repeated actions are sampled from the logits repeated rather
    than from a forward pass over repeated observations;
  * per critic, one forward over the ``(1 + 3 num_actions) B`` rows ``[data actions; random;
    current-policy; next-policy actions]`` (``B`` the batch size). On RLlib's multi-stream critic
    (an observation MLP and an action MLP whose embeddings are concatenated and fed, through
    skip connections, to every fusion layer and to its output layer) every observation-only term
    is computed once per distinct observation: a layer ``W [x; e_obs] + b`` is
    ``W_x x + (W_obs e_obs + b)``, and the bracket is evaluated on ``2 B`` rows and gathered;
  * ``Q(s, a ~ pi(.|s))`` of the actor loss through the critics with their parameters detached
    (multi-stream critic) or frozen (``requires_grad`` off, RLlib's own way; other critics), so
    its gradient reaches the policy only;
  * the target critics under ``torch.no_grad``, through RLlib's own ``forward_target``.

- :class:`LeanConcatCQLTorchRLModule`: the same with the critic of the CQL paper (one MLP on the
  concatenated observation and action, :class:`~fttpo_ray.algorithms.baselines.lean_parts.
  ConcatCriticCatalog`; RLlib's multi-stream critic has about 9 times its multiply-adds).

- :class:`LeanCQLTorchLearner` keeps RLlib's ``compute_loss_for_module`` unchanged (the loss IS
  RLlib's), takes one backward pass of the sum of the per-optimizer losses (each reaches only
  its own optimizer's parameters: ``qf_loss`` the critic, ``qf_twin_loss`` the twin critic,
  ``policy_loss`` the policy, ``alpha_loss`` ``log(alpha)``; the tests check the gradients
  against RLlib's per-optimizer backward passes), uses fused Adam with RLlib's ``eps = 1e-7`` and
  learning rates, and moves the targets by ``tau`` after every gradient step
  (:class:`~fttpo_ray.algorithms.baselines.lean_parts.PerStepTargetUpdate`), as the CQL paper
  does.

:func:`use_lean_cql` switches a :class:`~ray.rllib.algorithms.cql.CQLConfig` to them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from ray.rllib.algorithms.cql import CQLConfig
from ray.rllib.algorithms.cql.torch.cql_torch_learner import CQLTorchLearner
from ray.rllib.algorithms.cql.torch.default_cql_torch_rl_module import DefaultCQLTorchRLModule
from ray.rllib.algorithms.sac.sac_learner import (
    ACTION_DIST_INPUTS_NEXT,
    QF_PREDS,
    QF_TARGET_NEXT,
    QF_TWIN_PREDS,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.models.torch.encoder import TorchMultiStreamEncoder
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import ALL_MODULES
from ray.rllib.utils.typing import ModuleID, ParamDict, TensorType

from fttpo_ray.algorithms.baselines.lean_parts import (
    ConcatCriticCatalog,
    ConcatCriticModule,
    PerStepTargetUpdate,
    register_fused_optimizers,
)
from fttpo_ray.errors import ConfigError

# Keys of the module output that RLlib's CQL loss reads (``cql_torch_learner.py`` spells them as
# string literals; they are defined once here).
#: Log-probability of the reparameterised ``a ~ pi(.|s)`` (actor and alpha losses).
LOGP_RESAMPLED = "logp_resampled"
#: Log-probability of ``a' ~ pi(.|s')`` (soft backup unless ``deterministic_backup``), detached.
LOGP_NEXT_RESAMPLED = "logp_next_resampled"
#: ``min_i Q_i(s, a)``, ``a ~ pi(.|s)`` reparameterised; gradient to the policy only.
Q_CURR = "q_curr"
#: Uniform random actions in the action box, ``(B * num_actions, A)``, observation-major.
ACTIONS_RAND_REPEAT = "actions_rand_repeat"
#: ``num_actions`` samples of ``pi(.|s)`` per state, ``(B * num_actions, A)``, no gradient.
ACTIONS_CURR_REPEAT = "actions_curr_repeat"
#: ``num_actions`` samples of ``pi(.|s')`` per next state, ``(B * num_actions, A)``, no gradient.
ACTIONS_NEXT_REPEAT = "actions_next_repeat"
#: Their log-probabilities, ``(B, num_actions, 1)``.
LOGPS_CURR_REPEAT = "logps_curr_repeat"
LOGPS_NEXT_REPEAT = "logps_next_repeat"
#: ``Q(s, a_rand)``, ``Q(s, a ~ pi(.|s))`` and ``Q(s', a' ~ pi(.|s'))`` (RLlib evaluates the
#: next-policy actions at the next state), ``(B, num_actions, 1)``; first and twin critic.
Q_RAND_REPEAT = "q_rand_repeat"
Q_CURR_REPEAT = "q_curr_repeat"
Q_NEXT_REPEAT = "q_next_repeat"
Q_TWIN_RAND_REPEAT = "q_twin_rand_repeat"
Q_TWIN_CURR_REPEAT = "q_twin_curr_repeat"
Q_TWIN_NEXT_REPEAT = "q_twin_next_repeat"
#: The repeated-action blocks of each critic, in the row order of the critic pass.
REPEAT_KEYS = {
    QF_PREDS: (Q_RAND_REPEAT, Q_CURR_REPEAT, Q_NEXT_REPEAT),
    QF_TWIN_PREDS: (Q_TWIN_RAND_REPEAT, Q_TWIN_CURR_REPEAT, Q_TWIN_NEXT_REPEAT),
}
#: RLlib's model-config key for the number of sampled actions per state.
NUM_ACTIONS = "num_actions"
#: Base-encoder keys of RLlib's continuous SAC critic (``SACCatalog``). ``TorchMultiStreamEncoder``
#: concatenates their embeddings in sorted order, so the observation embedding comes last.
CRITIC_STREAMS = (Columns.ACTIONS, Columns.OBS)
#: RLlib's CQL optimizers (``SACTorchLearner``): name -> (module attributes whose parameters it
#: updates, the config field holding its learning rate). RLlib pairs optimizer ``X`` with the
#: loss stored under ``(module_id, X + "_loss")``; ``qf_twin`` exists with ``twin_q`` only; the
#: ``alpha`` optimizer updates the learner's ``log(alpha)``.
CQL_OPTIMIZERS = {
    "qf": (("qf_encoder", "qf"), "critic_lr"),
    "qf_twin": (("qf_twin_encoder", "qf_twin"), "critic_lr"),
    "policy": (("pi_encoder", "pi"), "actor_lr"),
    "alpha": ((), "alpha_lr"),
}
LOSS_SUFFIX = "_loss"
#: Adam's epsilon in RLlib's SAC/CQL learner.
CQL_ADAM_EPS = 1e-7


def _is_multi_stream_critic(encoder: torch.nn.Module) -> bool:
    return isinstance(encoder, TorchMultiStreamEncoder) and sorted(
        encoder.base_encoders.keys()
    ) == sorted(CRITIC_STREAMS)


def _call(module: torch.nn.Module, inputs: Any, detach: bool) -> Any:
    """``module(inputs)``, with every parameter of ``module`` detached when ``detach``."""
    if not detach:
        return module(inputs)
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, (inputs,))


def _obs_layers(encoder: TorchMultiStreamEncoder) -> list[torch.nn.Linear]:
    """The layers of RLlib's multi-stream encoder whose input ends with the observation
    embedding: every fusion layer and the output layer."""
    layers = list(encoder.fusion_layers)
    if encoder.output_layer is not None:
        layers.append(encoder.output_layer)
    return layers


def critic_obs_terms(
    encoder: TorchMultiStreamEncoder, obs: torch.Tensor
) -> tuple[int, list[torch.Tensor]]:
    """Width of ``e_obs`` and ``W_obs e_obs(s) + b`` for every layer that reads ``e_obs``.

    RLlib's ``TorchMultiStreamEncoder`` feeds ``embeds = [e_act; e_obs]`` to its first fusion
    layer and ``[h; embeds]`` to every later fusion layer and to its output layer (``embeds``
    alone to the output layer when it has no fusion layers), so each of these layers is
    ``W_x x + W_obs e_obs + b`` with ``e_obs`` in the trailing columns; the second part depends
    on the observation only.
    """
    e_obs = encoder.base_encoders[Columns.OBS]({Columns.OBS: obs})[ENCODER_OUT]
    width = e_obs.shape[-1]
    return width, [
        F.linear(e_obs, layer.weight[:, -width:], layer.bias) for layer in _obs_layers(encoder)
    ]


def critic_from_obs_terms(
    encoder: TorchMultiStreamEncoder,
    head: torch.nn.Module,
    actions: torch.Tensor,
    obs_terms: list[torch.Tensor],
    obs_width: int,
    *,
    detach: bool,
) -> torch.Tensor:
    """``Q(s, a)``, shape ``(N,)``, of RLlib's multi-stream critic given each row's observation
    terms.

    ``obs_terms[l]`` (one row per row of ``actions``) is ``W_obs e_obs(s) + b`` of layer ``l``
    (:func:`critic_obs_terms`, gathered to the rows). The result equals
    ``head(encoder({obs: s, actions: a}))`` up to floating-point summation order. With
    ``detach`` every parameter read here is detached (gradients reach ``actions`` only; pass
    detached ``obs_terms`` too).
    """
    e_act = _call(encoder.base_encoders[Columns.ACTIONS], {Columns.OBS: actions}, detach)
    e_act = e_act[ENCODER_OUT]
    hidden_activation = encoder.hidden_activation()
    out = e_act
    for index, layer in enumerate(_obs_layers(encoder)):
        weight = layer.weight.detach() if detach else layer.weight
        x = torch.cat([out, e_act], dim=-1) if index > 0 else e_act
        out = F.linear(x, weight[:, :-obs_width]) + obs_terms[index]
        is_output = layer is encoder.output_layer
        out = encoder.output_activation()(out) if is_output else hidden_activation(out)
    return _call(head, out, detach).squeeze(-1)


@contextlib.contextmanager
def _frozen(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Parameters of ``modules`` without ``requires_grad`` inside the block (RLlib's way of
    letting a loss reach a network's inputs but not its weights), restored on exit."""
    params = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


class LeanCQLTorchRLModule(DefaultCQLTorchRLModule):
    """RLlib's CQL module; ``_forward_train`` computes what RLlib's CQL loss reads, batched.

    Same parameters, architecture and state dict as ``DefaultCQLTorchRLModule`` (Box actions
    only). Random numbers come from torch's global generator in RLlib's order and shapes:
    ``a ~ pi(.|s)`` (rsample, ``(B, A)``), ``a' ~ pi(.|s')`` (``(B, A)``), the random actions
    (``torch.rand((B * num_actions, A))``), ``num_actions`` samples per state of ``pi(.|s)`` and
    then of ``pi(.|s')`` (``(B * num_actions, A)`` each, observation-major).
    """

    @override(DefaultCQLTorchRLModule)
    def setup(self) -> None:
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ConfigError(
                f"lean CQL needs a continuous (Box) action space; got {self.action_space}"
            )
        super().setup()

    @override(DefaultCQLTorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        batch_size = obs.shape[0]
        num_actions = self.model_config[NUM_ACTIONS]
        dist_class = self.get_train_action_dist_cls()
        output: dict[str, Any] = {}

        states_both = torch.cat([obs, next_obs])
        logits_both = self.pi(self.pi_encoder({Columns.OBS: states_both})[ENCODER_OUT])
        logits, logits_next = logits_both[:batch_size], logits_both[batch_size:]
        output[Columns.ACTION_DIST_INPUTS] = logits
        output[ACTION_DIST_INPUTS_NEXT] = logits_next
        # Draws 1 and 2 (SAC's forward pass): a ~ pi(.|s) reparameterised, a' ~ pi(.|s').
        actions_resampled, output[LOGP_RESAMPLED] = dist_class.from_logits(
            logits
        ).rsample_and_logp()
        with torch.no_grad():
            actions_next, output[LOGP_NEXT_RESAMPLED] = dist_class.from_logits(
                logits_next
            ).sample_and_logp()
            output[QF_TARGET_NEXT] = self.forward_target(
                {Columns.OBS: next_obs, Columns.ACTIONS: actions_next}
            )
            # Draw 3: uniform random actions in the action box.
            low = torch.tensor(self.action_space.low, device=obs.device)
            high = torch.tensor(self.action_space.high, device=obs.device)
            output[ACTIONS_RAND_REPEAT] = low + (high - low) * torch.rand(
                (batch_size * num_actions, low.shape[0]), device=obs.device
            )
            # Draws 4 and 5: num_actions samples per state of pi(.|s), then of pi(.|s'); RLlib
            # freezes the policy for these, so they carry no gradient.
            for actions_key, logps_key, state_logits in (
                (ACTIONS_CURR_REPEAT, LOGPS_CURR_REPEAT, logits),
                (ACTIONS_NEXT_REPEAT, LOGPS_NEXT_REPEAT, logits_next),
            ):
                repeated = torch.repeat_interleave(state_logits, num_actions, dim=0)
                actions, logps = dist_class.from_logits(repeated).rsample_and_logp()
                output[actions_key] = actions
                output[logps_key] = logps.view(batch_size, num_actions, 1)

        # Rows of the critic pass: (s, a_data), (s, a_rand), (s, a ~ pi(s)), (s', a' ~ pi(s')),
        # each row's state an index into [obs; next_obs].
        row_actions = torch.cat(
            [
                batch[Columns.ACTIONS],
                output[ACTIONS_RAND_REPEAT],
                output[ACTIONS_CURR_REPEAT],
                output[ACTIONS_NEXT_REPEAT],
            ]
        )
        states = torch.arange(batch_size, device=obs.device)
        per_state = torch.repeat_interleave(states, num_actions)
        row_states = torch.cat([states, per_state, per_state, per_state + batch_size])
        critics = [(self.qf_encoder, self.qf, QF_PREDS)]
        if self.twin_q:
            critics.append((self.qf_twin_encoder, self.qf_twin, QF_TWIN_PREDS))
        q_curr = []
        for encoder, head, key in critics:
            q_rows, q_at_policy = self._lean_critic_pass(
                encoder,
                head,
                states_both,
                row_states,
                row_actions,
                actions_resampled,
            )
            output[key] = q_rows[:batch_size]
            blocks = q_rows[batch_size:].view(3, batch_size, num_actions, 1)
            for block_key, block in zip(REPEAT_KEYS[key], blocks, strict=True):
                output[block_key] = block
            q_curr.append(q_at_policy)
        output[Q_CURR] = torch.min(q_curr[0], q_curr[1]) if self.twin_q else q_curr[0]
        return output

    def _lean_critic_pass(
        self,
        encoder: torch.nn.Module,
        head: torch.nn.Module,
        states: torch.Tensor,
        row_states: torch.Tensor,
        row_actions: torch.Tensor,
        policy_actions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Q(states[row_states], row_actions)`` (gradients to the critic) and
        ``Q(states[:B], policy_actions)`` (gradients to ``policy_actions`` only)."""
        batch_size = policy_actions.shape[0]
        if _is_multi_stream_critic(encoder):
            width, terms = critic_obs_terms(encoder, states)
            q_rows = critic_from_obs_terms(
                encoder,
                head,
                row_actions,
                [term.index_select(0, row_states) for term in terms],
                width,
                detach=False,
            )
            q_at_policy = critic_from_obs_terms(
                encoder,
                head,
                policy_actions,
                [term[:batch_size].detach() for term in terms],
                width,
                detach=True,
            )
            return q_rows, q_at_policy
        rows = {Columns.OBS: states.index_select(0, row_states), Columns.ACTIONS: row_actions}
        q_rows = self._qf_forward_train_helper(rows, encoder, head)
        with _frozen([encoder, head]):
            q_at_policy = self._qf_forward_train_helper(
                {Columns.OBS: states[:batch_size], Columns.ACTIONS: policy_actions}, encoder, head
            )
        return q_rows, q_at_policy


class LeanConcatCQLTorchRLModule(ConcatCriticModule, LeanCQLTorchRLModule):
    """:class:`LeanCQLTorchRLModule` on the CQL paper's critic (one MLP of the concatenated
    observation and action; build it with :class:`~fttpo_ray.algorithms.baselines.lean_parts.
    ConcatCriticCatalog`)."""


class LeanCQLTorchLearner(PerStepTargetUpdate, CQLTorchLearner):
    """RLlib's CQL learner with one backward pass, fused Adam and per-step target updates.

    The loss is RLlib's (``compute_loss_for_module`` is inherited unchanged).
    """

    @override(CQLTorchLearner)
    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        register_fused_optimizers(
            self,
            module_id,
            config,
            CQL_OPTIMIZERS,
            CQL_ADAM_EPS,
            {"alpha": [self.curr_log_alpha[module_id]]},
        )

    @override(CQLTorchLearner)
    def compute_gradients(
        self, loss_per_module: dict[ModuleID, TensorType], **kwargs: Any
    ) -> ParamDict:
        """One backward pass of ``sum_X loss_X`` over every optimizer ``X``.

        Equal to RLlib's per-optimizer ``d loss_X / d params_X`` because no loss reaches another
        optimizer's parameters: the critics' TD and CQL terms read no policy parameter (their
        sampled actions carry no gradient), the actor loss reads the critics with detached or
        frozen parameters, the alpha loss detached log-probabilities. Not the module's total
        loss: RLlib's CQL total weighs the critic losses by 1/2 with ``twin_q``.
        """
        for optimizer in self._optimizer_parameters:
            optimizer.zero_grad(set_to_none=True)
        losses, optimizers = [], []
        for module_id in set(loss_per_module) - {ALL_MODULES}:
            for name, optimizer in self.get_optimizers_for_module(module_id):
                losses.append(self._temp_losses.pop((module_id, name + LOSS_SUFFIX)))
                optimizers.append(optimizer)
        if self._temp_losses:
            raise RuntimeError(f"lean CQL: losses without an optimizer: {list(self._temp_losses)}")
        if not losses:
            return {}
        torch.stack(losses).sum().backward()
        return {
            pid: param.grad
            for optimizer in optimizers
            for pid, param in self.filter_param_dict_for_optimizer(self._params, optimizer).items()
        }


def use_lean_cql(config: CQLConfig, *, concat_critic: bool = True) -> CQLConfig:
    """Train ``config``'s CQL with the lean module and :class:`LeanCQLTorchLearner` (same loss,
    same hyper-parameters; the targets follow ``tau`` after every gradient step).

    ``concat_critic``: the CQL paper's critic (:class:`LeanConcatCQLTorchRLModule`); else
    RLlib's multi-stream critic (:class:`LeanCQLTorchRLModule`, RLlib's state dict).
    """
    if not isinstance(config, CQLConfig):
        raise ConfigError(f"use_lean_cql needs a CQLConfig; got {type(config).__name__}")
    if config.action_space is not None and not isinstance(config.action_space, gym.spaces.Box):
        raise ConfigError(
            f"use_lean_cql needs a continuous (Box) action space; got {config.action_space}"
        )
    if concat_critic:
        spec = RLModuleSpec(
            module_class=LeanConcatCQLTorchRLModule, catalog_class=ConcatCriticCatalog
        )
    else:
        spec = RLModuleSpec(module_class=LeanCQLTorchRLModule)
    config.rl_module(rl_module_spec=spec)
    config.learners(learner_class=LeanCQLTorchLearner)
    return config
