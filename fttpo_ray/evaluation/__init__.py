"""Evaluation: returns, normalised scores and the safety metrics of spec §5, for FtTPO and for
any RLlib algorithm (``configure_evaluation``), and of checkpoints (``evaluate_checkpoint``)."""

from fttpo_ray.evaluation.rllib_hook import (
    configure_evaluation,
    evaluate_checkpoint,
    fttpo_policies,
    rllib_module_policy,
)
from fttpo_ray.evaluation.rollout import EvalPolicy, evaluate_policies

__all__ = [
    "EvalPolicy",
    "configure_evaluation",
    "evaluate_checkpoint",
    "evaluate_policies",
    "fttpo_policies",
    "rllib_module_policy",
]
