"""Plugging the generic evaluator (:mod:`fttpo_ray.evaluation`) into RLlib, for any algorithm.

- :func:`report_evaluation`: evaluation results logged where RLlib's new API stack reads them
  (``algorithm.metrics`` under ``evaluation/``), so they reach ``train()``'s result, Tune and
  MLflow.
- :func:`rllib_module_policy`, :func:`builtin_evaluation_function`,
  :func:`configure_evaluation`: RLlib's built-in algorithms (BC, MARWIL, IQL, CQL ...) are
  evaluated like FtTPO, on the same episodes with the same metrics, their policy reported as
  ``evaluation/fat/...`` (a full-support policy).

This glue lives with the algorithms, not in :mod:`fttpo_ray.evaluation`, because it needs
RLlib's algorithms and modules; the evaluation package below stays generic (any policy, any
env). FtTPO's own glue, which uses :func:`report_evaluation`, is
:mod:`fttpo_ray.algorithms.fttpo.evaluation`; a checkpoint of either kind is evaluated by
:mod:`fttpo_ray.algorithms.checkpoint_evaluation` (``fttpo eval``). The learner's module comes
from :func:`fttpo_ray.algorithms.learner_module.learner_module`, which works with local and
remote learners alike.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import (
    TorchDiagGaussian,
    TorchSquashedGaussian,
)
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    EPISODE_RETURN_MEAN,
    EVALUATION_RESULTS,
)
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from fttpo_ray import metrics as m
from fttpo_ray.algorithms.learner_module import learner_module
from fttpo_ray.defaults import EVALUATION_EPISODES, EVALUATION_SEED
from fttpo_ray.errors import ConfigError
from fttpo_ray.evaluation import EvalPolicy, evaluate_policies, reference_scores


def report_evaluation(
    algorithm: Any, results: dict[str, dict[str, float]]
) -> tuple[dict[str, dict[str, float]], int, int]:
    """Log ``results`` (``{policy name: metrics}``) where RLlib's new stack reads evaluation
    results (``algorithm.metrics`` under ``evaluation/``), plus the acting policy's return
    under RLlib's standard key ``evaluation/env_runners/episode_return_mean`` (certified if
    present, else thin, else fat), so that RLlib- and Tune-native tooling that looks there finds it.

    Returns what an RLlib ``custom_evaluation_function`` returns: the results and the env
    steps and agent steps they took."""
    # RLlib merges evaluation results from (env-runner) loggers; report through one too.
    evaluation_logger = MetricsLogger()
    evaluation_logger.log_dict(results, window=1)
    acting = results.get(m.CERTIFIED) or results.get(m.THIN) or results.get(m.FAT)
    if acting is not None:
        evaluation_logger.log_value(
            (ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN), acting[m.EPISODE_RETURN_MEAN], window=1
        )
    algorithm.metrics.aggregate([evaluation_logger.reduce()], key=EVALUATION_RESULTS)
    steps = int(sum(r[m.EPISODES] * r[m.EPISODE_LEN_MEAN] for r in results.values()))
    return results, steps, steps


def episodes_now(
    algorithm: Any, episodes: int, final_episodes: int | None, final_iteration: int | None
) -> int:
    """Episodes of the evaluation running now: ``final_episodes`` in the ``final_iteration``-th
    call of ``train()`` (1-based; RLlib counts ``algorithm.iteration`` from 0 and increments it
    after the evaluation), else ``episodes``."""
    if final_episodes is not None and algorithm.iteration + 1 == final_iteration:
        return final_episodes
    return episodes


class _RLlibDistribution:
    """Minimal sampling interface over an RLlib distribution without a torch counterpart."""

    def __init__(self, dist: Any) -> None:
        self._dist = dist

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        if sample_shape:
            return self._dist.sample(sample_shape=torch.Size(sample_shape))
        return self._dist.sample()

    def deterministic(self) -> torch.Tensor:
        """The distribution's deterministic action. For RLlib's tanh-squashed Gaussian (SAC,
        IQL, CQL) that is the squashed mean: RLlib 2.60's ``to_deterministic()`` returns the
        Gaussian's mean *before* the tanh, an action outside the squashed distribution's
        support."""
        if isinstance(self._dist, TorchSquashedGaussian):
            low, high = self._dist.low, self._dist.high
            return low + (torch.tanh(self._dist.loc) + 1.0) / 2.0 * (high - low)
        return self._dist.to_deterministic().sample()


def rllib_module_policy(module: RLModule, name: str = m.FAT) -> EvalPolicy:
    """Any RLlib RLModule's inference policy (RLlib's IQL, CQL, BC, MARWIL ...)."""

    def distribution(obs: torch.Tensor) -> Any:
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
    final_episodes: int | None = None,
    final_iteration: int | None = None,
) -> tuple[dict[str, dict[str, float]], int, int]:
    """RLlib ``custom_evaluation_function`` of a built-in algorithm (installed by
    :func:`configure_evaluation`): its learner's policy, reported as ``evaluation/fat/...``,
    with the same episodes and metrics as FtTPO's (:func:`episodes_now`)."""
    results = evaluate_policies(
        [rllib_module_policy(learner_module(algorithm))],
        algorithm.config.env,
        env_config=algorithm.config.env_config,
        episodes=episodes_now(algorithm, episodes, final_episodes, final_iteration),
        seed=seed,
        explore=explore,
        reference_scores=reference,
    )
    return report_evaluation(algorithm, results)


def configure_evaluation(
    config: Any,
    *,
    episodes: int = EVALUATION_EPISODES,
    seed: int = EVALUATION_SEED,
    explore: bool = True,
    interval: int = 1,
    dataset_id: str | None = None,
    final_episodes: int | None = None,
    final_iteration: int | None = None,
) -> Any:
    """Install FtTPO's evaluation (same episodes, same metrics) on any RLlib AlgorithmConfig.

    An FtTPO config (it has ``evaluation_seed``) gets these settings for its own evaluation;
    any other config gets :func:`builtin_evaluation_function` with them. With
    ``final_episodes``, the ``final_iteration``-th iteration evaluates on that many episodes
    (:func:`episodes_now`)."""
    if episodes < 1:
        raise ConfigError(f"evaluation `episodes` must be >= 1; got {episodes}")
    if (final_episodes is None) != (final_iteration is None):
        raise ConfigError(
            "`final_episodes` and `final_iteration` go together; got "
            f"final_episodes={final_episodes!r}, final_iteration={final_iteration!r}"
        )
    final = {}
    if final_episodes is not None:
        final = {"final_episodes": final_episodes, "final_iteration": final_iteration}
    if hasattr(config, "evaluation_seed"):
        return config.evaluation(
            evaluation_interval=interval,
            evaluation_duration=episodes,
            evaluation_seed=seed,
            evaluation_explore=explore,
            evaluation_final_episodes=final_episodes,
            evaluation_final_iteration=final_iteration,
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
            **final,
        ),
    )
