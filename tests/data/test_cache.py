"""The on-disk cache: a dataset is converted once, a changed file invalidates its entry, and
entries appear atomically."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fttpo_ray.data import DatasetInfo, dataset_path, load_transitions
from fttpo_ray.data import transitions as transitions_module
from fttpo_ray.data.cache import CACHE_DIR_NAME, entry_path, write_entry
from fttpo_ray.errors import DatasetError
from tests.data.conftest import copy_dataset
from tests.helpers import TREATMENT_ID


def test_conversion_is_cached_on_disk(
    treatment_dataset: DatasetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_dataset(TREATMENT_ID, "test/cache-v0")
    first = load_transitions("test/cache-v0")
    cache_dirs = list((dataset_path("test/cache-v0") / CACHE_DIR_NAME).glob("transitions-*"))
    assert len(cache_dirs) == 1
    transitions_module._load_cached.cache_clear()

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was converted again")

    monkeypatch.setattr(transitions_module, "_convert", no_conversion)
    second = load_transitions("test/cache-v0")
    assert second is not first
    np.testing.assert_array_equal(second.obs, first.obs)
    assert load_transitions("test/cache-v0") is second  # in-process memo


def test_a_changed_data_file_invalidates_the_cache(treatment_dataset: DatasetInfo) -> None:
    path = copy_dataset(TREATMENT_ID, "test/cache-stale-v0")
    before = load_transitions("test/cache-stale-v0")
    arrow = path / "data" / "0" / "part-0.arrow"
    arrow.write_bytes(arrow.read_bytes()[:100])  # truncated file
    with pytest.raises(DatasetError, match="'test/cache-stale-v0' is damaged") as err:
        load_transitions("test/cache-stale-v0")
    assert "\n" not in str(err.value) and len(before) == 1200


def _writer(text: str) -> Callable[[Path], None]:
    def fill(staging: Path) -> None:
        (staging / "f.txt").write_text(text)

    return fill


def test_write_entry_is_atomic_and_keeps_one_entry_per_kind(tmp_path: Path) -> None:
    old = write_entry(tmp_path, "a", "k1", _writer("old"))
    other_kind = write_entry(tmp_path, "b", "k1", _writer("b"))
    new = write_entry(tmp_path, "a", "k2", _writer("new"))
    assert new == entry_path(tmp_path, "a", "k2") == tmp_path / CACHE_DIR_NAME / "a-k2"
    assert not old.exists() and (new / "f.txt").read_text() == "new"
    assert (other_kind / "f.txt").read_text() == "b"
    # An entry another writer renamed into place first is kept as it is.
    assert write_entry(tmp_path, "a", "k2", _writer("late")) == new
    assert (new / "f.txt").read_text() == "new"

    def failing(staging: Path) -> None:
        (staging / "partial").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_entry(tmp_path, "a", "k3", failing)
    assert sorted(p.name for p in (tmp_path / CACHE_DIR_NAME).iterdir()) == ["a-k2", "b-k1"]
