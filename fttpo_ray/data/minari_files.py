"""Where a local Minari dataset lives and what its files hold: path, metadata, spaces, episodes.

A dataset ``<Minari root>/<dataset_id>/`` keeps Minari's files under ``data/``:
``metadata.json`` and one directory per episode (``data/<episode>/*.arrow`` or ``*.parquet``).
Each episode file has ``length + 1`` rows: the observations column holds every observation,
the final one included; the other columns are padded by one row at the end.
:func:`read_episode_columns` reads all episodes in that layout without Minari's per-episode
decoding (Arrow IPC and Parquet) or through Minari's episode iterator (other formats).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from fttpo_ray.errors import DatasetError, first_line

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
#: Minari's per-step infos column (a struct of one field per info key; the reset's info first).
EPISODE_INFOS = "infos"
#: Similarity (``difflib`` ratio) from which an id is suggested for a missing one.
CLOSE_ID_CUTOFF = 0.8
#: Mode of a new directory before the umask: ``mkdir``'s default, so that a dataset or cache
#: entry renamed into place from a staging directory gets the permissions of any directory the
#: user creates (``tempfile.mkdtemp`` makes 0o700 ones, unreadable to others sharing the root).
DIRECTORY_MODE = 0o777
_EPISODE_COLUMNS = (
    EPISODE_OBSERVATIONS,
    EPISODE_ACTIONS,
    EPISODE_REWARDS,
    EPISODE_TERMINATIONS,
    EPISODE_TRUNCATIONS,
)
#: Minari storage formats read without Minari's per-episode decoding.
_FILE_SUFFIX = {"arrow": ".arrow", "parquet": ".parquet"}


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


#: Hex digits of :func:`content_digest` (MLflow keeps up to 36 characters of a digest).
DIGEST_CHARS = 16
_DIGEST_BLOCK = 1 << 20


def content_digest(dataset_id: str) -> str:
    """A digest of what the dataset holds: SHA-256 over the relative path and the bytes of every
    file under its ``data/`` directory, in path order (the same on every machine that holds the
    same files; any change of a file changes it)."""
    read_metadata(dataset_id)
    data_path = dataset_path(dataset_id) / MINARI_DATA_DIR
    files = sorted(
        os.path.relpath(os.path.join(directory, name), data_path)
        for directory, _, names in os.walk(data_path)
        for name in names
    )
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.replace(os.sep, "/").encode() + b"\0")
        with open(data_path / rel, "rb") as handle:
            while block := handle.read(_DIGEST_BLOCK):
                digest.update(block)
    return digest.hexdigest()[:DIGEST_CHARS]


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
            f"dataset '{dataset_id}' has an unreadable {metadata_file} ({first_line(err)}); "
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
            f"dataset '{dataset_id}' has unreadable spaces in its metadata ({first_line(err)}); "
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


def read_episode_columns(
    dataset_id: str,
    data_path: Path,
    metadata: dict[str, Any],
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Box,
) -> tuple[np.ndarray, ...]:
    """All episodes in Minari's padded layout (see the module docstring), concatenated.

    Returns ``(observations, actions, rewards, terminations, truncations, lengths)``: the five
    columns with ``sum(lengths + 1)`` rows each (actions in environment units) and the number of
    steps of each episode. Raises :class:`DatasetError` when the files are damaged, need a
    missing package, or disagree with the metadata's episode and step counts.
    """
    episodes = int(metadata[META_TOTAL_EPISODES])
    data_format = metadata[META_DATA_FORMAT]
    try:
        if data_format in _FILE_SUFFIX:
            columns = _read_columnar(
                data_path, episodes, _FILE_SUFFIX[data_format], observation_space, action_space
            )
        else:
            columns = _read_with_minari(data_path)
    except DatasetError:
        raise
    except ImportError as err:
        raise DatasetError(
            f"dataset '{dataset_id}' is stored as '{data_format}', which needs a missing package "
            f"({first_line(err)}); install it or re-collect the dataset with fttpo collect"
        ) from None
    except Exception as err:  # noqa: BLE001 - pyarrow/OS errors all mean "damaged dataset"
        raise DatasetError(
            f"dataset '{dataset_id}' is damaged ({type(err).__name__}: {first_line(err)}); delete "
            "it and collect it again (fttpo collect --overwrite ...)"
        ) from None
    lengths = columns[-1]
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
    return columns


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


def read_step_infos(
    data_path: Path, metadata: dict[str, Any]
) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Minari's per-step ``infos`` of every episode, concatenated, and the episodes' step counts
    ``lengths``: each scalar info key as an array of ``sum(lengths + 1)`` rows (the reset's info,
    then one per step: the padded layout of the observations). ``None`` when the dataset stores
    no infos or is in another format than Arrow / Parquet. Nested or array-valued infos are left
    out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = _FILE_SUFFIX.get(metadata[META_DATA_FORMAT])
    if suffix is None:
        return None
    tables = []
    for episode in range(int(metadata[META_TOTAL_EPISODES])):
        for file in sorted((data_path / str(episode)).glob(f"*{suffix}")):
            if suffix == ".parquet":
                table = pq.read_table(file)
            else:
                table = pa.ipc.open_file(pa.memory_map(str(file))).read_all()
            if EPISODE_INFOS not in table.column_names:
                return None
            tables.append(table.select([EPISODE_INFOS]))
    if not tables:
        return None
    lengths = np.array([t.num_rows for t in tables], dtype=np.int64) - 1
    column = pa.concat_tables(tables).column(EPISODE_INFOS).combine_chunks()
    infos = {
        field.name: column.field(i).to_numpy(zero_copy_only=False)
        for i, field in enumerate(column.type)
        if not pa.types.is_nested(field.type)
    }
    return infos, lengths


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


def make_staging_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named, empty directory ``<parent>/<prefix><random>`` to be filled and
    renamed into place, with the mode the umask gives any new directory (:data:`DIRECTORY_MODE`
    masked)."""
    while True:
        path = parent / f"{prefix}{uuid.uuid4().hex}"
        try:
            path.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            continue
        return path


def local_dataset_ids() -> list[str]:
    """The ids of the datasets under the Minari root (sorted; staging folders, whose names
    start with a dot, are skipped)."""
    from minari.storage import get_dataset_path

    root = Path(get_dataset_path())
    ids = []
    for directory, subdirs, _ in os.walk(root):
        here = Path(directory)
        if MINARI_DATA_DIR in subdirs and (here / MINARI_DATA_DIR / MINARI_METADATA_FILE).is_file():
            ids.append(here.relative_to(root).as_posix())
            subdirs[:] = []
            continue
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    return sorted(ids)


def close_dataset_ids(
    dataset_id: str, candidates: Collection[str], *, same_version: bool = False
) -> list[str]:
    """The id of ``candidates`` closest to ``dataset_id`` if it looks like a typo of it (a list
    of at most one).

    With ``same_version`` only ids of the same namespace and version whose names are close
    count (``fttpo/treatment/randm-v0`` → ``fttpo/treatment/random-v0``, not ``...-v1``);
    otherwise whole ids are compared."""
    from minari.dataset.minari_dataset import parse_dataset_id

    others = [c for c in candidates if c != dataset_id]
    if not same_version:
        return difflib.get_close_matches(dataset_id, others, n=1, cutoff=CLOSE_ID_CUTOFF)
    namespace, name, version = parse_dataset_id(dataset_id)
    by_name = {}
    for candidate in others:
        try:
            other_namespace, other_name, other_version = parse_dataset_id(candidate)
        except (ValueError, TypeError):
            continue
        if (other_namespace, other_version) == (namespace, version):
            by_name[other_name] = candidate
    close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=CLOSE_ID_CUTOFF)
    return [by_name[other] for other in close]


def did_you_mean(ids: Sequence[str]) -> str:
    """``did you mean 'a'?`` / ``did you mean 'a' or 'b'?`` (empty for no ids)."""
    return f"did you mean {' or '.join(repr(i) for i in ids)}?" if ids else ""
