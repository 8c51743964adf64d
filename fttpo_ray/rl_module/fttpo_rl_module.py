"""Fat and thin q-Gaussian policies (plus critics and value net) as one RLlib ``TorchRLModule``.

See ``docs/algorithm.md`` §1.3 (actions in a box) and §2 (networks). Layout::

    obs -> policy torso (MLP) -> loc head -> tanh            = location, shared by both policies
                              -> fat scale head               = Student-t scale   (learner only*)
        -> (detached torso features | own torso) -> thin head = support half-width
    obs, action -> critic ensemble Q_1..Q_E (+ polyak targets);  obs -> V   (learner only)

``*`` In the ``fat_only`` variant the fat policy acts, so its scale head is part of the
inference module. Environment workers receive the inference-only module: the acting policy and
nothing else (critics, value net, targets and — for FtTPO — the fat scale head are listed in
:meth:`get_non_inference_attributes`). The deterministic action is the location.

Deviations from the paper, and why:

- The location is squashed into the action box with ``tanh`` and shared by both policies: the
  paper's "thin location from the fat policy" (docs/algorithm.md §2). The thin loss receives
  it detached.
- Scales are bounded smoothly in log space, ``exp(log lo + (log hi - log lo) sigmoid(x))``,
  instead of clamped, so no gradient is ever cut off at a bound.
- The ``E = num_critics`` critics (default 2: clipped double Q) are one
  :class:`CriticEnsemble` with stacked weights, evaluated with one batched matmul per layer;
  ``Q_min`` is the minimum over the ensemble.
- Observations are standardised inside the module, ``(s - mean) / std`` with the training
  data's statistics (``obs_mean``/``obs_std`` of the model config, stored as buffers), before
  every network: checkpoints, env runners and ``fttpo eval`` apply the same transform
  (docs/algorithm.md §2.1).
- The critics may normalise their hidden layers (``critic_layer_norm``), and the ensemble is
  aggregated by its minimum or by ``mean - kappa * std`` (``critic_aggregation``; §2.1).
- With a ``safety_certificate`` (docs/algorithm.md §5.1) the module holds a reward ensemble and
  its calibrated multiplier (:class:`~fttpo_ray.rl_module.certificate.SafetyCertificate`,
  fitted by the algorithm at setup, part of the state and of the inference-only module) and
  *acts* with the thin support cut to its certified doses, or the safe action where none is
  certified (:meth:`FtTPOTorchRLModule.certified_distribution`); ``thin_distribution`` stays
  the plain thin policy, which the thin loss trains.
- With ``thin_support_in_box`` (default) the half-width is capped at ``1 - |loc|`` (never below
  its lower bound): the support then lies in ``[-1, 1]`` except when ``|loc| > 1 - lo``; the
  evaluation reports how often the support leaves the box.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from fttpo_ray.distributions import HeavyTailedQGaussian, SparseQGaussian
from fttpo_ray.rl_module.action_distributions import (
    certified_dist_cls,
    fat_dist_cls,
    thin_dist_cls,
)
from fttpo_ray.rl_module.certificate import (
    CertifiedSupport,
    CertifiedThinDistribution,
    SafetyCertificate,
)
from fttpo_ray.rl_module.variants import DEFAULT_VARIANT, Policy, VariantSpec, variant_spec

# Keys of the module's model config (set by FtTPOConfig; see its docstrings).
HIDDENS = "fcnet_hiddens"
VARIANT = "variant"
FAT_Q = "fat_q"
THIN_Q = "thin_q"
NUM_CRITICS = "num_critics"
THIN_HALFWIDTH_BOUNDS = "thin_halfwidth_bounds"
FAT_SCALE_BOUNDS = "fat_scale_bounds"
THIN_SUPPORT_IN_BOX = "thin_support_in_box"
THIN_HALFWIDTH_TORSO = "thin_halfwidth_torso"
OBS_MEAN = "obs_mean"
OBS_STD = "obs_std"
CRITIC_LAYER_NORM = "critic_layer_norm"
CRITIC_AGGREGATION = "critic_aggregation"
CRITIC_KAPPA = "critic_kappa"
#: ``None`` (no certificate) or the certificate's shape: ``{CERTIFICATE_MEMBERS: E,
#: CERTIFICATE_HIDDENS: [...], CERTIFICATE_GRID_POINTS: G, SAFE_ACTION: a (normalised)}``.
SAFETY_CERTIFICATE = "safety_certificate"
CERTIFICATE_MEMBERS = "members"
CERTIFICATE_HIDDENS = "hiddens"
CERTIFICATE_GRID_POINTS = "grid_points"
SAFE_ACTION = "safe_action"

# Aggregations of the critic ensemble (docs/algorithm.md §2.1).
AGGREGATION_MIN = "min"
AGGREGATION_MEAN_STD = "mean_std"
AGGREGATIONS = (AGGREGATION_MIN, AGGREGATION_MEAN_STD)

# Buffers holding the observation statistics (part of the module's state, so of checkpoints).
OBS_SHIFT_BUFFER = "obs_shift"
OBS_SCALE_BUFFER = "obs_scale"

# Outputs of forward_train (the policy parameters at the batch's observations).
LOC = "loc"
FAT_SCALE = "fat_scale"
THIN_HALFWIDTH = "thin_halfwidth"

# Where the thin half-width head reads its features.
TORSO_SHARED = "shared"
TORSO_OWN = "own"

# Attribute names of the sub-networks.
FAT_SCALE_HEAD = "fat_scale_head"
CERTIFICATE = "certificate"
CRITICS = "critics"
TARGET_CRITICS = "target_critics"
VALUE = "value"

#: The module's defaults: the one source of FtTPOConfig's model-config fields too.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    HIDDENS: [256, 256],
    VARIANT: DEFAULT_VARIANT,
    FAT_Q: 2.0,
    THIN_Q: 0.0,
    NUM_CRITICS: 2,
    THIN_HALFWIDTH_BOUNDS: (1e-3, 1.0),
    FAT_SCALE_BOUNDS: (1e-3, 10.0),
    THIN_SUPPORT_IN_BOX: True,
    THIN_HALFWIDTH_TORSO: TORSO_SHARED,
    OBS_MEAN: None,
    OBS_STD: None,
    CRITIC_LAYER_NORM: False,
    CRITIC_AGGREGATION: AGGREGATION_MIN,
    CRITIC_KAPPA: 1.0,
    SAFETY_CERTIFICATE: None,
}

# Model-config keys of checkpoints written before the thin width was called "halfwidth".
LEGACY_THIN_SCALE_BOUNDS = "thin_scale_bounds"
LEGACY_THIN_SCALE_TORSO = "thin_scale_torso"
#: Old model-config key -> the key it is read as.
RENAMED_MODEL_CONFIG_KEYS = {
    LEGACY_THIN_SCALE_BOUNDS: THIN_HALFWIDTH_BOUNDS,
    LEGACY_THIN_SCALE_TORSO: THIN_HALFWIDTH_TORSO,
}


def resolve_model_config(model_config: dict[str, Any] | None) -> dict[str, Any]:
    """:data:`DEFAULT_MODEL_CONFIG` updated by ``model_config``, whose old keys
    (:data:`RENAMED_MODEL_CONFIG_KEYS`, from older checkpoints) count under their current names;
    where both are given, the current key wins."""
    given = dict(model_config or {})
    for old, new in RENAMED_MODEL_CONFIG_KEYS.items():
        if old in given:
            given.setdefault(new, given.pop(old))
    return {**DEFAULT_MODEL_CONFIG, **given}


def mlp(in_dim: int, hiddens: list[int], out_dim: int | None = None) -> nn.Sequential:
    """ReLU MLP ``in_dim -> hiddens... [-> out_dim]`` (ReLU after every hidden layer)."""
    layers: list[nn.Module] = []
    for width in hiddens:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def bounded_scale(raw: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``exp(log low + (log high - log low) * sigmoid(raw))``: smooth, in ``(low, high)``."""
    log_low, log_high = math.log(low), math.log(high)
    return torch.exp(log_low + (log_high - log_low) * torch.sigmoid(raw))


class CriticEnsemble(nn.Module):
    """``E`` ReLU MLPs ``in_dim -> hiddens... -> 1`` with stacked weights, evaluated together.

    Layer ``l`` holds ``weight_l`` of shape ``[E, in, out]`` and ``bias_l`` of shape
    ``[E, 1, out]``; a forward pass is one ``baddbmm`` per hidden layer for the whole ensemble,
    and the output layer (``out = 1``) a product with its weight summed over ``in``: a batched
    matrix-vector product runs at ~2% of a matrix product's FLOP rate on a CPU (146 us for
    ``[2, 256, 256] @ [2, 256, 1]``), the summed product fuses with the ReLU before it. Each
    member is initialised like ``nn.Linear`` (uniform in ``±1/sqrt(in)``), independently.
    With ``layer_norm`` every hidden layer is layer-normalised before its ReLU, with a gain
    ``[E, 1, out]`` (initially 1) and shift (initially 0) per member.
    """

    def __init__(
        self, num_members: int, in_dim: int, hiddens: list[int], *, layer_norm: bool = False
    ) -> None:
        super().__init__()
        self.num_members = num_members
        self.layer_norm = layer_norm
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_gains = nn.ParameterList()
        self.norm_shifts = nn.ParameterList()
        if layer_norm:
            for width in hiddens:
                self.norm_gains.append(nn.Parameter(torch.ones(num_members, 1, width)))
                self.norm_shifts.append(nn.Parameter(torch.zeros(num_members, 1, width)))
        for width in [*hiddens, 1]:
            bound = 1.0 / math.sqrt(in_dim)
            weight = torch.empty(num_members, in_dim, width).uniform_(-bound, bound)
            bias = torch.empty(num_members, 1, width).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
            in_dim = width

    def forward(self, x: torch.Tensor, *, frozen: bool = False) -> torch.Tensor:
        """``[Q_1(x), ..., Q_E(x)]`` of shape ``(E, B)`` for inputs ``x`` of shape ``(B, in)``.

        ``frozen`` uses detached parameters: gradient reaches ``x`` but not the ensemble.
        """

        def param(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.detach() if frozen else tensor

        h = x.unsqueeze(0).expand(self.num_members, *x.shape)
        for i in range(len(self.weights) - 1):
            h = torch.baddbmm(param(self.biases[i]), h, param(self.weights[i]))
            if self.layer_norm:
                h = torch.nn.functional.layer_norm(h, h.shape[-1:])
                h = h * param(self.norm_gains[i]) + param(self.norm_shifts[i])
            h = torch.relu(h)
        weight, bias = param(self.weights[-1]), param(self.biases[-1])
        return (h * weight.transpose(1, 2)).sum(dim=-1) + bias.squeeze(-1)


@dataclass(frozen=True)
class PolicyParams:
    """Policy parameters at a batch of states; ``None`` where the variant has no such head."""

    loc: torch.Tensor
    fat_scale: torch.Tensor | None
    thin_halfwidth: torch.Tensor | None


class FtTPOTorchRLModule(TorchRLModule, InferenceOnlyAPI):
    """Fat/thin q-Gaussian policy pair, a critic ensemble and a value net (see module docstring).

    ``spec`` is the variant's row of the variant table (:mod:`fttpo_ray.rl_module.variants`):
    every choice that depends on the variant, here and in the learner and evaluation, reads it.
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = resolve_model_config(self.model_config)
        self.spec: VariantSpec = variant_spec(cfg[VARIANT])
        self.variant: str = self.spec.name
        self.fat_q = float(cfg[FAT_Q])
        self.thin_q = float(cfg[THIN_Q])
        self.num_critics = int(cfg[NUM_CRITICS])
        self.thin_scale_bounds = tuple(float(x) for x in cfg[THIN_HALFWIDTH_BOUNDS])
        self.fat_scale_bounds = tuple(float(x) for x in cfg[FAT_SCALE_BOUNDS])
        self.thin_support_in_box = bool(cfg[THIN_SUPPORT_IN_BOX])
        self.thin_scale_torso = cfg[THIN_HALFWIDTH_TORSO]
        self.critic_aggregation = cfg[CRITIC_AGGREGATION]
        self.critic_kappa = float(cfg[CRITIC_KAPPA])
        hiddens = list(cfg[HIDDENS])

        if not isinstance(self.action_space, gym.spaces.Box):
            raise ValueError(
                f"FtTPO needs a continuous (Box) action space; got {self.action_space}"
            )
        obs_dim = int(self.observation_space.shape[0])
        act_dim = int(self.action_space.shape[0])
        shift = torch.zeros(obs_dim) if cfg[OBS_MEAN] is None else torch.tensor(cfg[OBS_MEAN])
        scale = torch.ones(obs_dim) if cfg[OBS_STD] is None else torch.tensor(cfg[OBS_STD])
        if shift.shape != (obs_dim,) or scale.shape != (obs_dim,) or not bool((scale > 0).all()):
            raise ValueError(
                f"`{OBS_MEAN}`/`{OBS_STD}` must be {obs_dim} numbers each (std > 0); got "
                f"{cfg[OBS_MEAN]!r} and {cfg[OBS_STD]!r}"
            )
        self.register_buffer(OBS_SHIFT_BUFFER, shift.to(torch.float32))
        self.register_buffer(OBS_SCALE_BUFFER, scale.to(torch.float32))

        self.policy_torso = mlp(obs_dim, hiddens)
        self.loc_head = nn.Linear(hiddens[-1], act_dim)
        if self.spec.has_fat:
            self.fat_scale_head = nn.Linear(hiddens[-1], act_dim)
        if self.spec.has_thin:
            if self.thin_scale_torso == TORSO_OWN:
                self.thin_torso = mlp(obs_dim, hiddens)
            self.thin_scale_head = nn.Linear(hiddens[-1], act_dim)

        if not self.inference_only:
            self.critics = CriticEnsemble(
                self.num_critics,
                obs_dim + act_dim,
                hiddens,
                layer_norm=bool(cfg[CRITIC_LAYER_NORM]),
            )
            self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
            self.value = mlp(obs_dim, hiddens, 1)

        thin_acts = self.spec.acting_policy is Policy.THIN
        self._acting_dist_cls = (
            thin_dist_cls(self.thin_q) if thin_acts else fat_dist_cls(self.fat_q)
        )
        shape = cfg[SAFETY_CERTIFICATE]
        if shape is not None:
            if not thin_acts or act_dim != 1:
                raise ValueError(
                    "`safety_certificate` needs a thin acting policy and a 1-D action space; got "
                    f"variant {self.variant!r} with {act_dim}-D actions"
                )
            self.certificate = SafetyCertificate(
                obs_dim,
                num_members=int(shape[CERTIFICATE_MEMBERS]),
                hiddens=list(shape[CERTIFICATE_HIDDENS]),
                grid_points=int(shape[CERTIFICATE_GRID_POINTS]),
                safe_action=float(shape[SAFE_ACTION]),
            )
            self._acting_dist_cls = certified_dist_cls(self.thin_q)

    # ---- RLlib API -----------------------------------------------------------------------------

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        attrs = [CRITICS, TARGET_CRITICS, VALUE]
        if self.spec.fat_on_learner_only:
            attrs.append(FAT_SCALE_HEAD)
        return attrs

    @override(TorchRLModule)
    def get_inference_action_dist_cls(self) -> type:
        return self._acting_dist_cls

    @override(TorchRLModule)
    def get_exploration_action_dist_cls(self) -> type:
        return self._acting_dist_cls

    @override(TorchRLModule)
    def get_train_action_dist_cls(self) -> type:
        return self._acting_dist_cls

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Acting-policy parameters ``[loc, scale]`` as ``action_dist_inputs``; with a
        certificate ``[low, high, abstain]`` of the certified support."""
        params = self.policy_params(batch[Columns.OBS])
        if CERTIFICATE in self._modules:
            support = self.certified_support(batch[Columns.OBS], params)
            inputs = [support.low, support.high, support.abstain.to(support.low.dtype)]
            return {Columns.ACTION_DIST_INPUTS: torch.stack(inputs, dim=-1)}
        thin_acts = self.spec.acting_policy is Policy.THIN
        scale = params.thin_halfwidth if thin_acts else params.fat_scale
        return {Columns.ACTION_DIST_INPUTS: torch.cat([params.loc, scale], dim=-1)}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Policy parameters at ``obs``; the learner asks for the critic/value outputs it needs
        (they depend on sampled actions)."""
        params = self.policy_params(batch[Columns.OBS])
        return {LOC: params.loc, FAT_SCALE: params.fat_scale, THIN_HALFWIDTH: params.thin_halfwidth}

    # ---- networks ------------------------------------------------------------------------------

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """``(obs - mean) / std`` with the training data's statistics (identity without them)."""
        return (obs - self.obs_shift) / self.obs_scale

    def policy_params(self, obs: torch.Tensor) -> PolicyParams:
        """Location, fat scale and thin half-width at raw observations ``obs`` (one torso pass).

        Where the variant's ``thin_detached`` (FtTPO), the thin head sees the location and torso
        features *detached*: the thin loss never moves the shared location (docs/algorithm.md
        §2).
        """
        obs = self.normalize_obs(obs)
        features = self.policy_torso(obs)
        loc = torch.tanh(self.loc_head(features))
        fat_scale = None
        if FAT_SCALE_HEAD in self._modules:  # absent from FtTPO's inference-only module
            fat_scale = bounded_scale(self.fat_scale_head(features), *self.fat_scale_bounds)
        thin_halfwidth = None
        if self.spec.has_thin:
            detached = self.spec.thin_detached
            if self.thin_scale_torso == TORSO_OWN:
                thin_features = self.thin_torso(obs)
            elif detached:
                thin_features = features.detach()
            else:
                thin_features = features
            thin_loc = loc.detach() if detached else loc
            thin_halfwidth = self._halfwidth(self.thin_scale_head(thin_features), thin_loc)
        return PolicyParams(loc=loc, fat_scale=fat_scale, thin_halfwidth=thin_halfwidth)

    def _halfwidth(self, raw: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        low, high = self.thin_scale_bounds
        halfwidth = bounded_scale(raw, low, high)
        if self.thin_support_in_box:
            room = (1.0 - loc.abs()).clamp(min=low)
            halfwidth = torch.minimum(halfwidth, room)
        return halfwidth

    def thin_distribution(
        self, params: PolicyParams, *, detach_loc: bool, q: float | torch.Tensor | None = None
    ) -> SparseQGaussian:
        """The thin policy ``pi_theta(.|s)``; its location is detached for FtTPO's thin loss
        (the variant's ``thin_detached``). ``q``: ``thin_q`` as given (the learner's compiled
        step passes a 0-d tensor of the same value), else the module's."""
        loc = params.loc.detach() if detach_loc else params.loc
        q = self.thin_q if q is None else q
        return SparseQGaussian(loc, params.thin_halfwidth, q, validate_args=False)

    def certified_support(self, obs: torch.Tensor, params: PolicyParams) -> CertifiedSupport:
        """The thin support at raw ``obs`` cut to its certified doses (docs/algorithm.md §5.1)."""
        return self.certificate.cut(obs, params.loc.detach(), params.thin_halfwidth.detach())

    def certified_distribution(self, obs: torch.Tensor) -> CertifiedThinDistribution:
        """The acting policy with a certificate: the thin policy re-fitted to the certified
        support, or the safe action where no dose of the thin support is certified."""
        support = self.certified_support(obs, self.policy_params(obs))
        return CertifiedThinDistribution(support, self.thin_q, self.certificate.multiplier)

    def fat_distribution(
        self, params: PolicyParams, *, detach: bool, q: float | torch.Tensor | None = None
    ) -> HeavyTailedQGaussian:
        """The fat proposal ``pi_phi(.|s)``; fully detached when it only serves as a target.
        ``q``: ``fat_q`` as given (the learner's compiled step passes a 0-d tensor of the same
        value where ``fat_q > 1``), else the module's."""
        loc, scale = params.loc, params.fat_scale
        if detach:
            loc, scale = loc.detach(), scale.detach()
        q = self.fat_q if q is None else q
        return HeavyTailedQGaussian(loc, scale, q, validate_args=False)

    def q_values(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        *,
        target: bool = False,
        frozen: bool = False,
    ) -> torch.Tensor:
        """``[Q_1(s, a), ..., Q_E(s, a)]``, shape ``(E, B)``, at raw observations ``obs``.

        ``target`` uses the polyak-averaged copies. ``frozen`` evaluates the online critics with
        detached parameters, so gradient reaches ``actions`` but not the critics (reverse KL).
        """
        x = torch.cat([self.normalize_obs(obs), actions], dim=-1)
        if target:
            return self.target_critics(x)
        return self.critics(x, frozen=frozen)

    def q_min(self, obs: torch.Tensor, actions: torch.Tensor, **kwargs: bool) -> torch.Tensor:
        """``min_i Q_i(s, a)`` over the ensemble, shape ``(B,)`` (keywords of :meth:`q_values`)."""
        return self.q_values(obs, actions, **kwargs).amin(dim=0)

    def q_aggregate(self, obs: torch.Tensor, actions: torch.Tensor, **kwargs: bool) -> torch.Tensor:
        """The ensemble's pessimistic value ``Q_agg(s, a)``, shape ``(B,)`` (docs/algorithm.md
        §2.1): the minimum (``critic_aggregation="min"``) or ``mean - kappa * std`` over the
        ``E`` critics (population std; with ``E = 2`` and ``kappa = 1`` this is the minimum).
        Keywords of :meth:`q_values`."""
        return self.aggregate(self.q_values(obs, actions, **kwargs))

    def aggregate(self, q: torch.Tensor) -> torch.Tensor:
        """:meth:`q_aggregate` of given ensemble values ``q`` of shape ``(E, B)``."""
        if self.critic_aggregation == AGGREGATION_MIN:
            return q.amin(dim=0)
        return q.mean(dim=0) - self.critic_kappa * q.std(dim=0, correction=0)

    def state_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``V(s)`` at raw observations ``obs``, shape ``(B,)``."""
        return self.value(self.normalize_obs(obs)).squeeze(-1)

    def target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(online, target)`` pairs for the polyak update: the critic ensemble."""
        return [(self.critics, self.target_critics)]
