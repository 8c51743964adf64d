"""The transition table of every algorithm: the dataset split by episode, held in memory.

RLlib's default ``OfflineData`` streams rows through Ray Data and pre-learner actors that build
one episode object per transition: right for datasets larger than memory, but on a dataset of a
few million transitions or fewer it costs far more than the gradient step itself (see
``benchmarks/results/throughput.md`` and ``benchmarks/throughput_builtins.py``).
:class:`InMemoryOfflineData` holds the flat transition table as tensors and draws uniform
minibatches with replacement — the scheme of CORL and d3rlpy. One class serves FtTPO and
RLlib's BC, MARWIL, IQL and CQL (:mod:`fttpo_ray.algorithms.baselines`), so every algorithm of
an experiment trains on the same episodes:

- The split belongs to the data: :func:`split_transitions` holds out the episodes of
  :func:`fttpo_ray.data.split.held_out_mask` (``held_out_fraction``, ``split_seed``), the only
  place the mask is computed. Held-out episodes are never sampled; they are kept apart in
  :attr:`InMemoryOfflineData.held_out` (FtTPO's model selection reads them), and the episodes
  sampled from are :attr:`InMemoryOfflineData.train_episode_ids`.
- Datasets up to :data:`IN_MEMORY_MAX_TRANSITIONS` transitions are held in memory; larger ones
  stream through Ray Data, which cannot hold episodes out (:func:`check_streamable`).
- The dataset id and its split travel in ``config.input_read_method_kwargs``
  (:data:`DATASET_ID_KWARG`, :data:`HELD_OUT_FRACTION_KWARG`, :data:`SPLIT_SEED_KWARG`), set by
  :func:`in_memory_input_kwargs`, so RLlib's ``offline_data_class(config)`` needs nothing else.
- Each learner may pull minibatches from a :class:`UniformSampler` (RLlib's CQL always does, the
  others when asked for iterators): an object with the one method of ``ray.data.DataIterator``
  that RLlib's learner calls (``iter_torch_batches``). It pickles without its table and loads
  the same split in the learner's process.
- MARWIL (``beta > 0``) reads ``value_targets``: the discounted return-to-go of each transition
  within its episode, ``G_t = sum_k gamma^k r_{t+k}`` (the Monte-Carlo return of Wang et al.,
  2018, "Exponentially Weighted Imitation Learning for Batched Historical Data"); RLlib's Ray
  Data path, which sees each row as a one-step episode, bootstraps from its value function
  instead. BC, IQL, CQL and FtTPO read the six flat columns only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.offline.offline_data import OfflineData
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override

from fttpo_ray.data.split import held_out_mask
from fttpo_ray.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

#: Datasets up to this many transitions are held in memory; larger ones stream through Ray Data.
IN_MEMORY_MAX_TRANSITIONS = 20_000_000
#: Default share of the episodes held out from training, and default seed of the split.
DEFAULT_HELD_OUT_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0

#: Keys of ``config.input_read_method_kwargs`` that name the dataset and its split.
DATASET_ID_KWARG = "fttpo_dataset_id"
HELD_OUT_FRACTION_KWARG = "fttpo_held_out_fraction"
SPLIT_SEED_KWARG = "fttpo_split_seed"
#: Column of MARWIL's value targets (RLlib's name).
VALUE_TARGETS = Postprocessing.VALUE_TARGETS

#: The six flat columns every algorithm reads.
COLUMNS = (
    Columns.OBS,
    Columns.ACTIONS,
    Columns.REWARDS,
    Columns.NEXT_OBS,
    Columns.TERMINATEDS,
    Columns.TRUNCATEDS,
)
#: Boolean columns (the others are float32).
FLAGS = (Columns.TERMINATEDS, Columns.TRUNCATEDS)


@dataclass(frozen=True, eq=False)
class SplitTransitions:
    """A dataset's transitions and its held-out mask (``True``: the episode is held out)."""

    transitions: Any
    held_out: np.ndarray
    held_out_fraction: float
    split_seed: int

    @property
    def train(self) -> np.ndarray:
        """Mask of the transitions trained on."""
        return ~self.held_out

    @property
    def train_episode_ids(self) -> np.ndarray:
        """Sorted ids of the episodes trained on."""
        return np.unique(self.transitions.episode_ids[self.train]).astype(np.int64)

    def matches(self, dataset_id: str, held_out_fraction: float, split_seed: int) -> bool:
        return (
            self.transitions.dataset_id == dataset_id
            and self.held_out_fraction == float(held_out_fraction)
            and self.split_seed == int(split_seed)
        )


def split_transitions(
    dataset_id: str, held_out_fraction: float, split_seed: int, transitions: Any = None
) -> SplitTransitions:
    """The dataset (``transitions``, or loaded) and its held-out episodes: the one place the
    held-out mask of an experiment is computed."""
    if transitions is None:
        from fttpo_ray.data import load_transitions

        transitions = load_transitions(dataset_id)
    held_out = held_out_mask(transitions.episode_ids, held_out_fraction, split_seed)
    return SplitTransitions(transitions, held_out, float(held_out_fraction), int(split_seed))


def fits_in_memory(num_transitions: int, max_transitions: int = IN_MEMORY_MAX_TRANSITIONS) -> bool:
    """Whether a dataset of ``num_transitions`` is held in memory (else streamed)."""
    return num_transitions <= max_transitions


def check_streamable(
    dataset_id: str, num_transitions: int, max_transitions: int, held_out_fraction: float
) -> None:
    """A streamed dataset (above ``max_transitions``) cannot hold episodes out: raise
    :class:`ConfigError` when ``held_out_fraction > 0`` asks for it."""
    if held_out_fraction > 0.0:
        raise ConfigError(
            f"`held_out_fraction`={held_out_fraction} needs the dataset in memory; "
            f"'{dataset_id}' has {num_transitions} transitions, above "
            f"`in_memory_max_transitions`={max_transitions}: raise that "
            "or set held_out_fraction=0"
        )


def in_memory_input_kwargs(
    dataset_id: str, held_out_fraction: float, split_seed: int
) -> dict[str, Any]:
    """``input_read_method_kwargs`` that point :class:`InMemoryOfflineData` at the split."""
    return {
        DATASET_ID_KWARG: dataset_id,
        HELD_OUT_FRACTION_KWARG: float(held_out_fraction),
        SPLIT_SEED_KWARG: int(split_seed),
    }


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


def discounted_returns_to_go(
    rewards: np.ndarray, episode_ids: np.ndarray, gamma: float
) -> np.ndarray:
    """``G_t = r_t + gamma G_{t+1}`` within each episode (``G = r`` at its last step), float32.

    ``episode_ids`` must be grouped (each episode's transitions contiguous and in order), as
    :func:`fttpo_ray.data.load_transitions` gives them.
    """
    from scipy.signal import lfilter

    returns = np.empty(len(rewards), dtype=np.float64)
    bounds = np.flatnonzero(np.diff(episode_ids)) + 1
    for start, stop in zip(
        np.concatenate([[0], bounds]), np.concatenate([bounds, [len(rewards)]]), strict=True
    ):
        reverse = np.asarray(rewards[start:stop], np.float64)[::-1]
        returns[start:stop] = lfilter([1.0], [1.0, -gamma], reverse)[::-1]
    return returns.astype(np.float32)


def needs_value_targets(config: Any) -> bool:
    """Whether the algorithm's loss reads ``value_targets`` (MARWIL with ``beta > 0``)."""
    from ray.rllib.algorithms.bc import BCConfig
    from ray.rllib.algorithms.iql import IQLConfig
    from ray.rllib.algorithms.marwil import MARWILConfig

    return (
        isinstance(config, MARWILConfig)
        and not isinstance(config, (BCConfig, IQLConfig))
        and float(config.beta) > 0.0
    )


def tables(
    split: SplitTransitions, value_targets_gamma: float | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The training and the held-out rows as tensors (float32; bool flags), plus MARWIL's value
    targets when ``value_targets_gamma`` is given."""
    transitions = split.transitions
    table = {column: np.asarray(transitions.as_dict()[column]) for column in COLUMNS}
    check_finite(table, transitions.dataset_id)
    if len(table[Columns.REWARDS]) == 0:
        raise DatasetError(f"dataset '{transitions.dataset_id}' holds no transitions")
    if value_targets_gamma is not None:
        table[VALUE_TARGETS] = discounted_returns_to_go(
            transitions.rewards, transitions.episode_ids, value_targets_gamma
        )

    def as_tensors(rows: np.ndarray) -> dict[str, torch.Tensor]:
        return {
            column: torch.from_numpy(values[rows].astype(bool if column in FLAGS else np.float32))
            for column, values in table.items()
        }

    return as_tensors(split.train), as_tensors(split.held_out)


def draw(
    table: dict[str, torch.Tensor], size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``size`` rows of ``table`` drawn uniformly with replacement."""
    rows = len(next(iter(table.values())))
    index = torch.randint(rows, (size,), generator=generator, device=generator.device)
    return {key: values[index] for key, values in table.items()}


#: A split handed to the next :class:`InMemoryOfflineData` built in this context (see
#: :func:`handing_over`); RLlib builds the offline data as ``offline_data_class(config)``.
_HANDED: ContextVar[SplitTransitions | None] = ContextVar("fttpo_handed_split", default=None)


@contextlib.contextmanager
def handing_over(split: SplitTransitions) -> Iterator[None]:
    """Within the block, :class:`InMemoryOfflineData` for the same dataset and split uses
    ``split`` instead of splitting the dataset again (FtTPO's setup hands its prepared data)."""
    token = _HANDED.set(split)
    try:
        yield
    finally:
        _HANDED.reset(token)


def _read_kwargs(config: Any) -> tuple[str, float, int]:
    kwargs = config.input_read_method_kwargs or {}
    dataset_id = kwargs.get(DATASET_ID_KWARG)
    if not isinstance(dataset_id, str):
        raise ConfigError(
            f"`input_read_method_kwargs.{DATASET_ID_KWARG}` must name the Minari dataset to "
            f"hold in memory; got {dataset_id!r}"
        )
    # A config written before the split belonged to the data (a checkpoint's) held nothing out.
    fraction = kwargs.get(HELD_OUT_FRACTION_KWARG, 0.0)
    split_seed = kwargs.get(SPLIT_SEED_KWARG, DEFAULT_SPLIT_SEED)
    return dataset_id, float(fraction), int(split_seed)


def _split(dataset_id: str, fraction: float, split_seed: int) -> SplitTransitions:
    handed = _HANDED.get()
    if handed is not None and handed.matches(dataset_id, fraction, split_seed):
        return handed
    return split_transitions(dataset_id, fraction, split_seed)


class UniformSampler:
    """Endless uniform minibatches of a dataset's training episodes, as RLlib's learners read a
    Ray Data iterator.

    RLlib's ``MiniBatchRayDataIterator`` calls ``iter_torch_batches(batch_size=..., device=...,
    **iter_batches_kwargs)`` once and pulls ``dataset_num_iters_per_learner`` batches per
    update; each batch is ``{"<module id>/<column>": tensor}``. Pickles without its table.
    """

    def __init__(
        self,
        dataset_id: str,
        seed: int,
        value_targets_gamma: float | None,
        *,
        held_out_fraction: float,
        split_seed: int = DEFAULT_SPLIT_SEED,
    ) -> None:
        self.dataset_id = dataset_id
        self.seed = int(seed) % (2**63)
        self.value_targets_gamma = value_targets_gamma
        self.held_out_fraction = float(held_out_fraction)
        self.split_seed = int(split_seed)
        self._table: dict[str, torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_table": None}

    @property
    def table(self) -> dict[str, torch.Tensor]:
        """The training rows (loaded in this process on first use)."""
        if self._table is None:
            split = _split(self.dataset_id, self.held_out_fraction, self.split_seed)
            self._table, _ = tables(split, self.value_targets_gamma)
        return self._table

    def iter_torch_batches(
        self, *, batch_size: int, device: Any = None, **_: Any
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Minibatches of ``batch_size`` rows drawn uniformly with replacement, forever (Ray
        Data's own keyword arguments, such as ``prefetch_batches``, do not apply)."""
        table = {
            f"{DEFAULT_MODULE_ID}/{column}": values.to(device) if device is not None else values
            for column, values in self.table.items()
        }
        generator = torch.Generator(device=device or "cpu").manual_seed(self.seed)
        while True:
            yield draw(table, batch_size, generator)


class InMemoryOfflineData(OfflineData):
    """The training episodes of a dataset held as torch tensors, sampled uniformly.

    Plugged in with ``config.offline_data(offline_data_class=InMemoryOfflineData,
    input_read_method_kwargs=in_memory_input_kwargs(dataset_id, held_out_fraction,
    split_seed))`` (FtTPO's setup and :func:`fttpo_ray.algorithms.baselines.builtin_offline.
    configure_builtin_offline` do it). Subclasses RLlib's ``OfflineData`` (which RLlib
    requires) but replaces its Ray Data reader: ``OfflineData.__init__`` is deliberately not
    called. The algorithm sets ``learner_handles``, ``module_spec``, ``spaces`` and
    ``locality_hints`` after construction (unused here).
    """

    @override(OfflineData)
    def __init__(self, config: Any) -> None:
        from ray.rllib.algorithms.cql import CQLConfig

        self.config = config
        self.dataset_id, self.held_out_fraction, self.split_seed = _read_kwargs(config)
        split = _split(self.dataset_id, self.held_out_fraction, self.split_seed)
        self.value_targets_gamma = float(config.gamma) if needs_value_targets(config) else None
        self._table, held_out = tables(split, self.value_targets_gamma)
        #: The held-out transitions (same columns), never sampled; empty without a split.
        self.held_out = held_out
        #: Sorted ids of the episodes sampled from (every algorithm of an experiment: the same).
        self.train_episode_ids = split.train_episode_ids
        self.num_rows = int(len(self._table[Columns.REWARDS]))
        self.seed = config.seed if config.seed is not None else np.random.SeedSequence().entropy
        self._generator = torch.Generator().manual_seed(int(self.seed) % (2**63))
        # RLlib 2.60's CQL hands whatever sample() returns to the learner as data iterators.
        self._always_iterators = isinstance(config, CQLConfig)
        self.iter_batches_kwargs: dict[str, Any] = {}
        self.learner_handles: list[Any] | None = None
        self.module_spec = None
        self.spaces = None
        self.locality_hints = None
        logger.info(
            "Holding %d transitions of '%s' in memory (%d more held out)",
            self.num_rows,
            self.dataset_id,
            len(self.held_out[Columns.REWARDS]),
        )

    @override(OfflineData)
    def sample(
        self, num_samples: int, num_shards: int = 1, return_iterator: bool = False, **kwargs: Any
    ) -> Any:
        """One batch of ``num_samples`` transitions drawn uniformly with replacement (the
        learner group splits it into one shard per learner, each cut into minibatches), or, with
        ``return_iterator``, one :class:`UniformSampler` per learner (each learner keeps the
        first it gets and pulls ``dataset_num_iters_per_learner`` minibatches per update)."""
        if return_iterator or self._always_iterators:
            return [
                UniformSampler(
                    self.dataset_id,
                    int(self.seed) + shard,
                    self.value_targets_gamma,
                    held_out_fraction=self.held_out_fraction,
                    split_seed=self.split_seed,
                )
                for shard in range(max(1, num_shards))
            ]
        batch = SampleBatch(draw(self._table, num_samples, self._generator))
        return MultiAgentBatch({DEFAULT_MODULE_ID: batch}, env_steps=num_samples)
