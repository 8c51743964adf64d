"""Generic evaluation: rollouts of any policy in any gymnasium environment, with returns,
normalised scores and the safety metrics of docs/algorithm.md §5 (violation rate and its
Clopper–Pearson bound, prohibited mass, support and boundary statistics).

A policy is an :class:`EvalPolicy` (observations -> action distribution). This package knows no
algorithm and no RLModule: turning an algorithm's module into ``EvalPolicy`` objects, and
plugging the evaluator into RLlib, is the algorithms' job (``fttpo_ray.algorithms.fttpo.evaluation``
for FtTPO, ``fttpo_ray.algorithms.rllib_evaluation`` for RLlib's built-ins and checkpoints).
"""

from fttpo_ray.evaluation.reference import reference_scores
from fttpo_ray.evaluation.rollout import EvalPolicy, evaluate_policies

__all__ = ["EvalPolicy", "evaluate_policies", "reference_scores"]
