"""Locating a dataset and reading its Minari files: missing, malformed and damaged datasets are
one-line :class:`DatasetError`s."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fttpo_ray.data import DatasetInfo, load_transitions
from fttpo_ray.errors import DatasetError
from tests.data.conftest import copy_dataset
from tests.helpers import TREATMENT_ID


def test_garbage_data_file_is_a_dataset_error(treatment_dataset: DatasetInfo) -> None:
    path = copy_dataset(TREATMENT_ID, "test/garbage-v0")
    (path / "data" / "3" / "part-0.arrow").write_bytes(b"not an arrow file" * 10)
    with pytest.raises(DatasetError, match="is damaged .*collect it again"):
        load_transitions("test/garbage-v0")


def test_garbage_metadata_is_a_dataset_error(treatment_dataset: DatasetInfo) -> None:
    path = copy_dataset(TREATMENT_ID, "test/bad-metadata-v0")
    (path / "data" / "metadata.json").write_text("{ truncated")
    with pytest.raises(DatasetError, match="unreadable .*metadata.json"):
        load_transitions("test/bad-metadata-v0")


def test_missing_episode_is_a_dataset_error(treatment_dataset: DatasetInfo) -> None:
    path = copy_dataset(TREATMENT_ID, "test/missing-episode-v0")
    shutil.rmtree(path / "data" / "49")
    with pytest.raises(DatasetError, match="no data file for episode 49"):
        load_transitions("test/missing-episode-v0")


def test_unknown_and_malformed_ids(minari_root: Path) -> None:
    with pytest.raises(DatasetError, match="dataset 'test/nothing-v0' not found") as err:
        load_transitions("test/nothing-v0")
    assert "fttpo collect" in str(err.value)
    with pytest.raises(DatasetError, match="malformed"):
        load_transitions("no-version")
