"""RLlib's own offline algorithms (BC, MARWIL, IQL, CQL) on FtTPO's data and split.

:func:`configure_builtin_offline` points an RLlib config at a dataset: in memory, the training
episodes of the experiment's split are held by the transition table every algorithm shares
(:class:`~fttpo_ray.algorithms.offline_data.InMemoryOfflineData`, RLlib's
``offline_data_class`` extension point), so BC, IQL and CQL train on exactly the episodes
FtTPO trains on (the default split is FtTPO's: ``held_out_fraction=0.2``, ``split_seed=0``).
A dataset larger than memory streams through RLlib's Ray Data path, which cannot hold episodes
out: it needs ``held_out_fraction=0``.

IQL and CQL train, by default, with the lean module and learner of
:mod:`~fttpo_ray.algorithms.baselines.lean_iql` and :mod:`~fttpo_ray.algorithms.baselines.
lean_cql` (:func:`use_lean_learner`).
"""

from __future__ import annotations

import logging
from typing import Any

from ray.rllib.algorithms.cql import CQLConfig

from fttpo_ray.algorithms.offline_data import (
    DEFAULT_HELD_OUT_FRACTION,
    DEFAULT_SPLIT_SEED,
    IN_MEMORY_MAX_TRANSITIONS,
    InMemoryOfflineData,
    check_streamable,
    fits_in_memory,
    in_memory_input_kwargs,
)
from fttpo_ray.data.split import check_split

logger = logging.getLogger(__name__)

#: ``offline_data`` setting: gradient steps (minibatches) per ``train()``.
DATASET_NUM_ITERS = "dataset_num_iters_per_learner"


def use_lean_learner(config: Any) -> Any:
    """Switch an IQL or CQL config to its lean module and learner; other configs unchanged."""
    from ray.rllib.algorithms.iql import IQLConfig

    if isinstance(config, IQLConfig):
        from fttpo_ray.algorithms.baselines.lean_iql import use_lean_iql

        return use_lean_iql(config)
    if isinstance(config, CQLConfig):
        from fttpo_ray.algorithms.baselines.lean_cql import use_lean_cql

        return use_lean_cql(config)
    return config


def configure_builtin_offline(
    config: Any,
    dataset_id: str,
    *,
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
    split_seed: int = DEFAULT_SPLIT_SEED,
    in_memory: bool | None = None,
    max_transitions: int = IN_MEMORY_MAX_TRANSITIONS,
    lean: bool = True,
    **overrides: Any,
) -> Any:
    """Point an RLlib BC/MARWIL/IQL/CQL config at ``dataset_id``; returns ``config``.

    The held-out episodes of the split (``held_out_fraction``, ``split_seed``: the dataset's,
    shared by every algorithm of an experiment, see :func:`fttpo_ray.data.split.held_out_mask`)
    are never sampled. In memory (:class:`~fttpo_ray.algorithms.offline_data.
    InMemoryOfflineData`) when the dataset has at most ``max_transitions`` transitions (or
    ``in_memory`` says so), else RLlib's Ray Data path
    (:func:`fttpo_ray.data.configure_rllib_offline`), which needs ``held_out_fraction=0``.
    ``overrides`` are ``offline_data`` settings; in memory only
    ``dataset_num_iters_per_learner`` (gradient steps per ``train()``, default 1) matters, the
    Ray Data ones are kept for the other path.

    With ``lean`` (the default), IQL trains with :func:`fttpo_ray.algorithms.baselines.lean_iql.
    use_lean_iql` and CQL with :func:`fttpo_ray.algorithms.baselines.lean_cql.use_lean_cql` on
    either path: RLlib's losses, the papers' concatenated critics, target networks moved after
    every gradient step; ``lean=False`` keeps RLlib's own module and learner.
    """
    from fttpo_ray.data import configure_rllib_offline, dataset_spaces, load_transitions

    check_split(held_out_fraction, split_seed)
    if lean:
        use_lean_learner(config)

    transitions = load_transitions(dataset_id)
    if in_memory is None:
        in_memory = fits_in_memory(len(transitions), max_transitions)
    if not in_memory:
        check_streamable(dataset_id, len(transitions), max_transitions, held_out_fraction)
        return configure_rllib_offline(config, dataset_id, **overrides)
    observation_space, action_space = dataset_spaces(dataset_id)
    config.environment(
        env=transitions.env_id, observation_space=observation_space, action_space=action_space
    )
    steps = overrides.pop(DATASET_NUM_ITERS, None) or config.dataset_num_iters_per_learner or 1
    config.offline_data(
        **overrides,
        input_=[transitions.path],
        offline_data_class=InMemoryOfflineData,
        input_read_method_kwargs=in_memory_input_kwargs(dataset_id, held_out_fraction, split_seed),
        dataset_num_iters_per_learner=int(steps),
    )
    return config
