"""Minari <-> RLlib: collect local Minari datasets, load them as flat transitions, export Parquet.

- :func:`collect_dataset` — roll out a behaviour policy into a local Minari dataset (atomic).
- :func:`load_transitions` — a dataset as :class:`Transitions` (float32 arrays under RLlib's
  column names, actions normalised to [-1, 1], normalisation statistics), cached.
- :func:`to_parquet` / :func:`rllib_offline_data_kwargs` — the flat Parquet export and the
  ``config.offline_data`` settings for RLlib's BC/MARWIL/IQL/CQL.
- :func:`ensure_dataset` — load or create a dataset on demand; :func:`check_compatible`.
See ``docs/datasets.md``.
"""

from __future__ import annotations

from fttpo_ray.data.collect import DatasetInfo, collect_dataset, dataset_info
from fttpo_ray.data.ensure import KNOWN_DATASETS, DatasetRecipe, ensure_dataset
from fttpo_ray.data.load import (
    Transitions,
    check_compatible,
    dataset_exists,
    dataset_path,
    dataset_spaces,
    denormalize_actions,
    load_transitions,
    normalize_actions,
)
from fttpo_ray.data.parquet import configure_rllib_offline, rllib_offline_data_kwargs, to_parquet

__all__ = [
    "KNOWN_DATASETS",
    "DatasetInfo",
    "DatasetRecipe",
    "Transitions",
    "check_compatible",
    "collect_dataset",
    "configure_rllib_offline",
    "dataset_exists",
    "dataset_info",
    "dataset_path",
    "dataset_spaces",
    "denormalize_actions",
    "ensure_dataset",
    "load_transitions",
    "normalize_actions",
    "rllib_offline_data_kwargs",
    "to_parquet",
]
