"""Defaults shared by several layers, defined once (a leaf module: it imports nothing).

- ``EVALUATION_SEED``: episode ``i`` of every evaluation resets with ``EVALUATION_SEED + i``,
  so every evaluation of every run sees the same patients (or start states).
- ``SELECTION_SEED``: the same for selection rollouts, disjoint from the evaluation episodes.
- ``EVALUATION_EPISODES``: episodes of an evaluation that is reported as a result
  (``fttpo eval``, ``evaluate_checkpoint``); the treatment simulator is noisy enough that
  fewer than 1 000 episodes do not separate policies.
"""

from __future__ import annotations

EVALUATION_SEED = 1_000_000
EVALUATION_EPISODES = 1000

#: Episode ``i`` of a *selection* rollout (choosing the best constant dose, or anything else
#: chosen by return in the simulator) resets with ``SELECTION_SEED + i``: never the evaluation
#: episodes, so a choice is not scored on the episodes it was made on.
SELECTION_SEED = 2_000_000
