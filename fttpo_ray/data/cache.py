"""The on-disk cache of what we derive from a dataset (transition arrays, the Parquet export).

Entries live in ``<dataset dir>/fttpo_cache/<kind>-<key>/``, a sibling of Minari's ``data/``
and invisible to Minari. ``<key>`` (:func:`fingerprint`) hashes the relative path, size and
mtime of every file under ``data/`` and ``CACHE_VERSION``, so a rewritten or damaged dataset is
converted again and an unchanged one is not. An entry appears atomically (written into a hidden
staging directory, then renamed), and writing one removes the older entries of its kind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fttpo_ray.data.minari_files import (
    MINARI_DATA_DIR,
    dataset_path,
    make_staging_dir,
    read_metadata,
)
from fttpo_ray.errors import first_line

logger = logging.getLogger(__name__)

#: Directory next to Minari's ``data/`` with our cache entries.
CACHE_DIR_NAME = "fttpo_cache"
#: Bump when cached entries change meaning; old caches are then rebuilt.
CACHE_VERSION = 1


def files_fingerprint(data_path: Path) -> str:
    """Hash of (relative path, size, mtime) of every file under ``data_path`` and CACHE_VERSION."""
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
    return files_fingerprint(dataset_path(dataset_id) / MINARI_DATA_DIR)


def entry_path(dataset_dir: Path, kind: str, key: str) -> Path:
    """The directory of the ``kind`` entry with cache key ``key`` of the dataset in
    ``dataset_dir``."""
    return dataset_dir / CACHE_DIR_NAME / f"{kind}-{key}"


def write_entry(dataset_dir: Path, kind: str, key: str, fill: Callable[[Path], None]) -> Path:
    """Create the entry ``entry_path(dataset_dir, kind, key)`` atomically and return it: ``fill``
    writes the files into a staging directory, which is renamed to the entry; then the other
    ``kind`` entries go.

    An entry that a concurrent writer renamed into place first is kept. Raises ``OSError`` when
    the cache cannot be written.
    """
    entry = entry_path(dataset_dir, kind, key)
    entry.parent.mkdir(exist_ok=True)
    staging = make_staging_dir(entry.parent, f".tmp-{kind}-")
    try:
        fill(staging)
        try:
            staging.rename(entry)
        except OSError:
            if not entry.is_dir():  # not a concurrent writer's complete entry
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in entry.parent.glob(f"{kind}-*"):
        if old != entry:
            shutil.rmtree(old, ignore_errors=True)
    return entry


def read_arrays(entry: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays ``<entry>/<name>.npy`` by name; ``None`` if the entry is missing or unreadable
    (a bad cache is rebuilt, never trusted)."""
    if not entry.is_dir():
        return None
    try:
        arrays = {name: np.load(entry / f"{name}.npy", allow_pickle=False) for name in names}
    except Exception as err:  # noqa: BLE001 - a bad cache is rebuilt, never trusted
        logger.warning("Ignoring unreadable cache %s (%s)", entry, first_line(err))
        return None
    logger.debug("Cache hit %s", entry)
    return arrays


def write_arrays(dataset_dir: Path, kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    """The arrays as one ``.npy`` each (they read several times faster than an ``.npz``) in a new
    entry (:func:`write_entry`); a cache that cannot be written is logged and skipped."""

    def fill(staging: Path) -> None:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array, allow_pickle=False)

    try:
        write_entry(dataset_dir, kind, key, fill)
    except OSError as err:
        logger.warning(
            "Could not write the %s cache of %s (%s)", kind, dataset_dir, first_line(err)
        )
