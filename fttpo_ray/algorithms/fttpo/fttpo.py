"""FtTPO — Fat-to-Thin Policy Optimization — as an RLlib offline algorithm (new API stack).

Zhu, Wang, Nagai, "Fat-to-Thin Policy Optimization: Offline RL with Sparse Policies", ICLR 2025
(arXiv 2501.14373). Described in ``docs/algorithm.md`` §2 (algorithm), §3 (baselines,
as ``variant``), §5 (safety metrics, reported at every evaluation).

.. code-block:: python

    import fttpo_ray

    config = (
        fttpo_ray.FtTPOConfig()
        .dataset("fttpo/treatment/random-v0")
        .training(fat_q=2.0, thin_q=0.0, kl_weight=0.1, gamma=0.9)
    )
    algo = config.build_algo()
    result = algo.train()  # result["evaluation"]["thin"]["violation_rate"], ...
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import (
    DEPRECATED_VALUE,
    AlgorithmConfig,
    NotProvided,
)
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import (
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    OFFLINE_SAMPLING_TIMER,
    TIMERS,
)

from fttpo_ray.algorithms.fttpo.certificate import certificate_shape, check_certificate
from fttpo_ray.algorithms.fttpo.evaluation import evaluation_function
from fttpo_ray.algorithms.fttpo.fields import check_fields
from fttpo_ray.algorithms.fttpo.prepare import PreparedData, prepare
from fttpo_ray.algorithms.fttpo.selection import (
    HELD_OUT_TRANSITIONS,
    SELECTED,
    SELECTED_CRITERION,
    SELECTED_ITERATION,
    SELECTION,
    TD_ERROR,
    select,
)
from fttpo_ray.algorithms.learner_module import learner_module
from fttpo_ray.algorithms.offline_data import (
    DEFAULT_HELD_OUT_FRACTION,
    DEFAULT_SPLIT_SEED,
    IN_MEMORY_MAX_TRANSITIONS,
    handing_over,
)
from fttpo_ray.defaults import EVALUATION_SEED
from fttpo_ray.errors import ConfigError
from fttpo_ray.metrics import (
    CRITIC_LOSS,
    FAT_LOSS,
    GRAD_STEPS_PER_S,
    LEARNER_PREFIX,
    THIN_LOSS,
    VALUE_LOSS,
)
from fttpo_ray.rl_module.fttpo_rl_module import (
    CRITIC_AGGREGATION,
    CRITIC_KAPPA,
    CRITIC_LAYER_NORM,
    DEFAULT_MODEL_CONFIG,
    FAT_Q,
    FAT_SCALE_BOUNDS,
    NUM_CRITICS,
    OBS_MEAN,
    OBS_STD,
    SAFETY_CERTIFICATE,
    THIN_HALFWIDTH_BOUNDS,
    THIN_HALFWIDTH_TORSO,
    THIN_Q,
    THIN_SUPPORT_IN_BOX,
    VARIANT,
    FtTPOTorchRLModule,
)

logger = logging.getLogger(__name__)

#: Learner metrics copied to the top-level ``learner/...`` keys of each result.
LEARNER_SUMMARY_KEYS = (CRITIC_LOSS, VALUE_LOSS, FAT_LOSS, THIN_LOSS)
#: What Tune's ``Trainable.reset`` sets for the next trial before ``reset_config`` (its storage,
#: trial info and log files), kept when :meth:`FtTPO.reset_config` rebuilds the algorithm.
_STORAGE_ATTRIBUTE = "_storage"
_TUNE_TRIAL_ATTRIBUTES = (
    _STORAGE_ATTRIBUTE,
    "_trial_info",
    "_stdout_file",
    "_stderr_file",
    "_stdout_context",
    "_stdout_fp",
    "_stdout_stream",
    "_stderr_context",
    "_stderr_fp",
    "_stderr_stream",
    "_stderr_logging_handler",
)

#: Settings renamed (old name -> name); the old names still work, with a DeprecationWarning.
RENAMED_SETTINGS: Mapping[str, str] = {
    "thin_scale_bounds": "thin_halfwidth_bounds",
    "thin_scale_torso": "thin_halfwidth_torso",
}


def _deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"`{old}` is deprecated: use {new}", DeprecationWarning, stacklevel=stacklevel)


def renamed_settings(settings: Mapping[str, Any], *, log: bool = False) -> dict[str, Any]:
    """``settings`` with the old names of :data:`RENAMED_SETTINGS` under their current names (a
    DeprecationWarning for each, and with ``log`` a logged warning, which a YAML user sees;
    where both are given, the current name wins)."""
    settings = dict(settings)
    for old, new in RENAMED_SETTINGS.items():
        if old in settings:
            _deprecated(old, f"`{new}`", stacklevel=4)
            if log:
                logger.warning("Setting `%s` is deprecated: it is now `%s`", old, new)
            value = settings.pop(old)
            settings.setdefault(new, value)
    return settings


class FtTPOConfig(AlgorithmConfig):
    """Configuration of :class:`FtTPO` (and of its baselines, selected by ``variant``).

    Set the data and its split with :meth:`dataset` (a Minari dataset id): it is prepared where
    the algorithm is built (:func:`~fttpo_ray.algorithms.fttpo.prepare.prepare`, called by
    :meth:`FtTPO.setup`), so Tune can sweep over it. Hyper-parameters are set with
    :meth:`training`, model selection with :meth:`selection`, the safety certificate with
    :meth:`certificate`; every value is checked by :meth:`validate` (the table of
    :mod:`~fttpo_ray.algorithms.fttpo.fields`), which reads no file and starts nothing (safe
    before ``ray.init``).
    """

    @override(AlgorithmConfig)
    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or FtTPO)
        # Minari dataset id to learn from; prepared (collected if missing and collectable,
        # loaded, env and spaces set) when the algorithm is set up.
        self.dataset_id: str | None = None
        # The dataset's split (.dataset()): a share of its episodes held out from training (by
        # episode, drawn with `split_seed`, independent of the training `seed`), shared by every
        # algorithm of an experiment. Model selection and certificate calibration read them
        # (docs/algorithm.md §2.2); 0 trains on everything and selects nothing. In [0, 1).
        self.held_out_fraction = DEFAULT_HELD_OUT_FRACTION
        self.split_seed = DEFAULT_SPLIT_SEED
        # Entropic index of the fat (proposal) policy: 1 = Gaussian, 2 = Cauchy; 1 <= q < 3.
        self.fat_q = DEFAULT_MODEL_CONFIG[FAT_Q]
        # Entropic index of the thin (acting) policy: q < 1 gives finite support; 0 = paper.
        self.thin_q = DEFAULT_MODEL_CONFIG[THIN_Q]
        # tau > 0: the weight of the KL term in the policy-improvement objective, hence also
        # the temperature of the advantage weights (docs/algorithm.md §2).
        self.kl_weight = 0.1
        # q of the q-exponential advantage weighting (0: [1 + A/tau]_+, 1: exp(A/tau)); <= 1.
        self.weight_q = 0.0
        # Upper clip of the advantage weights.
        self.w_max = 1e4
        # Learning rates of the policies, the critics and the value net.
        self.actor_lr = 3e-4
        self.critic_lr = 3e-4
        self.value_lr = 3e-4
        # The generic `lr` is unused (one optimizer per network, each with its own rate).
        self.lr = None
        # Polyak rate of the target critics, applied after every gradient step.
        self.polyak = 0.005
        # Critics in the ensemble, E >= 1; Q_min is their minimum (2: clipped double Q).
        self.num_critics = DEFAULT_MODEL_CONFIG[NUM_CRITICS]
        # Aggregation of the critic ensemble into Q_agg (TD target, value target, advantages):
        # "min", or "mean_std" = mean - critic_kappa * std (docs/algorithm.md §2.1).
        self.critic_aggregation = DEFAULT_MODEL_CONFIG[CRITIC_AGGREGATION]
        self.critic_kappa = DEFAULT_MODEL_CONFIG[CRITIC_KAPPA]
        # Small-data regularisation of the critics: layer norm on their hidden layers, and
        # decoupled (AdamW) weight decay of their optimizer (docs/algorithm.md §2.1).
        self.critic_layer_norm = DEFAULT_MODEL_CONFIG[CRITIC_LAYER_NORM]
        self.critic_weight_decay = 0.0
        # Standardise observations with the training episodes' mean and std, stored in the
        # module (docs/algorithm.md §2.1); set from the prepared data at setup.
        self.normalize_observations = True
        self._obs_statistics: tuple[list[float], list[float]] | None = None
        # Compile forward, losses and backward of each gradient step with torch.compile (one
        # graph for every q and tau, eager fallback with a warning). Off: 1.3-1.45x the steps/s,
        # but a compilation takes ~3 s from inductor's on-disk cache and ~28 s cold, which pays
        # after ~700-1000 steps warm and ~7 300 cold: at best even within a 1 000-step trial
        # (benchmarks/results/throughput_compile_*.md). Turn it on for long runs and sweeps.
        self.compile_update = False
        # RLlib's per-tensor NaN checks off: the learner checks losses and gradients itself.
        self.torch_skip_nan_gradients = True
        # "fttpo", or a baseline: "rar", "reverse_kl", "fat_only" (docs/algorithm.md §3).
        self.variant = DEFAULT_MODEL_CONFIG[VARIANT]
        # Thin-policy samples per state for the KL estimate of the thin loss.
        self.kl_num_samples = 1
        # Clip of the density ratio pi_phi / pi_theta in the KL estimator.
        self.kl_ratio_clip = 1e4
        # RAR: thin-policy samples among which an out-of-support action's replacement is chosen.
        self.rar_num_samples = 100
        # Bounds of the thin half-width (action units, in the [-1, 1] box).
        self.thin_halfwidth_bounds = DEFAULT_MODEL_CONFIG[THIN_HALFWIDTH_BOUNDS]
        # Bounds of the fat (Student-t) scale.
        self.fat_scale_bounds = DEFAULT_MODEL_CONFIG[FAT_SCALE_BOUNDS]
        # Cap the thin half-width at 1 - |loc| so that the support stays inside the box.
        self.thin_support_in_box = DEFAULT_MODEL_CONFIG[THIN_SUPPORT_IN_BOX]
        # Features of the thin half-width head: "shared" (fat torso, detached) or "own" torso.
        self.thin_halfwidth_torso = DEFAULT_MODEL_CONFIG[THIN_HALFWIDTH_TORSO]
        # Gradient steps per training iteration (one `train()` call).
        self.num_gradient_steps_per_iteration = 1000
        # Datasets up to this many transitions are held in memory; larger ones stream through
        # Ray Data (RLlib's OfflineData), which needs held_out_fraction=0.
        self.in_memory_max_transitions = IN_MEMORY_MAX_TRANSITIONS
        # Model selection (.selection()): the offline criterion on the held-out transitions that
        # picks the "selected" iteration (docs/algorithm.md §2.2).
        self.selection_criterion = TD_ERROR
        # The certified thin support (.certificate(); docs/algorithm.md §5.1).
        self.safety_certificate = False
        self.safe_action = 0.0
        self.certificate_alpha = 0.05
        self.certificate_members = 5
        self.certificate_hiddens = [64, 64]
        self.certificate_grid_points = 41
        # Minibatch size per learner and gradient step.
        self.train_batch_size_per_learner = 256
        self.gamma = 0.99
        # Offline: no training env runners (the evaluation env runner alone steps the env).
        self._is_online = False

        # Evaluation: both policies, every iteration, on fixed episode seeds (episode i of
        # every evaluation resets with evaluation_seed + i), stochastic actions by default
        # (the thin policy is stochastic by design, and its safety is a property of samples).
        self.evaluation_interval = 1
        self.evaluation_duration = 100
        self.evaluation_duration_unit = "episodes"
        self.evaluation_seed = EVALUATION_SEED
        self.evaluation_explore = True
        # A larger final evaluation: at iteration `evaluation_final_iteration` (1-based), on
        # `evaluation_final_episodes` episodes instead of `evaluation_duration` (None: off).
        self.evaluation_final_episodes = None
        self.evaluation_final_iteration = None
        self.custom_evaluation_function = evaluation_function

    # ---- builder setters -----------------------------------------------------------------------

    def dataset(
        self,
        dataset_id: str,
        *,
        env: str | None = NotProvided,
        held_out_fraction: float = NotProvided,
        split_seed: int = NotProvided,
    ) -> FtTPOConfig:
        """Learn from the Minari dataset ``dataset_id`` and evaluate on its environment.

        Args:
            dataset_id: The dataset. Treatment-simulator datasets that do not exist yet are
                collected on first use (see :func:`fttpo_ray.data.ensure_dataset`).
            env: The evaluation environment, if not the dataset's; its spaces must match the
                dataset's.
            held_out_fraction: Share of the dataset's episodes held out from training, in
                [0, 1) (default 0.2): never sampled, they score model selection
                (:meth:`selection`) and calibrate the certificate (:meth:`certificate`); the
                observation statistics are the training episodes'. 0 trains on everything
                and selects nothing; a dataset streamed from Parquet (above
                ``in_memory_max_transitions``) needs 0.
            split_seed: Seed of the split (an integer >= 0, default 0), independent of the
                training ``seed``: every run of an experiment, whatever its algorithm and seed,
                holds out the same episodes (:func:`fttpo_ray.data.split.held_out_mask`).
        """
        self.dataset_id = dataset_id
        if env is not NotProvided:
            self.env = env
        if held_out_fraction is not NotProvided:
            self.held_out_fraction = held_out_fraction
        if split_seed is not NotProvided:
            self.split_seed = split_seed
        return self

    def selection(self, *, criterion: str = NotProvided) -> FtTPOConfig:
        """Offline model selection on the held-out episodes (docs/algorithm.md §2.2).

        After every iteration the module is scored on the held-out transitions of the
        dataset's split (:meth:`dataset`'s ``held_out_fraction``; none held out: nothing is
        selected) and the best iteration's weights are kept as "selected".

        Args:
            criterion: ``"td_error"`` (default: the lowest held-out TD error) or ``"policy_q"``
                (the highest critic value of the acting policy's location at held-out states).
                Attribute ``selection_criterion``.
        """
        if criterion is not NotProvided:
            self.selection_criterion = criterion
        return self

    def certificate(
        self,
        *,
        enabled: bool = NotProvided,
        safe_action: float = NotProvided,
        alpha: float = NotProvided,
        members: int = NotProvided,
        hiddens: list[int] = NotProvided,
        grid_points: int = NotProvided,
    ) -> FtTPOConfig:
        """The certified thin support (docs/algorithm.md §5.1).

        The acting policy's support is cut to the doses whose lower confidence bound of the
        expected immediate-reward gain over ``safe_action`` is >= 0, else it gives the safe
        action. The bound comes from a reward ensemble fitted at setup on the training
        episodes, its multiplier calibrated on the held-out episodes. Preconditions (checked
        in one place, :func:`~fttpo_ray.algorithms.fttpo.certificate.check_certificate`): a
        thin-acting variant, ``held_out_fraction > 0`` and a 1-D action space.

        Args:
            enabled: Act with the certified support (attribute ``safety_certificate``, default
                False).
            safe_action: The safe dose, in environment units (default 0: the zero dose).
            alpha: At most this share of doses is falsely certified, in (0, 1) (default 0.05;
                attribute ``certificate_alpha``).
            members: MLPs in the reward ensemble, >= 2 (default 5; ``certificate_members``).
            hiddens: Hidden-layer widths of each member (default [64, 64];
                ``certificate_hiddens``).
            grid_points: Doses scanned per support, >= 2 (default 41;
                ``certificate_grid_points``).
        """
        for name, value in (
            ("safety_certificate", enabled),
            ("safe_action", safe_action),
            ("certificate_alpha", alpha),
            ("certificate_members", members),
            ("certificate_hiddens", hiddens),
            ("certificate_grid_points", grid_points),
        ):
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        fat_q: float = NotProvided,
        thin_q: float = NotProvided,
        kl_weight: float = NotProvided,
        weight_q: float = NotProvided,
        w_max: float = NotProvided,
        actor_lr: float = NotProvided,
        critic_lr: float = NotProvided,
        value_lr: float = NotProvided,
        polyak: float = NotProvided,
        num_critics: int = NotProvided,
        critic_aggregation: str = NotProvided,
        critic_kappa: float = NotProvided,
        critic_layer_norm: bool = NotProvided,
        critic_weight_decay: float = NotProvided,
        normalize_observations: bool = NotProvided,
        compile_update: bool = NotProvided,
        variant: str = NotProvided,
        kl_num_samples: int = NotProvided,
        kl_ratio_clip: float = NotProvided,
        rar_num_samples: int = NotProvided,
        thin_halfwidth_bounds: tuple[float, float] = NotProvided,
        fat_scale_bounds: tuple[float, float] = NotProvided,
        thin_support_in_box: bool = NotProvided,
        thin_halfwidth_torso: str = NotProvided,
        num_gradient_steps_per_iteration: int = NotProvided,
        in_memory_max_transitions: int = NotProvided,
        held_out_fraction: float = NotProvided,
        selection_criterion: str = NotProvided,
        safety_certificate: bool = NotProvided,
        safe_action: float = NotProvided,
        certificate_alpha: float = NotProvided,
        certificate_members: int = NotProvided,
        certificate_hiddens: list[int] = NotProvided,
        certificate_grid_points: int = NotProvided,
        **kwargs: Any,
    ) -> FtTPOConfig:
        """Sets FtTPO's hyper-parameters (see the attribute comments in ``__init__``).

        ``kl_weight`` is tau: the weight of the KL term in the policy-improvement objective,
        and so the temperature of the advantage weights. ``selection_criterion`` and the
        certificate's settings (``safety_certificate``, ``safe_action``, ``certificate_*``) are
        accepted here too; their group setters, :meth:`selection` and :meth:`certificate`,
        document them. Deprecated: ``held_out_fraction`` (use :meth:`dataset`, the split
        belongs to the data) and ``thin_scale_bounds``/``thin_scale_torso`` (now
        ``thin_halfwidth_bounds``/``thin_halfwidth_torso``). Also takes every argument of
        :meth:`AlgorithmConfig.training` (``gamma``, ``train_batch_size_per_learner``, ...).
        """
        old = {key: kwargs.pop(key) for key in RENAMED_SETTINGS if key in kwargs}
        renamed = renamed_settings(old)
        super().training(**kwargs)
        if held_out_fraction is not NotProvided:
            _deprecated("training(held_out_fraction=...)", "`.dataset(..., held_out_fraction=...)`")
            self.held_out_fraction = held_out_fraction
        given = {
            "fat_q": fat_q,
            "thin_q": thin_q,
            "kl_weight": kl_weight,
            "weight_q": weight_q,
            "w_max": w_max,
            "actor_lr": actor_lr,
            "critic_lr": critic_lr,
            "value_lr": value_lr,
            "polyak": polyak,
            "num_critics": num_critics,
            "critic_aggregation": critic_aggregation,
            "critic_kappa": critic_kappa,
            "critic_layer_norm": critic_layer_norm,
            "critic_weight_decay": critic_weight_decay,
            "normalize_observations": normalize_observations,
            "compile_update": compile_update,
            "variant": variant,
            "kl_num_samples": kl_num_samples,
            "kl_ratio_clip": kl_ratio_clip,
            "rar_num_samples": rar_num_samples,
            "thin_halfwidth_bounds": thin_halfwidth_bounds,
            "fat_scale_bounds": fat_scale_bounds,
            "thin_support_in_box": thin_support_in_box,
            "thin_halfwidth_torso": thin_halfwidth_torso,
            "num_gradient_steps_per_iteration": num_gradient_steps_per_iteration,
            "in_memory_max_transitions": in_memory_max_transitions,
        }
        for name, value in renamed.items():
            if given[name] is NotProvided:
                given[name] = value
        for name, value in given.items():
            if value is not NotProvided:
                setattr(self, name, value)
        self.selection(criterion=selection_criterion)
        return self.certificate(
            enabled=safety_certificate,
            safe_action=safe_action,
            alpha=certificate_alpha,
            members=certificate_members,
            hiddens=certificate_hiddens,
            grid_points=certificate_grid_points,
        )

    @override(AlgorithmConfig)
    def evaluation(
        self,
        *,
        evaluation_seed: int = NotProvided,
        evaluation_explore: bool = NotProvided,
        evaluation_final_episodes: int | None = NotProvided,
        evaluation_final_iteration: int | None = NotProvided,
        **kwargs: Any,
    ) -> FtTPOConfig:
        """RLlib's evaluation settings plus:

        Args:
            evaluation_seed: episode ``i`` of every evaluation resets with
                ``evaluation_seed + i``.
            evaluation_explore: sample actions (default), or act with the location.
            evaluation_final_episodes: episodes of the final evaluation (``None``: as every
                other evaluation), which runs at ``evaluation_final_iteration``.
            evaluation_final_iteration: the iteration (1-based, e.g. the sweep's last) that
                evaluates on ``evaluation_final_episodes`` episodes; the cheaper evaluations
                before it draw learning curves.
        """
        super().evaluation(**kwargs)
        if evaluation_seed is not NotProvided:
            self.evaluation_seed = evaluation_seed
        if evaluation_explore is not NotProvided:
            self.evaluation_explore = evaluation_explore
        if evaluation_final_episodes is not NotProvided:
            self.evaluation_final_episodes = evaluation_final_episodes
        if evaluation_final_iteration is not NotProvided:
            self.evaluation_final_iteration = evaluation_final_iteration
        return self

    # ---- RLlib hooks ---------------------------------------------------------------------------

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=FtTPOTorchRLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from fttpo_ray.algorithms.fttpo.torch.fttpo_torch_learner import FtTPOTorchLearner

        return FtTPOTorchLearner

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return super()._model_config_auto_includes | {
            VARIANT: self.variant,
            FAT_Q: self.fat_q,
            THIN_Q: self.thin_q,
            NUM_CRITICS: self.num_critics,
            THIN_HALFWIDTH_BOUNDS: tuple(self.thin_halfwidth_bounds),
            FAT_SCALE_BOUNDS: tuple(self.fat_scale_bounds),
            THIN_SUPPORT_IN_BOX: self.thin_support_in_box,
            THIN_HALFWIDTH_TORSO: self.thin_halfwidth_torso,
            CRITIC_AGGREGATION: self.critic_aggregation,
            CRITIC_KAPPA: float(self.critic_kappa),
            CRITIC_LAYER_NORM: self.critic_layer_norm,
            OBS_MEAN: self._obs_statistics[0] if self._obs_statistics else None,
            OBS_STD: self._obs_statistics[1] if self._obs_statistics else None,
            SAFETY_CERTIFICATE: certificate_shape(self),
        }

    @override(AlgorithmConfig)
    def update_from_dict(self, config_dict: dict[str, Any]) -> FtTPOConfig:
        """RLlib's ``update_from_dict`` (Tune trials, YAML runs), old setting names accepted
        (:data:`RENAMED_SETTINGS`, with a DeprecationWarning)."""
        return super().update_from_dict(renamed_settings(config_dict, log=True))

    @override(AlgorithmConfig)
    def get_state(self) -> dict[str, Any]:
        """RLlib's state of this config, keeping the fields that equal -1.

        RLlib 2.60's ``AlgorithmConfig.get_state`` drops every value equal to its
        ``DEPRECATED_VALUE`` (-1), and ``Algorithm.__init__`` and checkpoint restore rebuild the
        config from that state: ``thin_q=-1`` (or any field set to -1) would silently become its
        default. The dropped numeric fields are put back (only plain numbers are compared, so an
        array-valued field is never tested for truth), so ``from_state(get_state())`` is this
        config.
        """
        return super().get_state() | {
            name: value
            for name, value in vars(self).items()
            if type(value) in (int, float) and value == DEPRECATED_VALUE
        }

    @classmethod
    @override(AlgorithmConfig)
    def from_state(cls, state: dict[str, Any]) -> Any:
        """RLlib's ``from_state`` (checkpoint restore), reading older checkpoints too: renamed
        settings under their new names, and ``split_seed`` (absent before the split belonged to
        the data) as it was then derived: ``seed``, or 0 when unset, so the restored run holds
        out the episodes it was trained without."""
        state = dict(state)
        for old, new in RENAMED_SETTINGS.items():
            if old in state:
                value = state.pop(old)
                state.setdefault(new, value)
        if "split_seed" not in state:
            seed = state.get("seed")
            state["split_seed"] = int(seed) if seed is not None else DEFAULT_SPLIT_SEED
        return super().from_state(state)

    # ---- validation ----------------------------------------------------------------------------

    @override(AlgorithmConfig)
    def validate(self) -> None:
        """Checks every field (errors name the field, the value and the valid range).

        The fields' types and ranges are the table of :mod:`~fttpo_ray.algorithms.fttpo.
        fields`; the rules that relate fields are :meth:`_cross_field_checks`. Cheap and free of
        side effects: it reads no dataset, makes no environment and starts no Ray, so it can run
        before ``ray.init``; the dataset only has to be named here (it is prepared in
        :meth:`FtTPO.setup`, which validates again with the spaces known).
        """
        if not self.dataset_id:
            raise ConfigError(
                "no dataset: call FtTPOConfig().dataset('<minari dataset id>'), e.g. "
                "'fttpo/treatment/random-v0'"
            )
        if not isinstance(self.dataset_id, str):
            raise ConfigError(
                f"`dataset_id` must be a Minari dataset id (a string); got {self.dataset_id!r}"
            )
        check_fields(self)
        for check in self._cross_field_checks():
            check(self)
        super().validate()

    @staticmethod
    def _cross_field_checks() -> tuple[Any, ...]:
        """The rules that relate several fields, each owned by the group it belongs to."""
        return (check_certificate, check_one_optimizer_settings)


def check_one_optimizer_settings(config: FtTPOConfig) -> None:
    """RLlib 2.60's TorchLearner keeps one torch LR scheduler per module (the last optimizer's)
    and steps one shared grad scaler per optimizer: with FtTPO's four optimizers both would
    silently do something else than asked."""
    if config._torch_lr_scheduler_classes:
        raise ConfigError(
            "`_torch_lr_scheduler_classes` is not supported by FtTPO (four optimizers per "
            "module; RLlib would schedule only one of them); got "
            f"{config._torch_lr_scheduler_classes!r}: set actor_lr, critic_lr and value_lr"
        )
    if config._torch_grad_scaler_class is not None:
        raise ConfigError(
            "`_torch_grad_scaler_class` is not supported by FtTPO (a float32 learner with "
            "four optimizers per module); got "
            f"{config._torch_grad_scaler_class!r}: leave it None"
        )


class FtTPO(Algorithm):
    """Fat-to-Thin Policy Optimization (and its baselines, by ``config.variant``).

    Each ``train()`` runs ``num_gradient_steps_per_iteration`` gradient steps on uniform
    minibatches of the dataset, then evaluates the acting policy (``thin``) and, where there is
    one, the fat proposal (``fat``) with the safety metrics of docs/algorithm.md §5.
    """

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> FtTPOConfig:
        return FtTPOConfig()

    @override(Algorithm)
    def setup(self, config: AlgorithmConfig) -> None:
        """Prepares the data once (:func:`~fttpo_ray.algorithms.fttpo.prepare.prepare`), then
        RLlib's setup.

        ``Algorithm.__init__`` has validated and frozen the config (whether it came from
        ``build_algo()``, a Tune trial's dict or a checkpoint); an unfrozen copy is pointed at
        the prepared data, validated again (now with the spaces known), frozen and becomes
        ``self.config``. The prepared data is handed to the sampler and the certificate and
        kept as :attr:`prepared`. The env creator is derived again, since the env may have
        come from the dataset.
        """
        resolved = self.config.copy(copy_frozen=False)
        prepared = prepare(resolved)
        prepared.configure(resolved)
        resolved.validate()
        resolved.freeze()
        self.config = resolved
        #: The dataset, its split, spaces and statistics (computed once, here).
        self.prepared: PreparedData = prepared
        self._env_id, self.env_creator = self._get_env_id_and_creator(resolved.env, resolved)
        with handing_over(prepared.split):
            super().setup(resolved)
        if resolved.safety_certificate:
            self._fit_certificate()

    @override(Algorithm)
    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Tune's actor reuse (``reuse_actors=True``): the next trial's algorithm is built in
        this process, exactly as a new actor would build it, sparing the new actor's start and
        imports (and, with ``compile_update``, its compilation: the graphs stay in the process).

        Everything of the finished trial is released (:meth:`cleanup`, the usage monitor) and
        dropped; only what Tune's ``reset`` has just set for the new trial is kept (its storage,
        trial info and log files), then ``__init__`` runs on ``new_config``.
        """
        kept = {name: self.__dict__[name] for name in _TUNE_TRIAL_ATTRIBUTES}
        if self._monitor.is_alive():
            self._monitor.stop()
            self._monitor.join()
        self.cleanup()
        self.__dict__.clear()
        type(self).__init__(self, config=new_config, storage=kept[_STORAGE_ATTRIBUTE])
        self.__dict__.update(kept)
        return True

    def _fit_certificate(self) -> None:
        """Fit the certificate's reward ensemble on the training episodes, calibrate it on the
        held-out ones (docs/algorithm.md §5.1) and load it into every learner's module; the
        evaluation env runners receive it with the weights. Deterministic given ``split_seed``,
        so a restored checkpoint (which carries the fitted certificate) holds the same one."""
        from fttpo_ray.algorithms.fttpo.certificate import fit_certificate

        state, calibration = fit_certificate(self.config, self.prepared.split)

        def load(learner: Any) -> None:
            learner.module[DEFAULT_MODULE_ID].certificate.load_state_dict(state)

        self.learner_group.foreach_learner(load)
        if self.eval_env_runner_group is not None:
            self.eval_env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )
        self.certificate_calibration = calibration

    @override(Algorithm)
    def restore_from_path(self, path: Any, *args: Any, **kwargs: Any) -> None:
        """Restore, then push the learner's weights to the evaluation env runners.

        RLlib 2.60's ``Algorithm.restore_from_path`` syncs the *training* env runners, which an
        offline algorithm does not have (it fails with ``'NoneType' object has no attribute
        'sync_weights'``); we restore the components and sync the evaluation runners instead.
        """
        if self.env_runner_group is not None:
            super().restore_from_path(path, *args, **kwargs)
            return
        Checkpointable.restore_from_path(self, path, *args, **kwargs)
        if self.eval_env_runner_group is not None:
            self.eval_env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )

    @override(Algorithm)
    def get_module(self, module_id: str = DEFAULT_MODULE_ID) -> Any:
        """The acting policy's module, with the learner's current weights.

        An offline algorithm has no training env runners, where RLlib's ``get_module`` looks;
        this returns the local evaluation env runner's (inference-only) module after syncing it
        from the learner or, without one, the learner's full module (``learner_module``: the
        module itself with a local learner, a copy of its weights with remote learners).
        """
        if self.env_runner_group is not None:
            return super().get_module(module_id)
        if self.eval_env_runner is not None:
            self.eval_env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )
            module = self.eval_env_runner.module
            if isinstance(module, MultiRLModule):
                return module.get(module_id)
            return module
        return learner_module(self, module_id)

    @override(Algorithm)
    def training_step(self) -> None:
        config = self.config
        steps = config.num_gradient_steps_per_iteration
        num_samples = config.train_batch_size_per_learner * steps * max(1, config.num_learners)
        in_memory = self.prepared.in_memory
        with self.metrics.log_time((TIMERS, OFFLINE_SAMPLING_TIMER)):
            if in_memory:
                training_data = TrainingData(
                    batch=self.offline_data.sample(
                        num_samples=num_samples, num_shards=config.num_learners
                    )
                )
            else:
                training_data = TrainingData(
                    data_iterators=self.offline_data.sample(
                        num_samples=config.train_batch_size_per_learner,
                        num_shards=config.num_learners,
                        return_iterator=True,
                    )
                )
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, num_samples, reduce="lifetime_sum")

        start = time.perf_counter()
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            extra = (
                {} if in_memory else {"num_iters": steps, **self.offline_data.iter_batches_kwargs}
            )
            learner_results = self.learner_group.update(
                training_data=training_data,
                minibatch_size=config.train_batch_size_per_learner,
                num_epochs=1,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        NUM_ENV_STEPS_SAMPLED_LIFETIME, default=0
                    )
                },
                **extra,
            )
        elapsed = time.perf_counter() - start
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

        for key in LEARNER_SUMMARY_KEYS:
            try:  # a variant without a fat (or thin) policy has no such loss
                value = self.metrics.peek((LEARNER_RESULTS, DEFAULT_MODULE_ID, key))
            except KeyError:
                continue
            self.metrics.log_value((LEARNER_PREFIX, key), value, window=1)
        self.metrics.log_value((LEARNER_PREFIX, GRAD_STEPS_PER_S), steps / elapsed, window=1)
        if in_memory:
            self._select()

    def _select(self) -> None:
        """Score this iteration on the held-out transitions; keep the best iteration's weights
        (docs/algorithm.md §2.2). Reads the module and the held-out dataset episodes only."""
        held_out = self.offline_data.held_out
        count = len(held_out[Columns.REWARDS])
        if count == 0:
            return
        criteria, selected = select(
            learner_module(self),
            held_out,
            gamma=self.config.gamma,
            criterion=self.config.selection_criterion,
            iteration=self.iteration + 1,
            selected=getattr(self, "_selected", None),
        )
        self._selected = selected
        for name, value in criteria.items():
            self.metrics.log_value((SELECTION, name), value, window=1)
        self.metrics.log_value((SELECTION, HELD_OUT_TRANSITIONS), count, window=1)
        for key in (SELECTED_ITERATION, SELECTED_CRITERION):
            self.metrics.log_value((SELECTED, key), selected[key], window=1)

    def selected_module_state(self) -> dict[str, Any] | None:
        """The module state (numpy arrays) of the iteration selected on the held-out episodes,
        or ``None`` when nothing is held out (``held_out_fraction=0``) or nothing trained yet."""
        selected = getattr(self, "_selected", None)
        return None if selected is None else selected[COMPONENT_RL_MODULE]

    def selected_iteration(self) -> int | None:
        """The training iteration (1-based) whose weights :meth:`selected_module_state` holds."""
        selected = getattr(self, "_selected", None)
        return None if selected is None else selected[SELECTED_ITERATION]

    @override(Algorithm)
    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """RLlib's state plus the selected iteration and its weights (so checkpoints keep it)."""
        state = super().get_state(*args, **kwargs)
        selected = getattr(self, "_selected", None)
        if selected is not None:
            state[SELECTED] = selected
        return state

    @override(Algorithm)
    def set_state(self, state: dict[str, Any]) -> None:
        if SELECTED in state:
            state = dict(state)
            self._selected = state.pop(SELECTED)
        super().set_state(state)
