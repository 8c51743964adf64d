"""Plugging the evaluator into RLlib: FtTPO's evaluation, the same for RLlib's own algorithms,
and the evaluation of a checkpoint (``fttpo eval``).

FtTPO evaluates both policies of the learner's full module: the thin one (which acts and which
environment workers receive) and the fat proposal (whose scale head lives on the learner only).
The evaluation therefore runs in the algorithm's process on a copy of the learner's weights,
not on the evaluation env runners, and it reports under ``evaluation/thin/...`` and
``evaluation/fat/...``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    EPISODE_RETURN_MEAN,
    EVALUATION_RESULTS,
)
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from fttpo_ray import metrics as m
from fttpo_ray.evaluation.rollout import EvalPolicy, evaluate_policies
from fttpo_ray.rl_module.fttpo_rl_module import (
    FAT_VARIANTS,
    THIN_ACTING_VARIANTS,
    FtTPOTorchRLModule,
)

logger = logging.getLogger(__name__)

_EVAL_MODULE_ATTR = "_fttpo_evaluation_module"


def fttpo_policies(module: FtTPOTorchRLModule) -> list[EvalPolicy]:
    """The thin and/or fat policy of an FtTPO module, as the variant has them."""
    policies = []
    if module.variant in THIN_ACTING_VARIANTS:
        policies.append(
            EvalPolicy(
                name=m.THIN,
                distribution=lambda obs: module.thin_distribution(
                    module.policy_params(obs), detach_loc=True
                ),
                deterministic=lambda dist: dist.loc,
            )
        )
    if module.variant in FAT_VARIANTS:
        policies.append(
            EvalPolicy(
                name=m.FAT,
                distribution=lambda obs: module.fat_distribution(
                    module.policy_params(obs), detach=True
                ),
                deterministic=lambda dist: dist.loc,
            )
        )
    return policies


def _learner_module(algorithm: Any) -> FtTPOTorchRLModule:
    """The learner's full module (local learner), or a local copy of its weights (remote)."""
    group = algorithm.learner_group
    if group.is_local:
        return group._learner.module[DEFAULT_MODULE_ID].unwrapped()
    module = getattr(algorithm, _EVAL_MODULE_ATTR, None)
    if module is None:
        config = algorithm.config
        module = RLModuleSpec(
            module_class=FtTPOTorchRLModule,
            observation_space=config.observation_space,
            action_space=config.action_space,
            model_config=config.model_config,
        ).build()
        setattr(algorithm, _EVAL_MODULE_ATTR, module)
    state = group.get_state(
        components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", inference_only=False
    )[COMPONENT_LEARNER][COMPONENT_RL_MODULE][DEFAULT_MODULE_ID]
    module.set_state(state)
    return module


def reference_scores(dataset_id: str | None) -> tuple[float, float] | None:
    """``(ref_min, ref_max)`` returns of a dataset, where it has them."""
    if not dataset_id:
        return None
    from fttpo_ray.data import load_transitions

    transitions = load_transitions(dataset_id)
    if transitions.ref_min_score is None or transitions.ref_max_score is None:
        return None
    return float(transitions.ref_min_score), float(transitions.ref_max_score)


def _report(algorithm: Any, results: dict[str, dict[str, float]]) -> tuple[dict, int, int]:
    """Log ``results`` where RLlib's new stack reads evaluation results (``algorithm.metrics``
    under ``evaluation/``), plus the acting policy's return under RLlib's standard key
    ``evaluation/env_runners/episode_return_mean`` (thin if present, else fat), so that
    RLlib- and Tune-native tooling that looks there finds it."""
    # RLlib merges evaluation results from (env-runner) loggers; report through one too.
    logger_ = MetricsLogger()
    logger_.log_dict(results, window=1)
    acting = results.get(m.THIN) or results.get(m.FAT)
    if acting is not None:
        logger_.log_value(
            (ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN), acting[m.EPISODE_RETURN_MEAN], window=1
        )
    algorithm.metrics.aggregate([logger_.reduce()], key=EVALUATION_RESULTS)
    steps = int(sum(r[m.EPISODES] * r[m.EPISODE_LEN_MEAN] for r in results.values()))
    return results, steps, steps


def evaluation_function(algorithm: Any, eval_workers: Any) -> tuple[dict, int, int]:
    """RLlib ``custom_evaluation_function`` of :class:`FtTPO` (set by ``FtTPOConfig``)."""
    config = algorithm.config
    results = evaluate_policies(
        fttpo_policies(_learner_module(algorithm)),
        config.env,
        env_config=config.env_config,
        episodes=config.evaluation_duration,
        seed=config.evaluation_seed,
        explore=config.evaluation_explore,
        reference_scores=reference_scores(config.dataset_id),
    )
    return _report(algorithm, results)


class _RLlibDistribution:
    """Minimal sampling interface over an RLlib distribution without a torch counterpart."""

    def __init__(self, dist: Any) -> None:
        self._dist = dist

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        if sample_shape:
            return self._dist.sample(sample_shape=torch.Size(sample_shape))
        return self._dist.sample()

    def deterministic(self) -> torch.Tensor:
        return self._dist.to_deterministic().sample()


def rllib_module_policy(module: RLModule, name: str = m.FAT) -> EvalPolicy:
    """Any RLlib RLModule's inference policy (RLlib's IQL, CQL, BC, MARWIL ...)."""

    def distribution(obs: torch.Tensor):
        out = module.forward_inference({Columns.OBS: obs})
        dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        if isinstance(dist, TorchDiagGaussian):
            return dist._dist
        return _RLlibDistribution(dist)

    def deterministic(dist: Any) -> torch.Tensor:
        if isinstance(dist, torch.distributions.Normal):
            return dist.loc
        return dist.deterministic()

    return EvalPolicy(name=name, distribution=distribution, deterministic=deterministic)


def builtin_evaluation_function(
    algorithm: Any,
    eval_workers: Any,
    *,
    episodes: int,
    seed: int,
    explore: bool,
    reference: tuple[float, float] | None,
) -> tuple[dict, int, int]:
    """Evaluation of an RLlib built-in algorithm's policy, reported as ``evaluation/fat/...``
    (a full-support policy), with the same episodes and metrics as FtTPO's."""
    module = algorithm.learner_group._learner.module[DEFAULT_MODULE_ID]
    if not algorithm.learner_group.is_local:
        module = eval_workers.local_env_runner.module
    results = evaluate_policies(
        [rllib_module_policy(module)],
        algorithm.config.env,
        env_config=algorithm.config.env_config,
        episodes=episodes,
        seed=seed,
        explore=explore,
        reference_scores=reference,
    )
    return _report(algorithm, results)


def configure_evaluation(
    config: Any,
    *,
    episodes: int = 100,
    seed: int = 1_000_000,
    explore: bool = True,
    interval: int = 1,
    dataset_id: str | None = None,
) -> Any:
    """Install FtTPO's evaluation (same episodes, same metrics) on any RLlib AlgorithmConfig."""
    if episodes < 1:
        raise ValueError(f"`episodes` must be >= 1; got {episodes}")
    if hasattr(config, "evaluation_seed"):
        return config.evaluation(
            evaluation_interval=interval,
            evaluation_duration=episodes,
            evaluation_seed=seed,
            evaluation_explore=explore,
        )
    return config.evaluation(
        evaluation_interval=interval,
        evaluation_duration=episodes,
        evaluation_duration_unit="episodes",
        custom_evaluation_function=functools.partial(
            builtin_evaluation_function,
            episodes=episodes,
            seed=seed,
            explore=explore,
            reference=reference_scores(dataset_id),
        ),
    )


def evaluate_checkpoint(
    path: str, *, episodes: int = 1000, seed: int = 1_000_000, explore: bool = True
) -> dict[str, dict[str, float]]:
    """Returns and safety metrics of an algorithm checkpoint (``fttpo eval``)."""
    from ray.rllib.algorithms.algorithm import Algorithm

    from fttpo_ray.algorithms.fttpo.fttpo import FtTPO

    algorithm = Algorithm.from_checkpoint(path)
    try:
        config = algorithm.config
        if isinstance(algorithm, FtTPO):
            policies = fttpo_policies(_learner_module(algorithm))
            dataset_id = config.dataset_id
        else:
            policies = [
                rllib_module_policy(algorithm.learner_group._learner.module[DEFAULT_MODULE_ID])
            ]
            dataset_id = None
        return evaluate_policies(
            policies,
            config.env,
            env_config=config.env_config,
            episodes=episodes,
            seed=seed,
            explore=explore,
            reference_scores=reference_scores(dataset_id),
        )
    finally:
        algorithm.stop()
