"""FtTPO's evaluation: RLlib's ``custom_evaluation_function`` of :class:`FtTPO` (set by
``FtTPOConfig``) and the evaluation policies of an FtTPO module.

FtTPO evaluates both policies of the learner's full module: the thin one (which acts and which
env runners receive) and the fat proposal (whose scale head lives on the learner only,
docs/algorithm.md §2). The evaluation therefore runs in the algorithm's process on the learner's
module (:func:`fttpo_ray.algorithms.learner_module.learner_module`: the module itself with a local
learner, a copy of its weights with remote learners), not on the evaluation env runners, and it
reports under ``evaluation/thin/...`` and ``evaluation/fat/...`` (docs/algorithm.md §5), and,
with a safety certificate, the certified acting policy beside the plain thin one under
``evaluation/certified/...`` (docs/algorithm.md §5.1).
"""

from __future__ import annotations

from typing import Any

import torch

from fttpo_ray import metrics as m
from fttpo_ray.algorithms.learner_module import learner_module
from fttpo_ray.algorithms.rllib_evaluation import episodes_now, report_evaluation
from fttpo_ray.evaluation import EvalPolicy, evaluate_policies, reference_scores
from fttpo_ray.rl_module.certificate import CertifiedThinDistribution
from fttpo_ray.rl_module.fttpo_rl_module import CERTIFICATE, FtTPOTorchRLModule


def fttpo_policies(module: FtTPOTorchRLModule) -> list[EvalPolicy]:
    """The thin and/or fat policy of an FtTPO module, as its variant's spec has them."""
    policies = []
    if module.spec.has_thin:
        policies.append(
            EvalPolicy(
                name=m.THIN,
                distribution=lambda obs: module.thin_distribution(
                    module.policy_params(obs), detach_loc=True
                ),
                deterministic=lambda dist: dist.loc,
            )
        )
    if module.spec.has_fat:
        policies.append(
            EvalPolicy(
                name=m.FAT,
                distribution=lambda obs: module.fat_distribution(
                    module.policy_params(obs), detach=True
                ),
                deterministic=lambda dist: dist.loc,
            )
        )
    if CERTIFICATE in module._modules:
        policies.append(
            EvalPolicy(
                name=m.CERTIFIED,
                distribution=module.certified_distribution,
                deterministic=lambda dist: dist.loc,
                statistics=certificate_statistics,
            )
        )
    return policies


def certificate_statistics(dist: CertifiedThinDistribution) -> dict[str, torch.Tensor]:
    """Per-state certificate metrics of the certified policy (docs/metrics.md)."""
    support = dist.certified
    return {
        m.ABSTENTION_RATE: support.abstain.double(),
        m.CERTIFIED_SHARE_MEAN: support.certified_share,
        m.CERTIFIED_WIDTH_MEAN: support.high - support.low,
        m.CERTIFICATE_BOUND_WIDTH_MEAN: support.bound_width,
        m.CERTIFICATE_MULTIPLIER: dist.multiplier.expand_as(support.low),
    }


def evaluation_function(
    algorithm: Any, eval_workers: Any
) -> tuple[dict[str, dict[str, float]], int, int]:
    """RLlib ``custom_evaluation_function`` of :class:`FtTPO`: both policies of the learner's
    module on ``evaluation_duration`` episodes seeded from ``evaluation_seed`` (on
    ``evaluation_final_episodes`` at ``evaluation_final_iteration``)."""
    config = algorithm.config
    results = evaluate_policies(
        fttpo_policies(learner_module(algorithm)),
        config.env,
        env_config=config.env_config,
        episodes=episodes_now(
            algorithm,
            config.evaluation_duration,
            config.evaluation_final_episodes,
            config.evaluation_final_iteration,
        ),
        seed=config.evaluation_seed,
        explore=config.evaluation_explore,
        reference_scores=reference_scores(config.dataset_id),
    )
    return report_evaluation(algorithm, results)
