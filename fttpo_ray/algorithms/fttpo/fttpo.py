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
import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
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

from fttpo_ray.algorithms.fttpo.evaluation import evaluation_function
from fttpo_ray.algorithms.fttpo.offline_data import InMemoryOfflineData
from fttpo_ray.algorithms.fttpo.selection import (
    CRITERIA,
    HELD_OUT_TRANSITIONS,
    SELECTED,
    SELECTED_CRITERION,
    SELECTED_ITERATION,
    SELECTION,
    TD_ERROR,
    better,
    copy_state,
    held_out_criteria,
)
from fttpo_ray.algorithms.learner_module import learner_module
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
    AGGREGATIONS,
    CERTIFICATE_GRID_POINTS,
    CERTIFICATE_HIDDENS,
    CERTIFICATE_MEMBERS,
    CRITIC_AGGREGATION,
    CRITIC_KAPPA,
    CRITIC_LAYER_NORM,
    DEFAULT_MODEL_CONFIG,
    FAT_Q,
    FAT_SCALE_BOUNDS,
    NUM_CRITICS,
    OBS_MEAN,
    OBS_STD,
    SAFE_ACTION,
    SAFETY_CERTIFICATE,
    THIN_Q,
    THIN_HALFWIDTH_BOUNDS,
    THIN_HALFWIDTH_TORSO,
    THIN_SUPPORT_IN_BOX,
    TORSO_OWN,
    TORSO_SHARED,
    VARIANT,
    FtTPOTorchRLModule,
)
from fttpo_ray.rl_module.variants import Policy, variant_spec, variants_acting

logger = logging.getLogger(__name__)

#: Learner metrics copied to the top-level ``learner/...`` keys of each result.
LEARNER_SUMMARY_KEYS = (CRITIC_LOSS, VALUE_LOSS, FAT_LOSS, THIN_LOSS)


class FtTPOConfig(AlgorithmConfig):
    """Configuration of :class:`FtTPO` (and of its baselines, selected by ``variant``).

    Set the data with :meth:`dataset` (a Minari dataset id): it is resolved where the algorithm
    is built (:meth:`resolve_dataset`, called by :meth:`FtTPO.setup`), so Tune can sweep over it.
    Hyper-parameters are set with :meth:`training`; every value is checked by :meth:`validate`,
    which reads no file and starts nothing (safe before ``ray.init``).
    """

    @override(AlgorithmConfig)
    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or FtTPO)
        # Minari dataset id to learn from; resolved (collected if missing and collectable,
        # loaded, env and spaces set) by resolve_dataset() when the algorithm is set up.
        self.dataset_id: str | None = None
        # Entropic index of the fat (proposal) policy: 1 = Gaussian, 2 = Cauchy; 1 <= q < 3.
        self.fat_q = DEFAULT_MODEL_CONFIG[FAT_Q]
        # Entropic index of the thin (acting) policy: q < 1 gives finite support; 0 = paper.
        self.thin_q = DEFAULT_MODEL_CONFIG[THIN_Q]
        # tau > 0: KL-regularisation weight = temperature of the advantage weights.
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
        # module (docs/algorithm.md §2.1); set from the dataset by resolve_dataset().
        self.normalize_observations = True
        self._obs_statistics: tuple[list[float], list[float]] | None = None
        # Compile forward, losses and backward of each gradient step with torch.compile (one
        # graph, eager fallback with a warning); off: benchmarks/results/throughput.md says why.
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
        self.thin_scale_bounds = DEFAULT_MODEL_CONFIG[THIN_HALFWIDTH_BOUNDS]
        # Bounds of the fat (Student-t) scale.
        self.fat_scale_bounds = DEFAULT_MODEL_CONFIG[FAT_SCALE_BOUNDS]
        # Cap the thin half-width at 1 - |loc| so that the support stays inside the box.
        self.thin_support_in_box = DEFAULT_MODEL_CONFIG[THIN_SUPPORT_IN_BOX]
        # Features of the thin half-width head: "shared" (fat torso, detached) or "own" torso.
        self.thin_scale_torso = DEFAULT_MODEL_CONFIG[THIN_HALFWIDTH_TORSO]
        # Gradient steps per training iteration (one `train()` call).
        self.num_gradient_steps_per_iteration = 1000
        # Datasets up to this many transitions are held in memory (InMemoryOfflineData);
        # larger ones stream through Ray Data (RLlib's OfflineData).
        self.in_memory_max_transitions = 20_000_000
        # Fraction of the dataset's episodes held out from training (by episode, seeded by
        # `seed`, 0 when unset): offline model selection and certificate calibration read them
        # (docs/algorithm.md §2.2); 0 trains on everything and selects nothing. In [0, 1).
        self.held_out_fraction = 0.2
        # Offline criterion on the held-out transitions that picks the "selected" iteration:
        # "td_error" (lowest held-out TD error) or "policy_q" (docs/algorithm.md §2.2).
        self.selection_criterion = TD_ERROR
        # Certified thin support (docs/algorithm.md §5.1): act with the thin support cut to the
        # doses whose lower confidence bound of the expected immediate-reward gain over
        # `safe_action` (environment units; default the zero dose) is >= 0, else with the safe
        # action. The bound comes from a reward ensemble of `certificate_members` MLPs
        # (`certificate_hiddens`) fitted at setup on the training episodes, its multiplier
        # calibrated on the held-out episodes so that at most a share `certificate_alpha` of
        # doses is falsely certified; `certificate_grid_points` doses are scanned per support.
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
        self.custom_evaluation_function = evaluation_function

    # ---- builder setters -----------------------------------------------------------------------

    def dataset(self, dataset_id: str, *, env: str | None = NotProvided) -> FtTPOConfig:
        """Learn from the Minari dataset ``dataset_id`` and evaluate on its environment.

        Treatment-simulator datasets that do not exist yet are collected on first use (see
        :func:`fttpo_ray.data.ensure_dataset`). ``env`` overrides the evaluation environment;
        its spaces must match the dataset's.
        """
        self.dataset_id = dataset_id
        if env is not NotProvided:
            self.env = env
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
        thin_scale_bounds: tuple[float, float] = NotProvided,
        fat_scale_bounds: tuple[float, float] = NotProvided,
        thin_support_in_box: bool = NotProvided,
        thin_scale_torso: str = NotProvided,
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

        Also takes every argument of :meth:`AlgorithmConfig.training` (``gamma``,
        ``train_batch_size_per_learner``, ...).
        """
        super().training(**kwargs)
        for name, value in (
            ("fat_q", fat_q),
            ("thin_q", thin_q),
            ("kl_weight", kl_weight),
            ("weight_q", weight_q),
            ("w_max", w_max),
            ("actor_lr", actor_lr),
            ("critic_lr", critic_lr),
            ("value_lr", value_lr),
            ("polyak", polyak),
            ("num_critics", num_critics),
            ("critic_aggregation", critic_aggregation),
            ("critic_kappa", critic_kappa),
            ("critic_layer_norm", critic_layer_norm),
            ("critic_weight_decay", critic_weight_decay),
            ("normalize_observations", normalize_observations),
            ("compile_update", compile_update),
            ("variant", variant),
            ("kl_num_samples", kl_num_samples),
            ("kl_ratio_clip", kl_ratio_clip),
            ("rar_num_samples", rar_num_samples),
            ("thin_scale_bounds", thin_scale_bounds),
            ("fat_scale_bounds", fat_scale_bounds),
            ("thin_support_in_box", thin_support_in_box),
            ("thin_scale_torso", thin_scale_torso),
            ("num_gradient_steps_per_iteration", num_gradient_steps_per_iteration),
            ("in_memory_max_transitions", in_memory_max_transitions),
            ("held_out_fraction", held_out_fraction),
            ("selection_criterion", selection_criterion),
            ("safety_certificate", safety_certificate),
            ("safe_action", safe_action),
            ("certificate_alpha", certificate_alpha),
            ("certificate_members", certificate_members),
            ("certificate_hiddens", certificate_hiddens),
            ("certificate_grid_points", certificate_grid_points),
        ):
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    @override(AlgorithmConfig)
    def evaluation(
        self,
        *,
        evaluation_seed: int = NotProvided,
        evaluation_explore: bool = NotProvided,
        **kwargs: Any,
    ) -> FtTPOConfig:
        """RLlib's evaluation settings plus ``evaluation_seed`` (episode ``i`` of every evaluation
        resets with ``evaluation_seed + i``) and ``evaluation_explore`` (sample actions, default,
        or act with the location)."""
        super().evaluation(**kwargs)
        if evaluation_seed is not NotProvided:
            self.evaluation_seed = evaluation_seed
        if evaluation_explore is not NotProvided:
            self.evaluation_explore = evaluation_explore
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
            THIN_HALFWIDTH_BOUNDS: tuple(self.thin_scale_bounds),
            FAT_SCALE_BOUNDS: tuple(self.fat_scale_bounds),
            THIN_SUPPORT_IN_BOX: self.thin_support_in_box,
            THIN_HALFWIDTH_TORSO: self.thin_scale_torso,
            CRITIC_AGGREGATION: self.critic_aggregation,
            CRITIC_KAPPA: float(self.critic_kappa),
            CRITIC_LAYER_NORM: self.critic_layer_norm,
            OBS_MEAN: self._obs_statistics[0] if self._obs_statistics else None,
            OBS_STD: self._obs_statistics[1] if self._obs_statistics else None,
            SAFETY_CERTIFICATE: self._certificate_shape(),
        }

    def _certificate_shape(self) -> dict[str, Any] | None:
        """The module's certificate shape (``None`` without one); the safe action normalised
        to the module's [-1, 1] actions with the action space's bounds, where they are known."""
        if not self.safety_certificate:
            return None
        safe = float(self.safe_action)
        space = self.action_space
        if isinstance(space, gym.spaces.Box) and np.all(np.isfinite(space.low)):
            low, high = float(space.low.reshape(-1)[0]), float(space.high.reshape(-1)[0])
            safe = 2.0 * (safe - low) / (high - low) - 1.0
        return {
            CERTIFICATE_MEMBERS: int(self.certificate_members),
            CERTIFICATE_HIDDENS: [int(w) for w in self.certificate_hiddens],
            CERTIFICATE_GRID_POINTS: int(self.certificate_grid_points),
            SAFE_ACTION: safe,
        }

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

    # ---- validation ----------------------------------------------------------------------------

    @override(AlgorithmConfig)
    def validate(self) -> None:
        """Checks every field (errors name the field, the value and the valid range).

        Cheap and free of side effects: it reads no dataset, makes no environment and starts
        no Ray, so it can run before ``ray.init``; the dataset only has to be named here (it is
        resolved in :meth:`FtTPO.setup`).
        """
        self._validate_fields()
        super().validate()

    def _validate_fields(self) -> None:
        def fail(message: str) -> None:
            raise ConfigError(message)

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail(f"`{name}` must be a number; got {value!r}")
            if not math.isfinite(value):
                fail(f"`{name}` must be finite; got {value}")
            return float(value)

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(f"`{name}` must be an integer >= 1; got {value!r}")

        def non_negative_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(f"`{name}` must be an integer >= 0; got {value!r}")

        def flag(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, bool):
                fail(f"`{name}` must be true or false; got {value!r}")

        if not self.dataset_id:
            fail(
                "no dataset: call FtTPOConfig().dataset('<minari dataset id>'), e.g. "
                "'fttpo/treatment/random-v0'"
            )
        if not isinstance(self.dataset_id, str):
            fail(f"`dataset_id` must be a Minari dataset id (a string); got {self.dataset_id!r}")
        variant_spec(self.variant)  # a ConfigError naming the variants if there is no such one
        fat_q = number("fat_q")
        if not 1.0 <= fat_q < 3.0:
            fail(
                f"`fat_q` must be in [1, 3) for a heavy-tailed (fat) q-Gaussian (1 = Gaussian, "
                f"2 = Cauchy; q >= 3 is not normalisable); got {fat_q}"
            )
        thin_q = number("thin_q")
        if thin_q >= 1.0:
            fail(f"`thin_q` must be < 1 for a sparse (thin) policy; got {thin_q}")
        if number("kl_weight") <= 0.0:
            fail(f"`kl_weight` (tau) must be > 0; got {self.kl_weight}")
        if number("weight_q") > 1.0:
            fail(
                f"`weight_q` must be <= 1 (0: linear weights [1 + A/tau]_+, 1: exp(A/tau)); "
                f"got {self.weight_q}"
            )
        if number("w_max") <= 1e-8:
            fail(f"`w_max` must be > 1e-8; got {self.w_max}")
        for name in ("actor_lr", "critic_lr", "value_lr"):
            if number(name) <= 0.0:
                fail(f"`{name}` must be > 0; got {getattr(self, name)}")
        if not 0.0 < number("polyak") <= 1.0:
            fail(f"`polyak` must be in (0, 1]; got {self.polyak}")
        if not 0.0 <= number("gamma") <= 1.0:
            fail(f"`gamma` must be in [0, 1]; got {self.gamma}")
        if self.critic_aggregation not in AGGREGATIONS:
            fail(
                f"`critic_aggregation` must be one of {', '.join(AGGREGATIONS)}; "
                f"got {self.critic_aggregation!r}"
            )
        if self.selection_criterion not in CRITERIA:
            fail(
                f"`selection_criterion` must be one of {', '.join(CRITERIA)}; "
                f"got {self.selection_criterion!r}"
            )
        if number("critic_kappa") < 0.0:
            fail(f"`critic_kappa` must be >= 0; got {self.critic_kappa}")
        if number("critic_weight_decay") < 0.0:
            fail(f"`critic_weight_decay` must be >= 0; got {self.critic_weight_decay}")
        if not 0.0 <= number("held_out_fraction") < 1.0:
            fail(f"`held_out_fraction` must be in [0, 1); got {self.held_out_fraction}")
        if not 0.0 < number("certificate_alpha") < 1.0:
            fail(f"`certificate_alpha` must be in (0, 1); got {self.certificate_alpha}")
        number("safe_action")
        if (
            isinstance(self.certificate_members, bool)
            or not isinstance(self.certificate_members, int)
            or self.certificate_members < 2
        ):
            fail(f"`certificate_members` must be an integer >= 2; got {self.certificate_members!r}")
        if (
            isinstance(self.certificate_grid_points, bool)
            or not isinstance(self.certificate_grid_points, int)
            or self.certificate_grid_points < 2
        ):
            fail(
                "`certificate_grid_points` must be an integer >= 2; got "
                f"{self.certificate_grid_points!r}"
            )
        hiddens = self.certificate_hiddens
        if (
            not isinstance(hiddens, (list, tuple))
            or not hiddens
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in hiddens)
        ):
            fail(
                f"`certificate_hiddens` must be a non-empty list of integers >= 1; got {hiddens!r}"
            )
        if (
            self.safety_certificate is True
            and variant_spec(self.variant).acting_policy is not Policy.THIN
        ):
            fail(
                "`safety_certificate` cuts the acting thin policy's support; in variant "
                f"{self.variant!r} no thin policy acts: use one of "
                f"{', '.join(variants_acting(Policy.THIN))}"
            )
        if self.safety_certificate is True and self.held_out_fraction == 0.0:
            fail(
                "`safety_certificate` is calibrated on held-out episodes; got "
                "held_out_fraction=0: set it in (0, 1), e.g. 0.2"
            )
        if number("kl_ratio_clip") <= 1.0:
            fail(f"`kl_ratio_clip` must be > 1; got {self.kl_ratio_clip}")
        for name in (
            "kl_num_samples",
            "num_critics",
            "rar_num_samples",
            "num_gradient_steps_per_iteration",
            "train_batch_size_per_learner",
            "in_memory_max_transitions",
        ):
            positive_int(name)
        for name in ("thin_scale_bounds", "fat_scale_bounds"):
            bounds = getattr(self, name)
            if (
                not isinstance(bounds, (tuple, list))
                or len(bounds) != 2
                or not all(isinstance(b, (int, float)) for b in bounds)
                or not 0.0 < bounds[0] < bounds[1]
            ):
                fail(f"`{name}` must be a pair (low, high) with 0 < low < high; got {bounds!r}")
        if self.thin_scale_torso not in (TORSO_SHARED, TORSO_OWN):
            fail(
                f"`thin_scale_torso` must be '{TORSO_SHARED}' or '{TORSO_OWN}'; "
                f"got {self.thin_scale_torso!r}"
            )
        for name in (
            "compile_update",
            "thin_support_in_box",
            "evaluation_explore",
            "critic_layer_norm",
            "normalize_observations",
            "safety_certificate",
        ):
            flag(name)
        # RLlib 2.60's TorchLearner keeps one torch LR scheduler per module (the last
        # optimizer's) and steps one shared grad scaler per optimizer: with FtTPO's four
        # optimizers both would silently do something else than asked.
        if self._torch_lr_scheduler_classes:
            fail(
                "`_torch_lr_scheduler_classes` is not supported by FtTPO (four optimizers per "
                "module; RLlib would schedule only one of them); got "
                f"{self._torch_lr_scheduler_classes!r}: set actor_lr, critic_lr and value_lr"
            )
        if self._torch_grad_scaler_class is not None:
            fail(
                "`_torch_grad_scaler_class` is not supported by FtTPO (a float32 learner with "
                "four optimizers per module); got "
                f"{self._torch_grad_scaler_class!r}: leave it None"
            )
        non_negative_int("evaluation_seed")
        if self.seed is not None:
            non_negative_int("seed")
        if not isinstance(self.evaluation_duration, int) or self.evaluation_duration < 1:
            fail(f"`evaluation_duration` must be an integer >= 1; got {self.evaluation_duration!r}")
        if self.evaluation_duration_unit != "episodes":
            fail(
                "`evaluation_duration_unit` must be 'episodes' for FtTPO's evaluation; "
                f"got {self.evaluation_duration_unit!r}"
            )

    # ---- the dataset ---------------------------------------------------------------------------

    @property
    def split_seed(self) -> int:
        """Seed of the held-out split (:func:`fttpo_ray.data.split.held_out_mask`): ``seed``,
        or 0 when it is unset, so that the split never depends on the clock."""
        return int(self.seed) if self.seed is not None else 0

    def resolve_dataset(self) -> None:
        """Makes the dataset ready and points the config at it (called by :meth:`FtTPO.setup`).

        Collects the dataset if it is missing and collectable (a missing one that is not raises
        :class:`~fttpo_ray.errors.DatasetError` naming it and how to create it), sets ``env``
        (the dataset's, or checks a given one against it), the spaces and the offline input:
        in memory up to ``in_memory_max_transitions`` transitions, else streamed from Parquet.
        In a sweep trial the table comes from Ray's object store when the driver shared it
        (:mod:`fttpo_ray.data.object_store`; the driver checked it against the env), so the
        node needs no copy of the dataset; otherwise from the local disk.
        """
        from fttpo_ray.data import check_compatible, ensure_dataset, load_transitions
        from fttpo_ray.data.object_store import shared_transitions

        transitions = shared_transitions(self.dataset_id)
        if transitions is None:
            ensure_dataset(self.dataset_id)
            transitions = load_transitions(self.dataset_id)
            if self.env and isinstance(self.env, str):
                check_compatible(self.dataset_id, self.env)
        if not self.env:
            self.env = transitions.env_id
        if isinstance(self.env, str) and self.observation_space is None:
            env = gym.make(self.env, **(self.env_config or {}))
            self.observation_space, self.action_space = env.observation_space, env.action_space
            env.close()
        in_memory = len(transitions) <= self.in_memory_max_transitions
        if not in_memory and self.held_out_fraction > 0.0:
            raise ConfigError(
                f"`held_out_fraction`={self.held_out_fraction} needs the dataset in memory; "
                f"'{self.dataset_id}' has {len(transitions)} transitions, above "
                f"`in_memory_max_transitions`={self.in_memory_max_transitions}: raise that "
                "or set held_out_fraction=0"
            )
        if self.normalize_observations:
            from fttpo_ray.data.split import held_out_mask
            from fttpo_ray.data.transitions import OBS_STD_FLOOR

            train = ~held_out_mask(transitions.episode_ids, self.held_out_fraction, self.split_seed)
            obs = transitions.obs[train].astype(np.float64)
            std = np.maximum(obs.std(axis=0), OBS_STD_FLOOR)
            self._obs_statistics = (obs.mean(axis=0).tolist(), std.tolist())
        else:
            self._obs_statistics = None
        if in_memory:
            self.input_ = [transitions.path]
            self.offline_data_class = InMemoryOfflineData
        else:
            from fttpo_ray.algorithms.fttpo.prelearner import FlatTransitionPreLearner
            from fttpo_ray.data import to_parquet

            # Larger than memory: stream the flat parquet rows through Ray Data (RLlib's
            # OfflineData) with a pre-learner that only casts columns; a local shuffle buffer
            # stands in for uniform sampling.
            self.input_ = [to_parquet(self.dataset_id)]
            self.input_read_method = "read_parquet"
            self.offline_data_class = None
            self.prelearner_class = FlatTransitionPreLearner
            self.map_batches_kwargs = {"concurrency": 1, **(self.map_batches_kwargs or {})}
            self.iter_batches_kwargs = {
                "local_shuffle_buffer_size": 64 * self.train_batch_size_per_learner,
                **(self.iter_batches_kwargs or {}),
            }


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
        """Resolves the dataset (:meth:`FtTPOConfig.resolve_dataset`), then RLlib's setup.

        ``Algorithm.__init__`` has validated and frozen the config (whether it came from
        ``build_algo()``, a Tune trial's dict or a checkpoint); the dataset is resolved on an
        unfrozen copy, which is validated again, frozen and becomes ``self.config``. The env
        creator is derived again, since the env may have come from the dataset.
        """
        resolved = self.config.copy(copy_frozen=False)
        resolved.resolve_dataset()
        space = resolved.action_space
        if resolved.safety_certificate and getattr(space, "shape", None) != (1,):
            raise ConfigError(
                "`safety_certificate` scans a dose grid and needs a 1-D action space; "
                f"'{resolved.dataset_id}' has actions of shape {getattr(space, 'shape', None)}: "
                "set safety_certificate=False"
            )
        resolved.validate()
        resolved.freeze()
        self.config = resolved
        self._env_id, self.env_creator = self._get_env_id_and_creator(resolved.env, resolved)
        super().setup(resolved)
        if resolved.safety_certificate:
            self._fit_certificate()

    def _fit_certificate(self) -> None:
        """Fit the certificate's reward ensemble on the training episodes, calibrate it on the
        held-out ones (docs/algorithm.md §5.1) and load it into every learner's module; the
        evaluation env runners receive it with the weights. Deterministic given ``seed``, so a
        restored checkpoint (which carries the fitted certificate) holds the same one."""
        from fttpo_ray.algorithms.fttpo.certificate import fit_certificate

        state, calibration = fit_certificate(self.config)

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
        in_memory = isinstance(self.offline_data, InMemoryOfflineData)
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
        module = learner_module(self)
        criteria = held_out_criteria(module, held_out, self.config.gamma)
        for name, value in criteria.items():
            self.metrics.log_value((SELECTION, name), value, window=1)
        self.metrics.log_value((SELECTION, HELD_OUT_TRANSITIONS), count, window=1)
        criterion = self.config.selection_criterion
        selected = getattr(self, "_selected", None)
        iteration = self.iteration + 1
        if better(criterion, criteria[criterion], selected and selected[SELECTED_CRITERION]):
            selected = {
                SELECTED_ITERATION: iteration,
                SELECTED_CRITERION: criteria[criterion],
                COMPONENT_RL_MODULE: copy_state(module.get_state()),
            }
            self._selected = selected
        self.metrics.log_value(
            (SELECTED, SELECTED_ITERATION), selected[SELECTED_ITERATION], window=1
        )
        self.metrics.log_value(
            (SELECTED, SELECTED_CRITERION), selected[SELECTED_CRITERION], window=1
        )

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
