"""Dataset inputs of issue 23: a typo in a dataset id is not collected as a new dataset but
answered with "did you mean ...?" (defect 8), and what ``fttpo collect`` writes is readable by
others sharing the Minari root as the umask allows (defect 9)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fttpo_ray.data import DatasetInfo, collect_dataset, dataset_path, ensure_dataset
from fttpo_ray.data.cache import CACHE_DIR_NAME
from fttpo_ray.data.minari_files import dataset_exists
from fttpo_ray.data.remote import missing_dataset_error
from fttpo_ray.data.transitions import load_transitions
from fttpo_ray.errors import DatasetError
from tests.helpers import TREATMENT_ID

TREATMENT_ENV = "fttpo/TreatmentSim-v0"
TYPO_ID = "fttpo/treatment/randm-v0"

# ---- defect 8: a typo in a dataset id ---------------------------------------------------------


def test_typo_with_env_is_not_collected_but_named(treatment_dataset: DatasetInfo) -> None:
    """8: with ``env`` set, ``randm-v0`` next to ``random-v0`` was silently collected."""
    with pytest.raises(DatasetError) as info:
        ensure_dataset(TYPO_ID, env_id=TREATMENT_ENV, episodes=2)
    message = str(info.value)
    assert f"dataset '{TYPO_ID}' does not exist; did you mean '{TREATMENT_ID}'?" in message
    assert (
        f"run `fttpo collect --env {TREATMENT_ENV} --episodes 2 --seed 0 --dataset-id {TYPO_ID}`"
        in message
    )
    assert "\n" not in message
    assert not dataset_path(TYPO_ID).exists()


def test_typo_without_env_suggests_the_close_id(treatment_dataset: DatasetInfo) -> None:
    """8: without ``env`` the error suggested collecting instead of the id meant."""
    with pytest.raises(DatasetError) as info:
        ensure_dataset(TYPO_ID)
    assert f"did you mean '{TREATMENT_ID}'?" in str(info.value)
    assert not dataset_path(TYPO_ID).exists()
    assert f"did you mean '{TREATMENT_ID}'?" in str(missing_dataset_error(TYPO_ID))


def test_a_known_id_is_suggested_before_it_exists(minari_root: Path) -> None:
    """The ids fttpo-ray knows how to make count as candidates even before they are collected."""
    with pytest.raises(DatasetError, match="did you mean 'fttpo/treatment-lethal/random-v0'"):
        ensure_dataset("fttpo/treatment-lethal/randon-v0")


def test_a_new_id_with_env_is_collected_with_a_warning(
    treatment_dataset: DatasetInfo, caplog: pytest.LogCaptureFixture
) -> None:
    """A new version of an existing id is no typo: it is collected, announced loudly."""
    new_id = "fttpo/treatment/random-v7"
    with caplog.at_level(logging.WARNING, logger="fttpo_ray"):
        info = ensure_dataset(new_id, env_id=TREATMENT_ENV, episodes=2)
    assert info.episodes == 2 and dataset_exists(new_id)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    announced = f"Dataset '{new_id}' does not exist: collecting a NEW dataset"
    assert any(announced in w for w in warnings)


# ---- defect 9: permissions of collected datasets ----------------------------------------------


@pytest.fixture
def umask() -> Iterator[int]:
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_collected_dataset_honours_the_umask(minari_root: Path, umask: int) -> None:
    """9: datasets were written with folder mode 700 (``tempfile.mkdtemp`` staging renamed into
    place) despite umask 022: others sharing the Minari root could not read them."""
    dataset_id = "test/inputs/umask-v0"
    collect_dataset(TREATMENT_ENV, "random", 2, dataset_id, reference_policy=None)
    root = dataset_path(dataset_id)
    load_transitions(dataset_id)  # writes the dataset's cache entry
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    assert (root / CACHE_DIR_NAME).is_dir()
    assert {str(p.relative_to(root)): _mode(p) for p in folders} == {
        str(p.relative_to(root)): 0o755 for p in folders
    }
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files and all(_mode(p) & 0o044 == 0o044 for p in files)


def test_a_stricter_umask_is_honoured_too(minari_root: Path, umask: int) -> None:
    os.umask(0o027)
    dataset_id = "test/inputs/umask-027-v0"
    collect_dataset(TREATMENT_ENV, "random", 2, dataset_id, reference_policy=None)
    assert _mode(dataset_path(dataset_id)) == 0o750
