"""Offline model selection on held-out episodes (docs/algorithm.md §2.2).

After every training iteration FtTPO scores its current module on the dataset's held-out
transitions (:attr:`fttpo_ray.algorithms.offline_data.InMemoryOfflineData.held_out`, episodes
the learner never samples; :func:`select`) and keeps the weights of the best-scoring iteration
as "selected" beside the last ones. Nothing here reads an environment: the criteria are
functions of the module and the held-out transitions only.

Criteria (both computed every iteration; ``selection_criterion`` picks the one that selects):

- ``td_error``: ``E_holdout[(Q_agg(s, a) - r - gamma (1 - d) Qbar_agg(s', mu(s')))^2]`` with
  ``mu`` the acting policy's location: how well the critic generalises to unseen episodes
  (lower is better).
- ``relative_td_error``: ``td_error / Var_holdout(y)``, ``y`` the TD targets above: the share
  of the targets' spread that the critic does not explain (lower is better). Unlike
  ``td_error`` it does not grow with the critic's scale: rewards times ``k`` multiply both the
  error and the spread by ``k²``, and a value function that grows over training (the raw TD
  error then grows with it) is judged by how well it fits, not by its size.
- ``policy_q``: ``E_holdout[Q_agg(s, mu(s))]``: the critic's value of the acting policy's
  location at held-out states (higher is better); it trusts the critic's ranking of actions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from fttpo_ray.algorithms.fttpo.losses import td_target

#: Criterion names (values of ``FtTPOConfig.selection_criterion``) and their metric keys.
TD_ERROR = "td_error"
RELATIVE_TD_ERROR = "relative_td_error"
POLICY_Q = "policy_q"
CRITERIA = (TD_ERROR, RELATIVE_TD_ERROR, POLICY_Q)
#: ``True`` where a larger value of the criterion is better.
MAXIMISE = {TD_ERROR: False, RELATIVE_TD_ERROR: False, POLICY_Q: True}

#: Result keys: ``selection/<criterion>`` each iteration, ``selected/...`` for the best so far.
SELECTION = "selection"
SELECTED = "selected"
SELECTED_ITERATION = "iteration"
SELECTED_CRITERION = "criterion"
HELD_OUT_TRANSITIONS = "held_out_transitions"


def held_out_criteria(module: Any, held_out: dict[str, torch.Tensor], gamma: float) -> dict:
    """Every criterion of the module on the held-out transitions (Python floats).

    ``module`` is an FtTPO module (raw observations in, its own normalisation applied);
    ``held_out`` has the batch columns ``obs, actions, rewards, new_obs, terminateds``.
    """
    obs = held_out[Columns.OBS]
    with torch.no_grad():
        next_loc = module.policy_params(held_out[Columns.NEXT_OBS]).loc
        next_q = module.q_aggregate(held_out[Columns.NEXT_OBS], next_loc, target=True)
        target = td_target(held_out[Columns.REWARDS], held_out[Columns.TERMINATEDS], next_q, gamma)
        q = module.q_aggregate(obs, held_out[Columns.ACTIONS])
        policy_q = module.q_aggregate(obs, module.policy_params(obs).loc)
        td_error = float(torch.mean((q - target) ** 2))
        spread = float(torch.var(target, correction=0))
        return {
            TD_ERROR: td_error,
            RELATIVE_TD_ERROR: td_error / spread if spread > 0.0 else math.inf,
            POLICY_Q: float(policy_q.mean()),
        }


def better(criterion: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``criterion`` beats ``best`` (``None``: nothing yet)."""
    if best is None:
        return True
    return value > best if MAXIMISE[criterion] else value < best


def copy_state(state: Any) -> Any:
    """A deep copy of a module state (nested dicts of arrays), detached from the module."""
    if isinstance(state, dict):
        return {key: copy_state(value) for key, value in state.items()}
    return np.array(state, copy=True)


def select(
    module: Any,
    held_out: dict[str, torch.Tensor],
    *,
    gamma: float,
    criterion: str,
    iteration: int,
    selected: dict[str, Any] | None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Score ``module`` on the held-out transitions and keep the better of it (at
    ``iteration``) and ``selected`` (the best so far, or ``None``).

    Returns every criterion's value and the selected entry: ``{SELECTED_ITERATION: i,
    SELECTED_CRITERION: value, COMPONENT_RL_MODULE: module state (numpy arrays)}``.
    """
    from ray.rllib.core import COMPONENT_RL_MODULE

    criteria = held_out_criteria(module, held_out, gamma)
    if better(criterion, criteria[criterion], selected and selected[SELECTED_CRITERION]):
        selected = {
            SELECTED_ITERATION: iteration,
            SELECTED_CRITERION: criteria[criterion],
            COMPONENT_RL_MODULE: copy_state(module.get_state()),
        }
    return criteria, selected
