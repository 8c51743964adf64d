"""Minari <-> RLlib: collect local Minari datasets, load them as flat transitions, export Parquet.

One job per module:

- ``minari_files`` — where a local dataset lives, its metadata and spaces, its episode files
  (:func:`dataset_path`, :func:`dataset_exists`, :func:`dataset_spaces`).
- ``transitions`` — :func:`load_transitions`: a dataset as :class:`Transitions` (float32 arrays
  under RLlib's column names, actions normalised to [-1, 1] by :func:`normalize_actions`,
  normalisation statistics).
- ``cache`` — the on-disk cache of converted arrays and exports, keyed by the dataset's files.
- ``compat`` — :func:`check_compatible`: a dataset's spaces against an environment's.
- ``collect`` — :func:`collect_dataset`: roll out a behaviour policy into a local Minari dataset
  (atomic), with the behaviour ``policies``; ``envs`` makes environments with one-line errors.
- ``ensure`` — :func:`ensure_dataset`: load or create a dataset on demand.
- ``remote`` — :func:`download_dataset` (Minari's hosted datasets, on demand) and
  :func:`ensure_mixture` (several datasets combined once with Minari's ``combine_datasets``).
- ``parquet`` — :func:`to_parquet` / :func:`rllib_offline_data_kwargs`: the flat Parquet export
  and the ``config.offline_data`` settings for RLlib's BC/MARWIL/IQL/CQL.

See ``docs/datasets.md``.
"""

from __future__ import annotations

from fttpo_ray.data.collect import DatasetInfo, collect_dataset, dataset_info
from fttpo_ray.data.compat import check_compatible
from fttpo_ray.data.ensure import KNOWN_DATASETS, DatasetRecipe, ensure_dataset
from fttpo_ray.data.minari_files import dataset_exists, dataset_path, dataset_spaces
from fttpo_ray.data.parquet import configure_rllib_offline, rllib_offline_data_kwargs, to_parquet
from fttpo_ray.data.remote import download_dataset, ensure_mixture, mixture_id, resolve_dataset
from fttpo_ray.data.transitions import (
    Transitions,
    denormalize_actions,
    load_step_infos,
    load_transitions,
    normalize_actions,
)

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
    "download_dataset",
    "ensure_dataset",
    "ensure_mixture",
    "load_step_infos",
    "load_transitions",
    "mixture_id",
    "normalize_actions",
    "resolve_dataset",
    "rllib_offline_data_kwargs",
    "to_parquet",
]
