"""Ray Data path for datasets larger than memory: flat transition rows straight to a batch.

RLlib's ``OfflinePreLearner`` turns every row into an episode object and runs the learner
connector pipeline on them (about 43 s per million rows here). FtTPO's learner needs nothing but
the flat columns, so this pre-learner casts them and hands them on, and builds no RLModule copy.
It is used through ``config.offline_data(prelearner_class=FlatTransitionPreLearner, ...)`` for
datasets above ``in_memory_max_transitions`` (written as parquet by
:func:`fttpo_ray.data.to_parquet`); smaller datasets use
:class:`~fttpo_ray.algorithms.fttpo.offline_data.InMemoryOfflineData`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.offline.offline_prelearner import OfflinePreLearner
from ray.rllib.utils import flatten_dict
from ray.rllib.utils.annotations import override

FLOAT_COLUMNS = (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS)
BOOL_COLUMNS = (Columns.TERMINATEDS, Columns.TRUNCATEDS)


def _stack(column: Any) -> np.ndarray:
    """Parquet list columns arrive as object arrays of per-row arrays; stack them."""
    array = np.asarray(column)
    if array.dtype == object:
        array = np.stack(list(array))
    return array


class FlatTransitionPreLearner(OfflinePreLearner):
    """Maps a block of flat transition rows to ``{module_id/column: array}`` (no episodes)."""

    @override(OfflinePreLearner)
    def __init__(self, *, config: Any, spaces: Any = None, module_state: Any = None, **kwargs: Any):
        self.config = config

    @override(OfflinePreLearner)
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {column: _stack(batch[column]).astype(np.float32) for column in FLOAT_COLUMNS}
        for column in BOOL_COLUMNS:
            out[column] = _stack(batch[column]).astype(bool)
        return flatten_dict({DEFAULT_MODULE_ID: out})
