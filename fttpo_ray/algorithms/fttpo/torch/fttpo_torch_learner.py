"""Torch learner of FtTPO (docs/algorithm.md §2; baselines §3).

One gradient step on a batch ``(s, a, r, s', d)``, in paper order: value, critic, fat proposal,
thin actor, then the polyak update of the target critics. The step never waits for the device:
losses, diagnostics and finiteness checks stay tensors, summed over the gradient steps of one
``update()`` call and read once at its end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.policy.sample_batch import MultiAgentBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    MODULE_TRAIN_BATCH_SIZE_MEAN,
    NUM_ENV_STEPS_TRAINED,
    NUM_ENV_STEPS_TRAINED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    WEIGHTS_SEQ_NO,
)
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
from fttpo_ray.distributions import SparseQGaussian
from fttpo_ray.errors import NonFiniteError
from fttpo_ray.rl_module.fttpo_rl_module import (
    FAT_SCALE,
    LOC,
    THIN_HALFWIDTH,
    FtTPOTorchRLModule,
    PolicyParams,
)
from fttpo_ray.rl_module.variants import Policy, ThinLoss

logger = logging.getLogger(__name__)

BATCH_COLUMNS = (
    Columns.OBS,
    Columns.ACTIONS,
    Columns.REWARDS,
    Columns.NEXT_OBS,
    Columns.TERMINATEDS,
)
#: The columns checked for NaN/inf at every step (the termination flags are booleans).
FLOAT_COLUMNS = BATCH_COLUMNS[:4]
#: Name of the gradient's finiteness check (after the columns' and the losses').
GRADIENT_CHECK = "gradient"

#: Dynamo settings of the compiled step: trace the backward pass into the graph, and specialise
#: on the Python floats left (``weight_q``, ``w_max``, ``kl_ratio_clip``, the module's bounds),
#: so other values recompile instead of being traced as symbols (which breaks the single graph).
#: The swept hyper-parameters (``fat_q``, ``thin_q``, ``kl_weight``, ``gamma``) are tensors
#: (:class:`StepHyperParameters`): one graph serves all their values.
DYNAMO_CONFIG = {"trace_autograd_ops": True, "specialize_float": True}

#: Inductor settings of the compiled step: random numbers from the eager kernels (a compiled step
#: equals the eager one for the same seed), and no probe of the CPU's vector instruction sets.
#: The probe builds and loads a test library in a subprocess for every instruction set the CPU
#: reports, in every process: ~1.5 s of a ~4.7 s compilation from inductor's on-disk cache on a
#: loaded 2-core machine. Without it the set is still picked from the CPU's flags; a compiler
#: that cannot build for it fails the compilation, and the step runs eagerly (one warning).
INDUCTOR_OPTIONS = {"fallback_random": True, "cpp.vec_isa_ok": True}

#: ``losses_and_gradients``' result: the summed loss, the losses and the diagnostics (detached,
#: keyed as by :func:`fttpo_losses`), the finiteness checks and the gradients.
StepResult = tuple[
    torch.Tensor,
    dict[str, torch.Tensor],
    dict[str, torch.Tensor],
    torch.Tensor,
    tuple[torch.Tensor | None, ...],
]


class QIndices(NamedTuple):
    """The module's ``fat_q`` and ``thin_q`` for one step: Python floats, or 0-d tensors of
    the same values (``fat`` stays the float 1.0 for the Gaussian)."""

    fat: torch.Tensor | float
    thin: torch.Tensor | float


@dataclass(frozen=True)
class StepHyperParameters:
    """The hyper-parameters a gradient step reads, the swept ones as 0-d float64 tensors.

    ``fat_q``, ``thin_q``, ``kl_weight`` (tau) and ``gamma`` are tensors, so the compiled step
    reads them as graph inputs and one compiled graph serves every value of them (a sweep over
    q and tau compiles once per process, and inductor's on-disk cache serves the other
    processes); ``fat_q`` is the float 1.0 for the Gaussian (another sampler: another graph).
    The other fields are plain values the graph specialises on (``kl_num_samples`` and
    ``rar_num_samples`` are shapes). Built once per module by :meth:`from_config` and
    updated in place by :meth:`update` (``fill_``) when the config changes.
    """

    gamma: torch.Tensor
    kl_weight: torch.Tensor
    q: QIndices
    weight_q: float
    w_max: float
    kl_ratio_clip: float
    kl_num_samples: int
    rar_num_samples: int

    #: The config fields held as tensors.
    TENSOR_FIELDS = ("gamma", "kl_weight")
    PLAIN_FIELDS = ("weight_q", "w_max", "kl_ratio_clip", "kl_num_samples", "rar_num_samples")

    @classmethod
    def from_config(
        cls, module: FtTPOTorchRLModule, config: Any, device: torch.device
    ) -> StepHyperParameters:
        """q from the module (what it acts with), the rest from ``config``."""

        def tensor(value: float) -> torch.Tensor:
            return torch.tensor(float(value), dtype=torch.float64, device=device)

        fat = module.fat_q if module.fat_q == 1.0 else tensor(module.fat_q)
        return cls(
            **{name: tensor(getattr(config, name)) for name in cls.TENSOR_FIELDS},
            q=QIndices(fat=fat, thin=tensor(module.thin_q)),
            **{name: getattr(config, name) for name in cls.PLAIN_FIELDS},
        )

    def matches(self, module: FtTPOTorchRLModule, config: Any) -> bool:
        """Whether :meth:`update` can hold the values: the plain fields are equal and the
        Gaussian stays Gaussian."""
        gaussian = module.fat_q == 1.0
        return gaussian == (not isinstance(self.q.fat, torch.Tensor)) and all(
            getattr(self, name) == getattr(config, name) for name in self.PLAIN_FIELDS
        )

    def update(self, module: FtTPOTorchRLModule, config: Any) -> None:
        """Set the tensors to the module's q and ``config``'s values in place (the same tensors
        stay the graph's inputs); call where :meth:`matches`."""
        for name in self.TENSOR_FIELDS:
            getattr(self, name).fill_(float(getattr(config, name)))
        if isinstance(self.q.fat, torch.Tensor):
            self.q.fat.fill_(module.fat_q)
        self.q.thin.fill_(module.thin_q)


#: A thin loss: ``(module, batch, params, thin, weights, config, q) -> (loss, diagnostics)``,
#: with ``params`` the policy parameters at the batch's observations, ``thin`` the thin policy
#: built from them (its location detached where the variant's ``thin_detached``), ``weights``
#: the advantage weights of the dataset actions and ``q`` the step's :class:`QIndices`.
ThinLossFn = Callable[
    [
        FtTPOTorchRLModule,
        dict[str, Any],
        PolicyParams,
        SparseQGaussian,
        torch.Tensor,
        Any,
        QIndices,
    ],
    tuple[torch.Tensor, dict[str, torch.Tensor]],
]


def fat_to_thin_kl_loss(
    module: FtTPOTorchRLModule,
    batch: dict[str, Any],
    params: PolicyParams,
    thin: SparseQGaussian,
    weights: torch.Tensor,
    config: Any,
    q: QIndices,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FtTPO's thin loss, ``KL(pi_theta || pi_phi)`` to the frozen fat proposal on
    ``kl_num_samples`` reparameterised thin samples (docs/algorithm.md §2 step 4)."""
    samples = thin.rsample((config.kl_num_samples,))
    fat_frozen = module.fat_distribution(params, detach=True, q=q.fat)
    loss = losses.reverse_kl_estimate(
        thin.log_prob(samples), fat_frozen.log_prob(samples), config.kl_ratio_clip
    )
    return loss, {}


def random_action_replacement_loss(
    module: FtTPOTorchRLModule,
    batch: dict[str, Any],
    params: PolicyParams,
    thin: SparseQGaussian,
    weights: torch.Tensor,
    config: Any,
    q: QIndices,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RAR's thin loss, ``-E[w log pi_theta(a~|s)]`` with each dataset action outside the thin
    support replaced by the nearest of ``rar_num_samples`` thin samples (docs/algorithm.md §3);
    reports the share replaced."""
    actions = batch[Columns.ACTIONS]
    with torch.no_grad():
        inside = torch.isfinite(thin.log_prob(actions))
        candidates = thin.sample((config.rar_num_samples,))
    replaced = losses.random_action_replacement(actions, inside, candidates)
    loss = losses.weighted_log_likelihood_loss(thin.log_prob(replaced.actions), weights)
    return loss, {RAR_REPLACED_FRAC: replaced.replaced.float().mean()}


def boltzmann_reverse_kl_loss(
    module: FtTPOTorchRLModule,
    batch: dict[str, Any],
    params: PolicyParams,
    thin: SparseQGaussian,
    weights: torch.Tensor,
    config: Any,
    q: QIndices,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reverse-KL baseline's thin loss, ``E_{b~pi_theta}[log pi_theta(b|s) - Q(s, b)/tau]``
    on one reparameterised sample, the critics frozen but passing gradient to ``b``
    (docs/algorithm.md §3)."""
    samples = thin.rsample()
    q_at_samples = module.q_aggregate(batch[Columns.OBS], samples, frozen=True)
    loss = losses.reverse_kl_to_boltzmann_loss(
        thin.log_prob(samples), q_at_samples, config.kl_weight
    )
    return loss, {}


#: The loss function of each way to train the thin policy (a variant's ``thin_loss``). A plain
#: dict: the compiled step looks it up, and dynamo does not trace a ``MappingProxyType``.
THIN_LOSSES: dict[ThinLoss, ThinLossFn] = {
    ThinLoss.FAT_TO_THIN_KL: fat_to_thin_kl_loss,
    ThinLoss.RANDOM_ACTION_REPLACEMENT: random_action_replacement_loss,
    ThinLoss.BOLTZMANN_REVERSE_KL: boltzmann_reverse_kl_loss,
}


def fttpo_losses(
    module: FtTPOTorchRLModule,
    batch: dict[str, Any],
    fwd_out: dict[str, Any],
    config: Any,
    q: QIndices | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """All losses of one gradient step (keyed by optimizer name) and diagnostics.

    ``config`` needs ``gamma, kl_weight, weight_q, w_max, kl_num_samples, kl_ratio_clip,
    rar_num_samples`` (the learner passes a :class:`StepHyperParameters`, whose swept fields
    are tensors); ``q`` the module's q indices (``None``: its floats; the learner passes them as
    tensors). Pure with respect to the learner: tests call it on a bare module. No branch
    depends on a tensor's value, so it never waits for the device and compiles as one graph.
    What each variant trains is read from its spec (``module.spec``).
    """
    obs = batch[Columns.OBS]
    actions = batch[Columns.ACTIONS]
    params = PolicyParams(
        loc=fwd_out[LOC], fat_scale=fwd_out[FAT_SCALE], thin_halfwidth=fwd_out[THIN_HALFWIDTH]
    )
    spec = module.spec
    if q is None:
        q = QIndices(fat=module.fat_q, thin=module.thin_q)

    # Targets, without gradient: TD target with a' ~ proposal (fat, or thin if there is
    # none), value target with b ~ the acting policy.
    with torch.no_grad():
        next_params = module.policy_params(batch[Columns.NEXT_OBS])
        if spec.proposal is Policy.FAT:
            next_actions = module.fat_distribution(next_params, detach=True, q=q.fat).sample()
            next_actions = next_actions.clamp(-1.0, 1.0)
        else:
            next_actions = module.thin_distribution(next_params, detach_loc=True, q=q.thin).sample()
        next_q = module.q_aggregate(batch[Columns.NEXT_OBS], next_actions, target=True)
        target = losses.td_target(
            batch[Columns.REWARDS], batch[Columns.TERMINATEDS], next_q, config.gamma
        )
        if spec.acting_policy is Policy.THIN:
            policy_actions = module.thin_distribution(params, detach_loc=True, q=q.thin).sample()
        else:
            policy_actions = module.fat_distribution(params, detach=True, q=q.fat).sample()
            policy_actions = policy_actions.clamp(-1.0, 1.0)
        q_target_at_policy = module.q_aggregate(obs, policy_actions, target=True)

    q_preds = module.q_values(obs, actions)
    critic_loss = losses.critic_loss(q_preds, target)
    v = module.state_value(obs)
    value_loss = losses.value_loss(v, q_target_at_policy)

    q_min_data = module.aggregate(q_preds.detach())
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

    if spec.has_fat:
        fat = module.fat_distribution(params, detach=False, q=q.fat)
        named[FAT] = losses.weighted_log_likelihood_loss(fat.log_prob(actions), weights.weights)
        metrics[FAT_SCALE_MEAN] = params.fat_scale.detach().mean()

    if spec.has_thin:
        thin = module.thin_distribution(params, detach_loc=spec.thin_detached, q=q.thin)
        thin_loss = THIN_LOSSES[spec.thin_loss]
        named[THIN], thin_metrics = thin_loss(
            module, batch, params, thin, weights.weights, config, q
        )
        metrics.update(thin_metrics)
        metrics[THIN_HALFWIDTH_MEAN] = params.thin_halfwidth.detach().mean()

    return named, metrics


def step_checks(batch: dict[str, Any], named: dict[str, torch.Tensor]) -> torch.Tensor:
    """Boolean vector: each of :data:`FLOAT_COLUMNS`, then each loss, is finite."""
    columns = [torch.isfinite(batch[column]).all() for column in FLOAT_COLUMNS]
    return torch.stack([*columns, *(torch.isfinite(loss) for loss in named.values())])


def losses_and_gradients(
    module: FtTPOTorchRLModule,
    batch: dict[str, torch.Tensor],
    config: Any,
    params: Sequence[torch.nn.Parameter],
    q: QIndices | None = None,
) -> StepResult:
    """Forward pass, losses and their gradients with respect to ``params`` (one backward pass).

    Returns the summed loss, the losses and diagnostics of :func:`fttpo_losses` (detached),
    :func:`step_checks` and the gradients (``None`` for a parameter no loss reaches). The part of
    a gradient step that :func:`compile_step` compiles: all but the optimizer steps and the
    polyak update.
    """
    named, metrics = fttpo_losses(module, batch, module.forward_train(batch), config, q)
    total = torch.stack(list(named.values())).sum()
    grads = torch.autograd.grad(total, list(params), allow_unused=True)
    checks = step_checks(batch, named)
    detached = {name: loss.detach() for name, loss in named.items()}
    return total.detach(), detached, metrics, checks, grads


def compile_step(step: Callable[..., StepResult]) -> Callable[..., StepResult]:
    """``step`` compiled with ``torch.compile`` (inductor, one graph), or ``step`` itself.

    Compilation happens at the first call; where it fails (no C++ compiler, an unsupported
    platform), one warning is logged and ``step`` runs eagerly from then on. Inductor runs with
    :data:`INDUCTOR_OPTIONS`: random numbers are drawn by the same kernels as in eager mode
    (``fallback_random``), so a compiled step equals the eager one for the same seed.
    """
    compiled = torch.compile(step, fullgraph=True, options=INDUCTOR_OPTIONS)
    state: dict[str, Callable[..., StepResult]] = {}

    def run(*args: Any) -> StepResult:
        fn = state.get("fn")
        if fn is not None:
            with torch._dynamo.config.patch(DYNAMO_CONFIG):
                return fn(*args)
        try:
            with torch._dynamo.config.patch(DYNAMO_CONFIG):
                out = compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back to eager
            logger.warning(
                "compile_update: torch.compile failed (%s: %s); the gradient step runs eagerly",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            state["fn"] = step
            return step(*args)
        state["fn"] = compiled
        return out

    return run


def optimizer_groups(
    module: FtTPOTorchRLModule, config: Any
) -> dict[str, tuple[list[torch.nn.Parameter], float]]:
    """Optimizer name -> (parameters, learning rate), as in ``fttpo_learner``'s table."""
    groups: dict[str, tuple[list[torch.nn.Parameter], float]] = {
        CRITIC: (list(module.critics.parameters()), config.critic_lr),
        VALUE: (list(module.value.parameters()), config.value_lr),
    }
    shared = list(module.policy_torso.parameters()) + list(module.loc_head.parameters())
    if module.spec.has_fat:
        groups[FAT] = (shared + list(module.fat_scale_head.parameters()), config.actor_lr)
    if module.spec.has_thin:
        thin = list(module.thin_scale_head.parameters())
        if hasattr(module, "thin_torso"):
            thin += list(module.thin_torso.parameters())
        if not module.spec.thin_detached:
            thin = shared + thin
        groups[THIN] = (thin, config.actor_lr)
    return groups


def make_optimizer(
    name: str, params: list[torch.nn.Parameter], config: Any
) -> torch.optim.Optimizer:
    """Fused Adam for optimizer ``name``; the critics' is AdamW with ``critic_weight_decay``
    (decoupled weight decay, docs/algorithm.md §2.1) when that is > 0."""
    if name == CRITIC and config.critic_weight_decay > 0.0:
        return torch.optim.AdamW(params, weight_decay=config.critic_weight_decay, fused=True)
    return torch.optim.Adam(params, fused=True)


def polyak_update(module: FtTPOTorchRLModule, tau: float) -> None:
    """``target <- (1 - tau) target + tau online`` for every target network, in one kernel call."""
    targets: list[torch.Tensor] = []
    onlines: list[torch.Tensor] = []
    for online, target in module.target_network_pairs():
        targets += list(target.parameters())
        onlines += list(online.parameters())
    with torch.no_grad():
        torch._foreach_lerp_(targets, onlines, tau)


class UpdateStats:
    """Per-module step statistics of one ``update()`` call, kept on the module's device.

    ``sums`` adds each step's statistics vector; ``first_bad`` holds, for each finiteness check
    (the float batch columns, the losses, the gradient), the first gradient step at which it
    failed (``-1``: never). :meth:`read` is the one host synchronisation per ``update()`` call.
    """

    def __init__(self, names: list[str], checks: list[str], device: torch.device) -> None:
        self.names = names
        self.checks = checks
        self.sums = torch.zeros(len(names), device=device)
        self.first_bad = torch.full((len(checks),), -1, dtype=torch.int64, device=device)
        self.steps = 0

    def add(self, values: torch.Tensor, checks: torch.Tensor, step: int) -> None:
        """Add one step's statistics and its (column and loss) checks."""
        self.sums.add_(values)
        self._check(checks, 0, step)
        self.steps += 1

    def add_gradient_check(self, finite: torch.Tensor, step: int) -> None:
        self._check(finite.reshape(1), len(self.checks) - 1, step)

    def _check(self, ok: torch.Tensor, start: int, step: int) -> None:
        part = self.first_bad[start : start + ok.numel()]
        part.copy_(torch.where((part < 0) & ~ok, step, part))

    def read(self) -> tuple[dict[str, float], list[int]]:
        """(mean of each statistic over the steps, ``first_bad``); then starts anew."""
        means = (self.sums / max(self.steps, 1)).tolist()
        first_bad = self.first_bad.tolist()
        self.sums.zero_()
        self.first_bad.fill_(-1)
        self.steps = 0
        return dict(zip(self.names, means, strict=True)), first_bad


def non_finite_message(checks: list[str], first_bad: list[int]) -> str | None:
    """The error for the earliest failed check (a batch column first), or None if none failed."""
    failed = [step for step in first_bad if step >= 0]
    if not failed:
        return None
    step = min(failed)
    bad = [name for name, at in zip(checks, first_bad, strict=True) if at == step]
    columns = [name for name in bad if name in FLOAT_COLUMNS]
    if columns:
        return (
            f"non-finite value in batch column '{columns[0]}' at gradient step {step}; "
            "clean the dataset (NaN/inf in observations, actions or rewards)"
        )
    named = [name for name in bad if name != GRADIENT_CHECK]
    if named:
        return (
            f"{', '.join(named)} became non-finite at gradient step {step}; lower the learning "
            "rates or raise kl_weight (training stopped before the value reached a checkpoint)"
        )
    return (
        f"non-finite gradient at gradient step {step}; lower the learning rates (training "
        "stopped before the value reached a checkpoint)"
    )


class FtTPOTorchLearner(FtTPOLearner, TorchLearner):
    """FtTPO's learner: four fused Adam optimizers, losses from :mod:`..losses`, per-step polyak.

    Deviations from a literal reading of the paper, and why:

    - **One backward pass.** The four losses are summed and differentiated once (RLlib's
      default ``compute_gradients``), then every optimizer steps. This equals running the four
      updates one after another *on the same parameters* (Jacobi order) because every
      cross-network input is detached (TD and value targets, advantages, the fat policy inside
      the thin loss, the critics inside the reverse-KL loss): each loss's gradient reaches only
      its own optimizer's parameters, which
      ``tests/algorithms/test_fttpo_learner.py::test_each_loss_reaches_only_its_optimizers_parameters``
      checks for every variant. It differs from the authors' Gauss–Seidel order (each update
      seeing the previous one's new parameters) by one step of staleness; one backward pass is
      what multi-learner DDP needs.
    - **Polyak update after every gradient step**, inside :meth:`apply_gradients` (RLlib's
      ``after_gradient_based_update`` runs once per ``update()`` call, i.e. once per iteration).
    - **Non-finite values stop training** with :class:`NonFiniteError` naming the batch column
      or the loss and the first gradient step at which it was NaN/inf, instead of RLlib's
      zeroing of NaN gradients (``torch_skip_nan_gradients`` is on by default, which turns
      RLlib's per-tensor checks off). The checks are tensors, read once at the end of the
      ``update()`` call, so a NaN never reaches a checkpoint and the device never waits.
    - **Logged losses and diagnostics are means over the ``update()`` call's gradient steps**
      (one read per call), not the last step's values.

    ``compile_update`` compiles forward pass, losses and backward pass as one graph
    (:func:`compile_step`) that reads q, tau and gamma as tensors (:class:`StepHyperParameters`),
    so one graph serves a whole sweep; the fused optimizer steps and the polyak update run
    eagerly (``torch.optim`` breaks graphs around ``step()`` and the fused Adam kernel is not
    traced; together they take ~4% of a compiled step, ``throughput_compile_*.md``).
    RLlib's own ``torch_compile_learner`` is not used for this: its ``forward_train`` mode
    compiles only the policy forward pass (not the critics, losses or backward), and its
    ``complete_update`` mode compiles RLlib's whole ``_uncompiled_update`` — metrics logging,
    ``optimizer.step()`` — which cannot be one graph (``fullgraph`` is not offered).
    """

    @override(TorchLearner)
    def build(self, **kwargs: Any) -> None:
        super().build(**kwargs)
        self._grad_step = 0
        self._stats: dict[ModuleID, UpdateStats] = {}
        self._compiled_steps: dict[ModuleID, Callable[..., StepResult]] = {}
        self._hyper_parameters: dict[ModuleID, StepHyperParameters] = {}
        # Rows and minibatches trained per module, and env steps, since the last update() end.
        self._trained_rows: dict[ModuleID, int] = {}
        self._trained_batches: dict[ModuleID, int] = {}
        self._trained_env_steps = 0

    # ---- optimizers ----------------------------------------------------------------------------

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        groups = optimizer_groups(self._module[module_id], config)
        for name, (params, lr) in groups.items():
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=make_optimizer(name, params, config),
                params=params,
                lr_or_lr_schedule=lr,
            )

    # ---- losses --------------------------------------------------------------------------------

    @override(Learner)
    def compute_loss_for_module(
        self,
        *,
        module_id: ModuleID,
        config: Any = None,
        batch: dict[str, Any],
        fwd_out: dict[str, Any],
    ) -> torch.Tensor:
        module: FtTPOTorchRLModule = self._module[module_id].unwrapped()
        hyper = self.step_hyper_parameters(module_id, config)
        named, metrics = fttpo_losses(module, batch, fwd_out, hyper, hyper.q)
        self._record(module_id, named, metrics, step_checks(batch, named))
        return torch.stack(list(named.values())).sum()

    def step_hyper_parameters(self, module_id: ModuleID, config: Any) -> StepHyperParameters:
        """The module's :class:`StepHyperParameters`, its tensors set to ``config``'s values in
        place (the same tensors at every step: the compiled graph's inputs)."""
        module: FtTPOTorchRLModule = self._module[module_id].unwrapped()
        hyper = self._hyper_parameters.get(module_id)
        if hyper is None or not hyper.matches(module, config):
            device = next(module.parameters()).device
            hyper = StepHyperParameters.from_config(module, config, device)
            self._hyper_parameters[module_id] = hyper
        else:
            hyper.update(module, config)
        return hyper

    def _record(
        self,
        module_id: ModuleID,
        named: dict[str, torch.Tensor],
        metrics: dict[str, torch.Tensor],
        checks: torch.Tensor,
    ) -> None:
        """Add one step's losses, diagnostics and checks to the module's :class:`UpdateStats`."""
        values = torch.stack([*named.values(), *metrics.values()]).detach()
        stats = self._stats.get(module_id)
        if stats is None:
            stats = UpdateStats(
                names=[LOSS_KEYS[name] for name in named] + list(metrics),
                checks=[*FLOAT_COLUMNS, *(LOSS_KEYS[name] for name in named), GRADIENT_CHECK],
                device=values.device,
            )
            self._stats[module_id] = stats
        stats.add(values, checks, self._grad_step + 1)

    # ---- the compiled step ---------------------------------------------------------------------

    @override(TorchLearner)
    def _update(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any, Any]:
        """RLlib's update step, or with ``compile_update`` the compiled :func:`compile_step`."""
        if not self.config.compile_update:
            return super()._update(batch, **kwargs)
        gradients: ParamDict = {}
        loss_per_module: dict[ModuleID, torch.Tensor] = {}
        for module_id, module_batch in batch.items():
            module: FtTPOTorchRLModule = self._module[module_id].unwrapped()
            params = [
                param
                for _, optimizer in self.get_optimizers_for_module(module_id)
                for param in self._optimizer_parameters[optimizer]
            ]
            step = self._compiled_steps.get(module_id)
            if step is None:
                step = compile_step(losses_and_gradients)
                self._compiled_steps[module_id] = step
            config = self.config.get_config_for_module(module_id)
            hyper = self.step_hyper_parameters(module_id, config)
            plain_batch = {column: module_batch[column] for column in BATCH_COLUMNS}
            total, named, metrics, checks, grads = step(module, plain_batch, hyper, params, hyper.q)
            self._record(module_id, named, metrics, checks)
            loss_per_module[module_id] = total
            gradients.update(zip(params, grads, strict=True))
        self.apply_gradients(self.postprocess_gradients(gradients))
        return {}, loss_per_module, {}

    # ---- gradients -----------------------------------------------------------------------------

    @override(TorchLearner)
    def apply_gradients(self, gradients_dict: ParamDict) -> None:
        """RLlib's optimizer steps (its lr schedules via ``critic_lr`` etc.), then polyak.

        RLlib's torch LR schedulers and grad scaler are rejected by ``FtTPOConfig.validate``
        (RLlib 2.60 keeps one scheduler per module and shares one scaler among its optimizers).
        """
        grads = [g for g in gradients_dict.values() if g is not None]
        if grads:
            finite = torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())
            for stats in self._stats.values():
                stats.add_gradient_check(finite, self._grad_step + 1)
        super().apply_gradients(gradients_dict)
        self._grad_step += 1
        for module_id in self._module_optimizers:
            module: FtTPOTorchRLModule = self._module[module_id].unwrapped()
            polyak_update(module, self.config.get_config_for_module(module_id).polyak)

    @override(Learner)
    def _log_steps_trained_metrics(self, batch: MultiAgentBatch) -> None:
        """Counts the minibatch's rows; logged once per ``update()`` call (RLlib logs eight
        values per minibatch, about 2% of a gradient step), with the same totals and means."""
        for module_id, module_batch in batch.policy_batches.items():
            self._trained_rows[module_id] = self._trained_rows.get(module_id, 0) + len(module_batch)
            self._trained_batches[module_id] = self._trained_batches.get(module_id, 0) + 1
        self._trained_env_steps += batch.env_steps()

    def _log_trained_counts(self) -> None:
        """RLlib's steps-trained metrics, for all minibatches of this ``update()`` call."""
        if not self._trained_batches:
            return
        for module_id, rows in self._trained_rows.items():
            batches = self._trained_batches[module_id]
            self.metrics.log_value((module_id, WEIGHTS_SEQ_NO), self._weights_seq_no, window=1)
            self.metrics.log_value(
                (module_id, MODULE_TRAIN_BATCH_SIZE_MEAN), rows / batches, reduce="mean"
            )
            self.metrics.log_value((module_id, NUM_MODULE_STEPS_TRAINED), rows, reduce="sum")
            self.metrics.log_value(
                (module_id, NUM_MODULE_STEPS_TRAINED_LIFETIME),
                rows,
                reduce="lifetime_sum",
                with_throughput=True,
            )
        total_rows = sum(self._trained_rows.values())
        for key, value, reduce in (
            (NUM_MODULE_STEPS_TRAINED, total_rows, "sum"),
            (NUM_MODULE_STEPS_TRAINED_LIFETIME, total_rows, "lifetime_sum"),
            (NUM_ENV_STEPS_TRAINED, self._trained_env_steps, "sum"),
            (NUM_ENV_STEPS_TRAINED_LIFETIME, self._trained_env_steps, "lifetime_sum"),
        ):
            self.metrics.log_value((ALL_MODULES, key), value, reduce=reduce, with_throughput=True)
        self._trained_rows.clear()
        self._trained_batches.clear()
        self._trained_env_steps = 0

    @override(TorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        self._log_trained_counts()
        for module_id, stats in self._stats.items():
            means, first_bad = stats.read()
            message = non_finite_message(stats.checks, first_bad)
            if message is not None:
                raise NonFiniteError(message)
            for key, value in means.items():
                self.metrics.log_value((module_id, key), value, window=1)
            self.metrics.log_value((module_id, GRAD_STEPS), self._grad_step, window=1)
