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

:func:`check_checkpoint` reads what a checkpoint is before Ray starts, so that a damaged or
foreign one (or an FtTPO checkpoint whose training dataset is missing) is one line saying what
the folder is and what ``fttpo eval`` accepts, not a traceback from inside RLlib.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.utils import force_list
from ray.rllib.utils.checkpoints import Checkpointable

from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
from fttpo_ray.algorithms.fttpo.fttpo import FtTPO
from fttpo_ray.algorithms.learner_module import learner_module
from fttpo_ray.algorithms.rllib_evaluation import rllib_module_policy
from fttpo_ray.data import KNOWN_DATASETS, dataset_exists
from fttpo_ray.data.envs import make_env
from fttpo_ray.data.remote import is_local_namespace, minari_root
from fttpo_ray.defaults import EVALUATION_EPISODES, EVALUATION_SEED
from fttpo_ray.errors import ConfigError, DatasetError, FttpoError, first_line
from fttpo_ray.evaluation import evaluate_policies, reference_scores

#: Keys of RLlib's ``class_and_ctor_args.pkl`` in a checkpoint (``Checkpointable.save_to_path``).
_CLASS_KEY = "class"
_CTOR_ARGS_KEY = "ctor_args_and_kwargs"
#: Keys of an algorithm config's state (``AlgorithmConfig.get_state``) read before Ray starts.
_ENV_KEY = "env"
_ENV_CONFIG_KEY = "env_config"
_ACTION_SPACE_KEY = "action_space"
_DATASET_ID_KEY = "dataset_id"
#: What ``fttpo eval`` accepts, the end of every message of :func:`check_checkpoint`.
EVAL_ACCEPTS = (
    "fttpo eval accepts the checkpoint of an algorithm with continuous (Box) actions, FtTPO or an "
    "RLlib offline algorithm (BC, MARWIL, IQL, CQL): the directory `fttpo train` printed or a "
    "trial's checkpoint_NNNNNN"
)


def check_checkpoint(path: str | Path) -> None:
    """Raise a one-line :class:`~fttpo_ray.errors.FttpoError` if the algorithm checkpoint at
    ``path`` cannot be evaluated, without starting Ray: its class file missing or unreadable (a
    damaged or partial copy), not an RLlib algorithm, an algorithm with discrete actions (such
    as PPO on CartPole), or an FtTPO checkpoint whose training dataset is missing (FtTPO is
    rebuilt from it: its statistics and the reference scores of the normalised score)."""
    path = Path(path)
    file = path / Checkpointable.CLASS_AND_CTOR_ARGS_FILE_NAME
    if not file.is_file():
        raise ConfigError(
            f"'{path}' is a damaged algorithm checkpoint: {file.name} is missing (an interrupted "
            f"save or a partial copy?); {EVAL_ACCEPTS}"
        )
    try:
        with file.open("rb") as stream:
            ctor_info = pickle.load(stream)
        algorithm_class = ctor_info[_CLASS_KEY]
        config = ctor_info[_CTOR_ARGS_KEY][0][0]
    except Exception as err:  # noqa: BLE001 - any unreadable or foreign pickle is reported
        raise ConfigError(
            f"'{path}' is a damaged algorithm checkpoint: {file.name} cannot be read "
            f"({type(err).__name__}: {first_line(err)}); {EVAL_ACCEPTS}"
        ) from None
    if not (isinstance(algorithm_class, type) and issubclass(algorithm_class, Algorithm)):
        raise ConfigError(
            f"'{path}' is not an RLlib algorithm checkpoint ({file.name} names "
            f"{algorithm_class!r}); {EVAL_ACCEPTS}"
        )
    name = algorithm_class.__name__
    env = _state(config, _ENV_KEY)
    action_space = _state(config, _ACTION_SPACE_KEY)
    if action_space is None and isinstance(env, str) and env:
        try:
            made = make_env(env, **(_state(config, _ENV_CONFIG_KEY) or {}))
        except FttpoError as err:
            raise ConfigError(
                f"'{path}' is a checkpoint of {name} on '{env}', which cannot be made here ({err})"
            ) from None
        action_space = made.action_space
        made.close()
    if action_space is not None and not isinstance(action_space, gym.spaces.Box):
        raise ConfigError(
            f"'{path}' is a checkpoint of {name} on '{env}', whose actions are "
            f"{action_space} (not continuous); {EVAL_ACCEPTS}"
        )
    dataset_id = _state(config, _DATASET_ID_KEY) if issubclass(algorithm_class, FtTPO) else None
    if (
        isinstance(dataset_id, str)
        and is_local_namespace(dataset_id)
        and dataset_id not in KNOWN_DATASETS
        and not dataset_exists(dataset_id)
    ):
        raise DatasetError(
            f"'{path}' is an FtTPO checkpoint trained on dataset '{dataset_id}', which is not "
            f"under the Minari root {minari_root()}: fttpo eval rebuilds FtTPO from its training "
            "dataset; copy the dataset there, point MINARI_DATASETS_PATH at a root that holds it "
            "or recreate it with fttpo collect"
        )


def _state(config: Any, key: str) -> Any:
    """``key`` of an algorithm config's state (a dict) or of a config object."""
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


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

    The algorithm is restored as it was saved (local or remote learners) and stopped after; a
    checkpoint that cannot be restored (damaged state files) is a one-line
    :class:`~fttpo_ray.errors.ConfigError`."""
    try:
        algorithm = restore_algorithm(path)
    except FttpoError:
        raise
    except Exception as err:  # noqa: BLE001 - RLlib's errors of a damaged checkpoint, any kind
        raise ConfigError(
            f"'{path}' could not be restored ({type(err).__name__}: {first_line(err)}); is it "
            f"damaged? {EVAL_ACCEPTS}"
        ) from None
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
