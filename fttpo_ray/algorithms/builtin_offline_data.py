"""RLlib's own offline algorithms (BC, MARWIL, IQL, CQL) on in-memory data: uniform minibatches.

RLlib 2.60 feeds these algorithms through Ray Data: rows are read, turned into one-step episode
objects and run through the algorithm's learner connector in pre-learner actors. That suits data
larger than memory, but on a dataset of a few million transitions or fewer it costs far more than
the gradient step (``benchmarks/throughput_builtins.py`` measures both). For such a dataset
:class:`BuiltinInMemoryOfflineData` (RLlib's ``offline_data_class`` extension point) holds the
flat transition table and hands each learner a :class:`UniformSampler`: an object with the one
method of ``ray.data.DataIterator`` that RLlib's learner calls (``iter_torch_batches``), yielding
minibatches drawn uniformly with replacement (the scheme of CORL and d3rlpy, and of FtTPO's
:class:`~fttpo_ray.algorithms.fttpo.offline_data.InMemoryOfflineData`).

What the learner connector would have added is computed here, per algorithm:

- BC, IQL, CQL: the flat columns ``obs, actions, rewards, new_obs, terminateds, truncateds``
  are all their losses read (IQL's and CQL's connectors add ``new_obs`` from the episode).
- MARWIL (``beta > 0``): ``value_targets`` = the discounted return-to-go of each transition
  within its episode, ``G_t = sum_k gamma^k r_{t+k}`` (the Monte-Carlo return of Wang et al.,
  2018, "Exponentially Weighted Imitation Learning for Batched Historical Data"); RLlib's Ray
  Data path, which sees each row as a one-step episode, bootstraps from its value function
  instead.

The sampler is pickled to each learner with only the dataset id and settings; the table is
loaded in the learner's own process on first use (``load_transitions``: the on-disk cache, or
a table handed to the process from Ray's object store).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.cql import CQLConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.offline.offline_data import OfflineData
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override

from fttpo_ray.algorithms.fttpo.offline_data import COLUMNS, check_finite
from fttpo_ray.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

#: Key of ``config.input_read_method_kwargs`` that names the Minari dataset to hold in memory.
DATASET_ID_KWARG = "fttpo_dataset_id"
#: Datasets up to this many transitions are held in memory (as FtTPO's default).
IN_MEMORY_MAX_TRANSITIONS = 20_000_000
#: ``offline_data`` setting: gradient steps (minibatches) per ``train()``.
DATASET_NUM_ITERS = "dataset_num_iters_per_learner"
#: Column of MARWIL's value targets (RLlib's name).
VALUE_TARGETS = Postprocessing.VALUE_TARGETS


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


def load_table(dataset_id: str, value_targets_gamma: float | None) -> dict[str, torch.Tensor]:
    """The dataset's flat columns as tensors (float32; bool flags), plus MARWIL's value targets
    when ``value_targets_gamma`` is given."""
    from fttpo_ray.data import load_transitions

    transitions = load_transitions(dataset_id)
    table = {column: np.asarray(transitions.as_dict()[column]) for column in COLUMNS}
    check_finite(table, dataset_id)
    if len(table[Columns.REWARDS]) == 0:
        raise DatasetError(f"dataset '{dataset_id}' holds no transitions")
    if value_targets_gamma is not None:
        table[VALUE_TARGETS] = discounted_returns_to_go(
            transitions.rewards, transitions.episode_ids, value_targets_gamma
        )
    tensors = {}
    for column, values in table.items():
        flag = column in (Columns.TERMINATEDS, Columns.TRUNCATEDS)
        tensors[column] = torch.from_numpy(values.astype(bool if flag else np.float32))
    return tensors


def draw(
    table: dict[str, torch.Tensor], size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``size`` rows of ``table`` drawn uniformly with replacement."""
    rows = len(next(iter(table.values())))
    index = torch.randint(rows, (size,), generator=generator, device=generator.device)
    return {key: values[index] for key, values in table.items()}


class UniformSampler:
    """Endless uniform minibatches of a dataset, as RLlib's learners read a Ray Data iterator.

    RLlib's ``MiniBatchRayDataIterator`` calls ``iter_torch_batches(batch_size=..., device=...,
    **iter_batches_kwargs)`` once and pulls ``dataset_num_iters_per_learner`` batches per
    update; each batch is ``{"<module id>/<column>": tensor}``. Pickles without its table.
    """

    def __init__(self, dataset_id: str, seed: int, value_targets_gamma: float | None) -> None:
        self.dataset_id = dataset_id
        self.seed = int(seed) % (2**63)
        self.value_targets_gamma = value_targets_gamma
        self._table: dict[str, torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_table": None}

    @property
    def table(self) -> dict[str, torch.Tensor]:
        if self._table is None:
            self._table = load_table(self.dataset_id, self.value_targets_gamma)
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


class BuiltinInMemoryOfflineData(OfflineData):
    """In-memory offline data for RLlib's BC, MARWIL, IQL and CQL (see the module docstring).

    Plugged in with ``config.offline_data(offline_data_class=BuiltinInMemoryOfflineData,
    input_read_method_kwargs={DATASET_ID_KWARG: dataset_id})``
    (:func:`configure_builtin_offline` does it).
    ``OfflineData.__init__`` (Ray Data's reader) is deliberately not called.
    """

    @override(OfflineData)
    def __init__(self, config: Any) -> None:
        self.config = config
        dataset_id = (config.input_read_method_kwargs or {}).get(DATASET_ID_KWARG)
        if not isinstance(dataset_id, str):
            raise ConfigError(
                f"`input_read_method_kwargs.{DATASET_ID_KWARG}` must name the Minari dataset to "
                f"hold in memory; got {dataset_id!r}"
            )
        self.dataset_id = dataset_id
        self.value_targets_gamma = float(config.gamma) if needs_value_targets(config) else None
        self.seed = config.seed if config.seed is not None else np.random.SeedSequence().entropy
        self._table = load_table(dataset_id, self.value_targets_gamma)
        self._generator = torch.Generator().manual_seed(int(self.seed) % (2**63))
        self.num_rows = len(self._table[Columns.REWARDS])
        # RLlib 2.60's CQL hands whatever sample() returns to the learner as data iterators.
        self._always_iterators = isinstance(config, CQLConfig)
        self.iter_batches_kwargs: dict[str, Any] = {}
        self.learner_handles: list[Any] | None = None
        self.module_spec = None
        self.spaces = None
        self.locality_hints = None
        logger.info("Holding %d transitions of '%s' in memory", self.num_rows, dataset_id)

    @override(OfflineData)
    def sample(
        self, num_samples: int, num_shards: int = 1, return_iterator: bool = False, **kwargs: Any
    ) -> Any:
        """One sampler per learner (``return_iterator``; each learner keeps the first it gets
        and pulls ``dataset_num_iters_per_learner`` minibatches from it per update), or one
        batch of ``num_samples`` uniformly drawn transitions."""
        if return_iterator or self._always_iterators:
            return [
                UniformSampler(self.dataset_id, int(self.seed) + shard, self.value_targets_gamma)
                for shard in range(max(1, num_shards))
            ]
        batch = SampleBatch(draw(self._table, num_samples, self._generator))
        return MultiAgentBatch({DEFAULT_MODULE_ID: batch}, env_steps=num_samples)


def use_lean_learner(config: Any) -> Any:
    """Switch an IQL or CQL config to its lean module and learner; other configs unchanged."""
    from ray.rllib.algorithms.iql import IQLConfig

    if isinstance(config, IQLConfig):
        from fttpo_ray.algorithms.lean_iql import use_lean_iql

        return use_lean_iql(config)
    if isinstance(config, CQLConfig):
        from fttpo_ray.algorithms.lean_cql import use_lean_cql

        return use_lean_cql(config)
    return config


def configure_builtin_offline(
    config: Any,
    dataset_id: str,
    *,
    in_memory: bool | None = None,
    max_transitions: int = IN_MEMORY_MAX_TRANSITIONS,
    lean: bool = True,
    **overrides: Any,
) -> Any:
    """Point an RLlib BC/MARWIL/IQL/CQL config at ``dataset_id``; returns ``config``.

    In memory (:class:`BuiltinInMemoryOfflineData`) when the dataset has at most
    ``max_transitions`` transitions (or ``in_memory`` says so), else RLlib's Ray Data path
    (:func:`fttpo_ray.data.configure_rllib_offline`). ``overrides`` are ``offline_data``
    settings; in memory only ``dataset_num_iters_per_learner`` (gradient steps per
    ``train()``, default 1) matters, the Ray Data ones are kept for the other path.

    With ``lean`` (the default), IQL trains with :func:`fttpo_ray.algorithms.lean_iql.
    use_lean_iql` and CQL with :func:`fttpo_ray.algorithms.lean_cql.use_lean_cql` on either
    path: RLlib's losses, the papers' concatenated critics, target networks moved after every
    gradient step; ``lean=False`` keeps RLlib's own module and learner.
    """
    from fttpo_ray.data import configure_rllib_offline, dataset_spaces, load_transitions

    if lean:
        use_lean_learner(config)

    transitions = load_transitions(dataset_id)
    if in_memory is None:
        in_memory = len(transitions) <= max_transitions
    if not in_memory:
        return configure_rllib_offline(config, dataset_id, **overrides)
    observation_space, action_space = dataset_spaces(dataset_id)
    config.environment(
        env=transitions.env_id, observation_space=observation_space, action_space=action_space
    )
    steps = overrides.pop(DATASET_NUM_ITERS, None) or config.dataset_num_iters_per_learner or 1
    config.offline_data(
        **overrides,
        input_=[transitions.path],
        offline_data_class=BuiltinInMemoryOfflineData,
        input_read_method_kwargs={DATASET_ID_KWARG: dataset_id},
        dataset_num_iters_per_learner=int(steps),
    )
    return config
