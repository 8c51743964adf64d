"""In-memory offline data for datasets that fit in memory (uniform minibatch sampling).

RLlib's default ``OfflineData`` streams rows through Ray Data and pre-learner actors that build
one episode object per transition: right for datasets larger than memory, but on a dataset of a
few million transitions or fewer it costs far more than the gradient step itself (see
``benchmarks/results/throughput.md``). This class holds the flat transition table as tensors
and draws uniform minibatches with replacement — the scheme of CORL and d3rlpy.

It plugs into RLlib through ``config.offline_data(offline_data_class=InMemoryOfflineData)``;
:class:`~fttpo_ray.algorithms.fttpo.fttpo.FtTPOConfig` picks it by dataset size.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.offline.offline_data import OfflineData
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override

from fttpo_ray.data.split import held_out_mask
from fttpo_ray.errors import DatasetError

logger = logging.getLogger(__name__)

COLUMNS = (
    Columns.OBS,
    Columns.ACTIONS,
    Columns.REWARDS,
    Columns.NEXT_OBS,
    Columns.TERMINATEDS,
    Columns.TRUNCATEDS,
)


def check_finite(table: dict[str, np.ndarray], dataset_id: str) -> None:
    """Raise :class:`DatasetError` naming the first column and row holding NaN or inf."""
    for column, values in table.items():
        if np.issubdtype(values.dtype, np.floating):
            bad = ~np.isfinite(values)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DatasetError(
                    f"dataset '{dataset_id}' has a non-finite value in column '{column}' at "
                    f"transition {row}; clean or re-collect the dataset"
                )


def _as_tensors(table: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """float32 tensors, boolean termination and truncation flags."""
    out = {column: torch.from_numpy(values.astype(np.float32)) for column, values in table.items()}
    for column in (Columns.TERMINATEDS, Columns.TRUNCATEDS):
        out[column] = torch.from_numpy(np.asarray(table[column]).astype(bool))
    return out


class InMemoryOfflineData(OfflineData):
    """Flat transitions held as torch tensors; :meth:`sample` returns a uniform minibatch set.

    Subclasses RLlib's ``OfflineData`` (which RLlib requires) but replaces its Ray Data reader:
    ``OfflineData.__init__`` is deliberately not called.

    The constructor signature is RLlib's (``offline_data_class(config)``); the config must be an
    :class:`FtTPOConfig` with a resolved ``dataset_id``. The algorithm sets ``learner_handles``,
    ``module_spec``, ``spaces`` and ``locality_hints`` after construction (unused here).

    With ``config.held_out_fraction > 0`` the held-out episodes
    (:func:`fttpo_ray.data.split.held_out_mask`, seeded by ``config.split_seed``) are never
    sampled: they are kept apart in :attr:`held_out` for offline model selection.
    """

    @override(OfflineData)
    def __init__(self, config: Any) -> None:
        from fttpo_ray.data import load_transitions

        self.config = config
        transitions = load_transitions(config.dataset_id)
        table = {column: np.asarray(transitions.as_dict()[column]) for column in COLUMNS}
        check_finite(table, config.dataset_id)
        if len(table[Columns.REWARDS]) == 0:
            raise DatasetError(f"dataset '{config.dataset_id}' holds no transitions")
        held_out = held_out_mask(
            transitions.episode_ids, config.held_out_fraction, config.split_seed
        )
        self._table = _as_tensors({column: values[~held_out] for column, values in table.items()})
        #: The held-out transitions (same columns), never sampled; empty without a split.
        self.held_out = _as_tensors({column: values[held_out] for column, values in table.items()})
        self.num_rows = int(len(self._table[Columns.REWARDS]))
        seed = config.seed if config.seed is not None else np.random.SeedSequence().entropy
        self._generator = torch.Generator().manual_seed(int(seed) % (2**63))
        self.learner_handles: list[Any] | None = None
        self.module_spec = None
        self.spaces = None
        self.locality_hints = None
        logger.info(
            "Holding %d transitions of '%s' in memory (%d more held out)",
            self.num_rows,
            config.dataset_id,
            len(self.held_out[Columns.REWARDS]),
        )

    @override(OfflineData)
    def sample(
        self, num_samples: int, num_shards: int = 1, return_iterator: bool = False, **kwargs
    ) -> MultiAgentBatch:
        """``num_samples`` transitions drawn uniformly with replacement, as one batch.

        The learner group splits the batch into one shard per learner and each learner cuts
        its shard into minibatches of ``train_batch_size_per_learner``.
        """
        index = torch.randint(self.num_rows, (num_samples,), generator=self._generator)
        batch = SampleBatch({column: values[index] for column, values in self._table.items()})
        return MultiAgentBatch({DEFAULT_MODULE_ID: batch}, env_steps=num_samples)
