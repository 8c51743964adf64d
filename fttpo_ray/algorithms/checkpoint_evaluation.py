"""The evaluation of an algorithm checkpoint, FtTPO or an RLlib built-in (``fttpo eval``).

It sits above both glues it dispatches to, FtTPO's (:mod:`fttpo_ray.algorithms.fttpo.evaluation`)
and the built-ins' (:mod:`fttpo_ray.algorithms.rllib_evaluation`), so that neither imports the
other's algorithm.

RLlib 2.60's ``Algorithm.from_checkpoint`` cannot restore an offline built-in (BC, MARWIL, IQL,
CQL on the new API stack): after restoring the components, ``Algorithm.restore_from_path`` syncs
the weights to the *training* env runners, which an offline algorithm does not have, and fails
with ``'NoneType' object has no attribute 'sync_weights'``. :func:`restore_algorithm` builds such
an algorithm as ``from_checkpoint`` does (the class and constructor arguments stored in the
checkpoint) and restores its components without that sync; FtTPO restores itself (its
``restore_from_path`` handles the offline case).
"""

from __future__ import annotations

import pickle
from pathlib import Path

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.utils import force_list
from ray.rllib.utils.checkpoints import Checkpointable

from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
from fttpo_ray.algorithms.fttpo.fttpo import FtTPO
from fttpo_ray.algorithms.learner_module import learner_module
from fttpo_ray.algorithms.rllib_evaluation import rllib_module_policy
from fttpo_ray.defaults import EVALUATION_EPISODES, EVALUATION_SEED
from fttpo_ray.evaluation import evaluate_policies, reference_scores

#: Keys of RLlib's ``class_and_ctor_args.pkl`` in a checkpoint (``Checkpointable.save_to_path``).
_CLASS_KEY = "class"
_CTOR_ARGS_KEY = "ctor_args_and_kwargs"


def restore_algorithm(path: str | Path) -> Algorithm:
    """The algorithm saved at ``path``, restored; offline built-ins included (module docstring)."""
    path = Path(path)
    with (path / Checkpointable.CLASS_AND_CTOR_ARGS_FILE_NAME).open("rb") as file:
        ctor_info = pickle.load(file)
    algorithm_class = ctor_info[_CLASS_KEY]
    if issubclass(algorithm_class, FtTPO):
        return algorithm_class.from_checkpoint(str(path))
    args, kwargs = ctor_info[_CTOR_ARGS_KEY]
    algorithm = algorithm_class(*force_list(args), **kwargs)
    try:
        Checkpointable.restore_from_path(algorithm, str(path))
    except BaseException:
        algorithm.stop()
        raise
    return algorithm


def evaluate_checkpoint(
    path: str,
    *,
    episodes: int = EVALUATION_EPISODES,
    seed: int = EVALUATION_SEED,
    explore: bool = True,
) -> dict[str, dict[str, float]]:
    """Returns and safety metrics (``{policy name: metrics}``) of the algorithm checkpoint at
    ``path``: FtTPO's thin and/or fat policy, or a built-in's policy as ``fat``.

    The algorithm is restored as it was saved (local or remote learners) and stopped after."""
    algorithm = restore_algorithm(path)
    try:
        config = algorithm.config
        module = learner_module(algorithm)
        if isinstance(algorithm, FtTPO):
            policies = fttpo_policies(module)
            dataset_id = config.dataset_id
        else:
            policies = [rllib_module_policy(module)]
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
