"""Minari dataset -> flat transition arrays (RLlib column names), cached.

:func:`load_transitions` turns a local Minari dataset into one :class:`Transitions` table:
float32 arrays ``obs (N, obs_dim)``, ``actions (N, act_dim)``, ``rewards (N,)``,
``new_obs (N, obs_dim)`` and bool ``terminateds``/``truncateds`` ``(N,)``, with
:meth:`Transitions.as_dict` keyed by ``ray.rllib.core.columns.Columns``.

- **Actions are normalised to [-1, 1]** with the dataset's action-space bounds:
  ``a_norm = 2 (a - low) / (high - low) - 1``, then clipped to [-1, 1] (round-off); dimensions
  with an infinite bound are left as they are. :meth:`Transitions.denormalize_actions` is the
  inverse. (RLlib's env runners read module outputs as normalised actions and rescale them with
  ``normalize_actions=True``, its default; the data must be on the same scale.)
- Terminations and truncations are kept apart exactly as Minari stores them: the last step of a
  time-limited episode has ``truncateds=True, terminateds=False``; ``new_obs`` is the stored next
  observation in both cases (also the final one of a truncated episode).
- ``obs_mean``/``obs_std``: per-dimension mean and standard deviation of ``obs`` over all
  transitions (the std floored at ``OBS_STD_FLOOR`` so that dividing by it is safe).

Reading is vectorised: the Arrow/Parquet file of each episode is read whole, the episodes are
concatenated and the padding row Minari appends to each episode is dropped with one mask; no
Python runs per step. The result is cached as ``<dataset dir>/fttpo_cache/transitions-<key>/*.npy``
where ``<key>`` hashes the size and mtime of every file under ``data/``, so a rewritten or
damaged dataset is converted again and an unchanged one is not. The cache directory is a sibling
of Minari's ``data/`` and invisible to Minari.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.core.columns import Columns

from fttpo_ray.errors import DatasetError

logger = logging.getLogger(__name__)

#: Directory next to Minari's ``data/`` with our caches (transitions .npz, parquet export).
CACHE_DIR_NAME = "fttpo_cache"
#: Bump when the cached arrays change meaning; old caches are then rebuilt.
CACHE_VERSION = 1
#: Floor of ``Transitions.obs_std``.
OBS_STD_FLOOR = 1e-6

#: Minari's directory and file names, metadata keys and episode columns.
MINARI_DATA_DIR = "data"
MINARI_METADATA_FILE = "metadata.json"
META_DATASET_ID = "dataset_id"
META_DATA_FORMAT = "data_format"
META_ENV_SPEC = "env_spec"
META_OBSERVATION_SPACE = "observation_space"
META_ACTION_SPACE = "action_space"
META_TOTAL_EPISODES = "total_episodes"
META_TOTAL_STEPS = "total_steps"
META_REF_MIN_SCORE = "ref_min_score"
META_REF_MAX_SCORE = "ref_max_score"
EPISODE_OBSERVATIONS = "observations"
EPISODE_ACTIONS = "actions"
EPISODE_REWARDS = "rewards"
EPISODE_TERMINATIONS = "terminations"
EPISODE_TRUNCATIONS = "truncations"
_EPISODE_COLUMNS = (
    EPISODE_OBSERVATIONS,
    EPISODE_ACTIONS,
    EPISODE_REWARDS,
    EPISODE_TERMINATIONS,
    EPISODE_TRUNCATIONS,
)
#: Minari storage formats read without Minari's per-episode decoding.
_FILE_SUFFIX = {"arrow": ".arrow", "parquet": ".parquet"}

#: Array fields of :class:`Transitions`, in cache order.
_ARRAY_FIELDS = ("obs", "actions", "rewards", "new_obs", "terminateds", "truncateds", "episode_ids")


# ---------------------------------------------------------------------------------- locating
def dataset_path(dataset_id: str) -> Path:
    """The directory of ``dataset_id`` under the Minari root (``MINARI_DATASETS_PATH``)."""
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage import get_dataset_path

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise DatasetError(
            f"dataset id {dataset_id!r} is malformed; use (namespace/)name-v<N>, e.g. "
            "'fttpo/treatment/random-v0'"
        ) from None
    return Path(get_dataset_path(dataset_id))


def dataset_exists(dataset_id: str) -> bool:
    """Whether a local dataset with this id exists (its ``data/metadata.json`` is there)."""
    return (dataset_path(dataset_id) / MINARI_DATA_DIR / MINARI_METADATA_FILE).is_file()


def read_metadata(dataset_id: str) -> dict[str, Any]:
    """The raw Minari metadata of a local dataset; :class:`DatasetError` if missing or damaged."""
    path = dataset_path(dataset_id)
    metadata_file = path / MINARI_DATA_DIR / MINARI_METADATA_FILE
    if not metadata_file.is_file():
        from minari.storage import get_dataset_path

        root = get_dataset_path()
        raise DatasetError(
            f"dataset '{dataset_id}' not found under the Minari root {root}; create it with "
            f"`fttpo collect --env ENV --episodes N --dataset-id {dataset_id}` or set "
            "MINARI_DATASETS_PATH"
        )
    try:
        metadata = json.loads(metadata_file.read_text())
        if not isinstance(metadata, dict):
            raise ValueError("not a JSON object")
        for key in (META_DATA_FORMAT, META_TOTAL_EPISODES, META_TOTAL_STEPS):
            if key not in metadata:
                raise ValueError(f"no '{key}'")
    except (OSError, ValueError) as err:
        raise DatasetError(
            f"dataset '{dataset_id}' has an unreadable {metadata_file} ({_one_line(err)}); "
            "delete the dataset and collect it again"
        ) from None
    return metadata


def dataset_spaces(
    dataset_id: str, metadata: dict[str, Any] | None = None
) -> tuple[gym.Space, gym.Space]:
    """``(observation_space, action_space)`` stored with the dataset."""
    from minari.serialization import deserialize_space

    metadata = read_metadata(dataset_id) if metadata is None else metadata
    try:
        return (
            deserialize_space(metadata[META_OBSERVATION_SPACE]),
            deserialize_space(metadata[META_ACTION_SPACE]),
        )
    except Exception as err:  # noqa: BLE001 - any failure means the metadata is damaged
        raise DatasetError(
            f"dataset '{dataset_id}' has unreadable spaces in its metadata ({_one_line(err)}); "
            "delete the dataset and collect it again"
        ) from None


def dataset_env_id(metadata: dict[str, Any]) -> str | None:
    """The gymnasium id of the environment the dataset was collected on, if recorded."""
    spec = metadata.get(META_ENV_SPEC)
    if not isinstance(spec, str):
        return None
    try:
        return json.loads(spec).get("id")
    except (ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------- transitions
@dataclass(frozen=True, eq=False)
class Transitions:
    """A dataset as flat transitions (float32 arrays; actions normalised to [-1, 1]).

    Row ``i`` is ``(obs[i], actions[i], rewards[i], new_obs[i], terminateds[i], truncateds[i])``
    of episode ``episode_ids[i]`` (0-based, in dataset order).
    """

    dataset_id: str
    #: Directory of the dataset (``<Minari root>/<dataset_id>``).
    path: str
    #: Gymnasium id of the collecting environment (``None`` if the dataset does not record it).
    env_id: str | None
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    new_obs: np.ndarray
    terminateds: np.ndarray
    truncateds: np.ndarray
    episode_ids: np.ndarray
    #: Number of episodes.
    episodes: int
    #: The dataset's action-space bounds (float32, shape ``(act_dim,)``).
    action_low: np.ndarray
    action_high: np.ndarray
    obs_mean: np.ndarray
    obs_std: np.ndarray
    #: Minari reference returns (random / expert), ``None`` if the dataset has none.
    ref_min_score: float | None
    ref_max_score: float | None

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def as_dict(self) -> dict[str, np.ndarray]:
        """The six columns under RLlib's names (``Columns.OBS`` ... ``Columns.TRUNCATEDS``)."""
        return {
            Columns.OBS: self.obs,
            Columns.ACTIONS: self.actions,
            Columns.REWARDS: self.rewards,
            Columns.NEXT_OBS: self.new_obs,
            Columns.TERMINATEDS: self.terminateds,
            Columns.TRUNCATEDS: self.truncateds,
        }

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Environment actions -> [-1, 1] (as the stored ``actions``)."""
        return normalize_actions(actions, self.action_low, self.action_high)

    def denormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions in [-1, 1] -> the environment's action bounds (inverse)."""
        return denormalize_actions(actions, self.action_low, self.action_high)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, shape ``(episodes,)`` (float64)."""
        return np.bincount(
            self.episode_ids, weights=self.rewards.astype(np.float64), minlength=self.episodes
        )

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray:
        """``(return - ref_min) / (ref_max - ref_min)`` (Minari/D4RL); needs both references."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise DatasetError(
                f"dataset '{self.dataset_id}' has no reference scores; collect it with a "
                "reference policy (fttpo collect --reference-policy ...)"
            )
        return (np.asarray(returns, np.float64) - self.ref_min_score) / (
            self.ref_max_score - self.ref_min_score
        )


def normalize_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``2 (a - low) / (high - low) - 1`` clipped to [-1, 1] where both bounds are finite."""
    a = np.asarray(actions, dtype=np.float64)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    finite = np.isfinite(low) & np.isfinite(high) & (high > low)
    span = np.where(finite, high - low, 2.0)
    scaled = np.clip(2.0 * (a - np.where(finite, low, 0.0)) / span - 1.0, -1.0, 1.0)
    return np.where(finite, scaled, a).astype(np.float32)


def denormalize_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``low + (a + 1) (high - low) / 2`` where both bounds are finite (inverse of normalising)."""
    a = np.asarray(actions, dtype=np.float64)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    finite = np.isfinite(low) & np.isfinite(high) & (high > low)
    scaled = np.where(finite, low, 0.0) + (a + 1.0) * np.where(finite, high - low, 2.0) / 2.0
    return np.where(finite, scaled, a).astype(np.float32)


def load_transitions(dataset_id: str, *, use_cache: bool = True) -> Transitions:
    """The local Minari dataset ``dataset_id`` as :class:`Transitions` (see the module docstring).

    Raises :class:`DatasetError` for a malformed id, a missing dataset, damaged files or spaces
    that are not flat Boxes. Within one process, unchanged files give the *same* object back
    (a small in-memory memo): treat its arrays as read-only.
    """
    metadata = read_metadata(dataset_id)
    path = dataset_path(dataset_id)
    key = _fingerprint(path / MINARI_DATA_DIR) if use_cache else None
    if key is not None:
        return _load_cached(dataset_id, str(path), key)
    return _build(dataset_id, path, metadata, key=None)


@functools.lru_cache(maxsize=2)
def _load_cached(dataset_id: str, path: str, key: str) -> Transitions:
    """In-process memo on top of the on-disk cache (same files -> same object)."""
    return _build(dataset_id, Path(path), read_metadata(dataset_id), key=key)


def _build(dataset_id: str, path: Path, metadata: dict[str, Any], key: str | None) -> Transitions:
    observation_space, action_space = dataset_spaces(dataset_id, metadata)
    for name, space in (("observation", observation_space), ("action", action_space)):
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise DatasetError(
                f"dataset '{dataset_id}' has a {name} space {space}; only flat Box spaces are "
                "supported; flatten the environment's spaces before collecting"
            )
    low = action_space.low.astype(np.float32)
    high = action_space.high.astype(np.float32)
    cache_file = path / CACHE_DIR_NAME / f"transitions-{key}" if key else None
    arrays = _read_cache(cache_file) if cache_file else None
    if arrays is None:
        start = time.perf_counter()
        arrays = _convert(
            dataset_id, path / MINARI_DATA_DIR, metadata, observation_space, action_space
        )
        arrays["actions"] = normalize_actions(arrays["actions"], low, high)
        logger.info(
            "Converted '%s' (%d transitions) in %.2f s",
            dataset_id,
            len(arrays["rewards"]),
            time.perf_counter() - start,
        )
        if cache_file is not None:
            _write_cache(cache_file, arrays)
    obs = arrays["obs"]
    obs_mean = obs.mean(axis=0, dtype=np.float64).astype(np.float32)
    obs_std = np.maximum(obs.std(axis=0, dtype=np.float64), OBS_STD_FLOOR).astype(np.float32)
    return Transitions(
        dataset_id=dataset_id,
        path=str(path),
        env_id=dataset_env_id(metadata),
        episodes=int(metadata[META_TOTAL_EPISODES]),
        action_low=low,
        action_high=high,
        obs_mean=obs_mean,
        obs_std=obs_std,
        ref_min_score=_optional_float(metadata.get(META_REF_MIN_SCORE)),
        ref_max_score=_optional_float(metadata.get(META_REF_MAX_SCORE)),
        **{name: arrays[name] for name in _ARRAY_FIELDS},
    )


def _convert(
    dataset_id: str,
    data_path: Path,
    metadata: dict[str, Any],
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Box,
) -> dict[str, np.ndarray]:
    """Episode files -> flat arrays (actions still in environment units)."""
    episodes = int(metadata[META_TOTAL_EPISODES])
    data_format = metadata[META_DATA_FORMAT]
    try:
        if data_format in _FILE_SUFFIX:
            obs, actions, rewards, terms, truncs, lengths = _read_columnar(
                data_path, episodes, _FILE_SUFFIX[data_format], observation_space, action_space
            )
        else:
            obs, actions, rewards, terms, truncs, lengths = _read_with_minari(data_path)
    except DatasetError:
        raise
    except ImportError as err:
        raise DatasetError(
            f"dataset '{dataset_id}' is stored as '{data_format}', which needs a missing package "
            f"({_one_line(err)}); install it or re-collect the dataset with fttpo collect"
        ) from None
    except Exception as err:  # noqa: BLE001 - pyarrow/OS errors all mean "damaged dataset"
        raise DatasetError(
            f"dataset '{dataset_id}' is damaged ({type(err).__name__}: {_one_line(err)}); delete "
            "it and collect it again (fttpo collect --overwrite ...)"
        ) from None
    if (lengths < 1).any():
        raise DatasetError(
            f"dataset '{dataset_id}' has an episode without steps; delete it and collect it again"
        )
    steps = int(lengths.sum())
    if steps != int(metadata[META_TOTAL_STEPS]) or len(lengths) != episodes:
        raise DatasetError(
            f"dataset '{dataset_id}' is damaged: its files hold {len(lengths)} episodes and "
            f"{steps} steps, its metadata says {episodes} and {metadata[META_TOTAL_STEPS]}; "
            "delete it and collect it again"
        )
    # Each episode has ``length + 1`` observation rows; the other columns are padded by one row.
    rows = lengths + 1
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    step_rows = np.repeat(starts, lengths) + _ranges(lengths)
    return {
        "obs": obs[step_rows],
        "new_obs": obs[step_rows + 1],
        "actions": actions[step_rows],
        "rewards": rewards[step_rows].astype(np.float32),
        "terminateds": terms[step_rows].astype(bool),
        "truncateds": truncs[step_rows].astype(bool),
        "episode_ids": np.repeat(np.arange(len(lengths), dtype=np.int64), lengths),
    }


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without a Python loop."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - offsets


def _read_columnar(
    data_path: Path,
    episodes: int,
    suffix: str,
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Box,
) -> tuple[np.ndarray, ...]:
    """Read Minari's per-episode Arrow IPC / Parquet files (``data/<episode>/*.arrow``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for episode in range(episodes):
        files = sorted((data_path / str(episode)).glob(f"*{suffix}"))
        if not files:
            raise DatasetError(
                f"dataset at {data_path.parent} has no data file for episode {episode}; delete it "
                "and collect it again"
            )
        for file in files:
            if suffix == ".parquet":
                table = pq.read_table(file, columns=list(_EPISODE_COLUMNS))
            else:
                reader = pa.ipc.open_file(pa.memory_map(str(file)))
                table = reader.read_all().select(list(_EPISODE_COLUMNS))
            tables.append(table)
    lengths = np.array([t.num_rows for t in tables], dtype=np.int64) - 1
    table = pa.concat_tables(tables)
    return (
        _fixed_list(table.column(EPISODE_OBSERVATIONS), observation_space.shape[0]),
        _fixed_list(table.column(EPISODE_ACTIONS), action_space.shape[0]),
        table.column(EPISODE_REWARDS).to_numpy(),
        table.column(EPISODE_TERMINATIONS).to_numpy(),
        table.column(EPISODE_TRUNCATIONS).to_numpy(),
        lengths,
    )


def _fixed_list(column: Any, width: int) -> np.ndarray:
    """A fixed-size-list column -> float32 array ``(rows, width)`` (one vectorised copy)."""
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, width)


def _read_with_minari(data_path: Path) -> tuple[np.ndarray, ...]:
    """Other storage formats (e.g. HDF5): through Minari's episode iterator, padded as Arrow."""
    import minari

    dataset = minari.MinariDataset(str(data_path))
    obs, actions, rewards, terms, truncs, lengths = [], [], [], [], [], []
    for episode in dataset.iterate_episodes():
        n = len(episode.rewards)
        pad = ((0, 1), (0, 0))
        obs.append(np.asarray(episode.observations, np.float32).reshape(n + 1, -1))
        actions.append(np.pad(np.asarray(episode.actions, np.float32).reshape(n, -1), pad))
        rewards.append(np.pad(np.asarray(episode.rewards, np.float64), (0, 1)))
        terms.append(np.pad(np.asarray(episode.terminations, bool), (0, 1)))
        truncs.append(np.pad(np.asarray(episode.truncations, bool), (0, 1)))
        lengths.append(n)
    return (
        np.concatenate(obs),
        np.concatenate(actions),
        np.concatenate(rewards),
        np.concatenate(terms),
        np.concatenate(truncs),
        np.array(lengths, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------- cache
def _fingerprint(data_path: Path) -> str:
    """Hash of (relative path, size, mtime) of every file under ``data/`` plus CACHE_VERSION."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}:{data_path.resolve()}".encode())
    entries = []
    for directory, _, files in os.walk(data_path):
        for name in files:
            stat = os.stat(os.path.join(directory, name))
            rel = os.path.relpath(os.path.join(directory, name), data_path)
            entries.append(f"{rel}:{stat.st_size}:{stat.st_mtime_ns}")
    digest.update("\n".join(sorted(entries)).encode())
    return digest.hexdigest()[:16]


def fingerprint(dataset_id: str) -> str:
    """The cache key of a dataset's current files (changes whenever a data file changes)."""
    read_metadata(dataset_id)
    return _fingerprint(dataset_path(dataset_id) / MINARI_DATA_DIR)


def _read_cache(cache_dir: Path) -> dict[str, np.ndarray] | None:
    if not cache_dir.is_dir():
        return None
    try:
        arrays = {
            name: np.load(cache_dir / f"{name}.npy", allow_pickle=False) for name in _ARRAY_FIELDS
        }
    except Exception as err:  # noqa: BLE001 - a bad cache is rebuilt, never trusted
        logger.warning("Ignoring unreadable cache %s (%s)", cache_dir, _one_line(err))
        return None
    logger.debug("Cache hit %s", cache_dir)
    return arrays


def _write_cache(cache_dir: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic write (one ``.npy`` per array in a temp directory, then rename); older caches of
    the dataset are removed. Plain ``.npy`` files read several times faster than an ``.npz``."""
    try:
        cache_dir.parent.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_dir.parent, prefix=".tmp-transitions-"))
        try:
            for name in _ARRAY_FIELDS:
                np.save(staging / f"{name}.npy", arrays[name], allow_pickle=False)
            staging.rename(cache_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for old in cache_dir.parent.glob("transitions-*"):
            if old != cache_dir:
                shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        logger.warning("Could not write the transitions cache %s (%s)", cache_dir, _one_line(err))


# ---------------------------------------------------------------------------------- compatibility
def check_compatible(dataset_id: str, env_id: str) -> None:
    """Raise :class:`DatasetError` unless the env's spaces have the dataset's shapes and bounds.

    Dtypes are not compared (transitions are float32 whatever the env's dtype).
    """
    from fttpo_ray.data.envs import make_env

    dataset_obs, dataset_act = dataset_spaces(dataset_id)
    env = make_env(env_id)
    try:
        pairs = (
            ("observation", dataset_obs, env.observation_space),
            ("action", dataset_act, env.action_space),
        )
        for name, ours, theirs in pairs:
            if not _same_box(ours, theirs):
                raise DatasetError(
                    f"dataset '{dataset_id}' has {name} space {ours} but env '{env_id}' has "
                    f"{theirs}; use a dataset collected on '{env_id}' or that dataset's env "
                    f"('{dataset_env_id(read_metadata(dataset_id))}')"
                )
    finally:
        env.close()


def _same_box(a: gym.Space, b: gym.Space) -> bool:
    if not (isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box)):
        return a == b
    return (
        a.shape == b.shape
        and np.array_equal(a.low.astype(np.float64), b.low.astype(np.float64))
        and np.array_equal(a.high.astype(np.float64), b.high.astype(np.float64))
    )


# ---------------------------------------------------------------------------------- helpers
def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


__all__ = [
    "CACHE_DIR_NAME",
    "Transitions",
    "check_compatible",
    "dataset_exists",
    "dataset_path",
    "dataset_spaces",
    "denormalize_actions",
    "fingerprint",
    "load_transitions",
    "normalize_actions",
    "read_metadata",
]
