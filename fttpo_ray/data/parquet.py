"""Flat Parquet export of a dataset for RLlib's own offline algorithms (BC, MARWIL, IQL, CQL).

RLlib 2.60's new-API-stack offline input (``OfflineData`` + ``OfflinePreLearner`` with
``input_read_episodes=False``, the default) reads rows with ``ray.data.read_parquet`` and turns
each row into a one-step episode. Per row it needs ``obs``, ``actions``, ``rewards``, ``new_obs``
and ``terminateds`` (or ``dones``); it uses ``truncateds`` and ``eps_id`` when present; columns
not in its schema (``eps_id, agent_id, module_id, obs, actions, rewards, infos, new_obs,
terminateds, truncateds, t``) would become "extra model outputs", so we write only schema
columns: ``eps_id`` (int64 episode index), ``t`` (step in the episode), ``obs``, ``actions``
(**normalised to [-1, 1]**, as :func:`fttpo_ray.data.load_transitions` gives them), ``rewards``,
``new_obs`` (float32 fixed-size lists / scalars), ``terminateds``, ``truncateds`` (bool).
Rows are shuffled once with ``SHUFFLE_SEED`` because RLlib streams the rows in file order.

Settings verified with one or two ``train()`` iterations of RLlib's ``BCConfig``,
``MARWILConfig``, ``IQLConfig`` and ``CQLConfig`` on ``fttpo/TreatmentSim-v0`` on a 2-CPU machine
(local learner, no env runners); :func:`configure_rllib_offline` applies them::

    obs_space, act_space = dataset_spaces(dataset_id)
    config.environment("fttpo/TreatmentSim-v0",         # the dataset's env; the spaces are
                       observation_space=obs_space,     # required by validate() when no
                       action_space=act_space)          # evaluation is configured
    config.offline_data(**rllib_offline_data_kwargs(dataset_id))
    # = input_=[to_parquet(dataset_id)], input_read_method="read_parquet",
    #   materialize_data=True, materialize_mapped_data=False,
    #   map_batches_kwargs={"concurrency": 1}, iter_batches_kwargs={"prefetch_batches": 1},
    #   dataset_num_iters_per_learner=2
    config.learners(num_learners=0)                     # local learner; no extra actor
    config.env_runners(num_env_runners=0)

- ``materialize_data=True`` and a map concurrency of 1 avoid the hang of the default streaming
  pipeline on 2 CPUs (RLlib's default concurrency is 2 pre-learner actors).
- ``materialize_mapped_data`` stays ``False``: the pre-learner's connectors use the current
  module, so mapping once and freezing the result would be wrong for IQL/CQL/MARWIL.
- ``dataset_num_iters_per_learner=2`` (not 1): with a local learner and exactly 1, RLlib 2.60's
  CQL passes a batch where the learner expects iterators and fails with ``KeyError: 0``; BC,
  MARWIL and IQL work with any value. Each ``train()`` then runs that many minibatch updates.
- CQL (a SAC subclass) also needs ``.training(lr=None)`` — RLlib's own rule, not ours.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray.rllib.core.columns import Columns

from fttpo_ray.data.cache import entry_path, fingerprint, write_entry
from fttpo_ray.data.minari_files import dataset_spaces
from fttpo_ray.data.transitions import load_transitions
from fttpo_ray.errors import DatasetError

logger = logging.getLogger(__name__)

#: Seed of the one-off row shuffle.
SHUFFLE_SEED = 0
#: Rows per Parquet row group.
ROW_GROUP_SIZE = 65_536
#: File name inside the export directory.
PARQUET_FILE = "part-00000.parquet"
#: Cache entry kind of the export (``<dataset dir>/fttpo_cache/parquet-<key>/``).
CACHE_KIND = "parquet"


def to_parquet(dataset_id: str) -> str:
    """Write (once per dataset version) and return the directory of the flat Parquet export.

    Cached as ``<dataset dir>/fttpo_cache/parquet-<key>/`` with the same key as the transitions
    cache; an unchanged dataset is not exported again.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = fingerprint(dataset_id)
    transitions = load_transitions(dataset_id)
    target = entry_path(Path(transitions.path), CACHE_KIND, key)
    if (target / PARQUET_FILE).is_file():
        return str(target)
    start = time.perf_counter()
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(transitions))
    columns = transitions.as_dict()
    t = np.arange(len(transitions)) - np.searchsorted(
        transitions.episode_ids, transitions.episode_ids, side="left"
    )
    table = pa.table(
        {
            Columns.EPS_ID: pa.array(transitions.episode_ids[order]),
            Columns.T: pa.array(t[order].astype(np.int64)),
            Columns.OBS: _fixed_list(columns[Columns.OBS][order]),
            Columns.ACTIONS: _fixed_list(columns[Columns.ACTIONS][order]),
            Columns.REWARDS: pa.array(columns[Columns.REWARDS][order]),
            Columns.NEXT_OBS: _fixed_list(columns[Columns.NEXT_OBS][order]),
            Columns.TERMINATEDS: pa.array(columns[Columns.TERMINATEDS][order]),
            Columns.TRUNCATEDS: pa.array(columns[Columns.TRUNCATEDS][order]),
        }
    )
    try:
        write_entry(
            Path(transitions.path),
            CACHE_KIND,
            key,
            lambda staging: pq.write_table(
                table, staging / PARQUET_FILE, row_group_size=ROW_GROUP_SIZE
            ),
        )
    except OSError as err:
        raise DatasetError(
            f"could not write the Parquet export of '{dataset_id}' to {target} "
            f"({err.strerror or err}); check the permissions of MINARI_DATASETS_PATH"
        ) from None
    logger.info(
        "Exported '%s' (%d rows) to %s in %.2f s",
        dataset_id,
        len(transitions),
        target,
        time.perf_counter() - start,
    )
    return str(target)


def rllib_offline_data_kwargs(dataset_id: str, **overrides: Any) -> dict[str, Any]:
    """``config.offline_data(**...)`` settings that work for RLlib's BC/MARWIL/IQL/CQL here.

    See the module docstring; ``overrides`` replace single entries.
    """
    return {
        "input_": [to_parquet(dataset_id)],
        "input_read_method": "read_parquet",
        "materialize_data": True,
        "materialize_mapped_data": False,
        "map_batches_kwargs": {"concurrency": 1},
        "iter_batches_kwargs": {"prefetch_batches": 1},
        "dataset_num_iters_per_learner": 2,
        **overrides,
    }


def configure_rllib_offline(config: Any, dataset_id: str, **overrides: Any) -> Any:
    """Point an RLlib ``AlgorithmConfig`` (BC, MARWIL, IQL, CQL) at ``dataset_id``.

    Sets ``environment(env=<dataset env>, observation_space=..., action_space=...)`` and
    ``offline_data(**rllib_offline_data_kwargs(dataset_id, **overrides))``; returns ``config``.
    """
    transitions = load_transitions(dataset_id)
    observation_space, action_space = dataset_spaces(dataset_id)
    config.environment(
        env=transitions.env_id, observation_space=observation_space, action_space=action_space
    )
    config.offline_data(**rllib_offline_data_kwargs(dataset_id, **overrides))
    return config


def _fixed_list(values: np.ndarray) -> Any:
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
