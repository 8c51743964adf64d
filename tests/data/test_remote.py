"""Minari remote ids on demand (the network download replaced at its boundary) and mixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import minari
import pytest
import yaml

from fttpo_ray.data import (
    DatasetInfo,
    collect_dataset,
    dataset_exists,
    dataset_path,
    ensure_dataset,
    ensure_mixture,
    load_transitions,
    mixture_id,
)
from fttpo_ray.data.references import (
    D4RL_REFERENCES,
    SOURCE_D4RL,
    SOURCE_DATASET,
    d4rl_references,
    dataset_references,
)
from fttpo_ray.errors import ConfigError, DatasetError
from fttpo_ray.tuning.schema import load_experiment
from tests.helpers import TREATMENT_ID

REMOTE_ID = "mujoco/test-remote/medium-v0"


def test_offline_download_fails_with_one_line_naming_id_root_and_commands(
    minari_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def offline(dataset_id: str, force_download: bool = False) -> None:
        calls.append(dataset_id)
        dataset_path(dataset_id).mkdir(parents=True)  # a half-written download
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(minari, "download_dataset", offline)
    with pytest.raises(DatasetError) as info:
        ensure_dataset(REMOTE_ID)
    message = str(info.value)
    assert "\n" not in message and calls == [REMOTE_ID]
    assert f"'{REMOTE_ID}' is not under the Minari root {minari_root}" in message
    assert "ConnectionError: [Errno -2] Name or service not known" in message
    assert f"`minari download {REMOTE_ID}`" in message
    assert f"copy its folder to {minari_root / REMOTE_ID}" in message
    assert not dataset_path(REMOTE_ID).exists()  # nothing half-written is left


def test_remote_id_is_downloaded_once_with_minaris_function(
    treatment_dataset: DatasetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def download(dataset_id: str, force_download: bool = False) -> None:
        """Stands in for the network: writes the dataset where Minari's download would."""
        calls.append(dataset_id)
        target = dataset_path(dataset_id)
        shutil.copytree(dataset_path(TREATMENT_ID) / "data", target / "data")
        metadata_file = target / "data" / "metadata.json"
        metadata = json.loads(metadata_file.read_text())
        metadata_file.write_text(json.dumps({**metadata, "dataset_id": dataset_id}))

    monkeypatch.setattr(minari, "download_dataset", download)
    downloaded = "mujoco/test-remote/expert-v0"
    info = ensure_dataset(downloaded)
    assert calls == [downloaded] and info.steps == 1200
    assert ensure_dataset(downloaded).steps == 1200 and calls == [downloaded]  # once


def test_fttpo_namespace_is_never_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minari, "download_dataset", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(DatasetError, match="made by fttpo-ray, not hosted by Minari: copy"):
        ensure_mixture(["fttpo/test/absent-v0", TREATMENT_ID])


@pytest.fixture(scope="module")
def two_parts(minari_root: Path) -> tuple[str, str]:
    ids = ("test/mix/first-v0", "test/mix/second-v0")
    for seed, dataset_id in enumerate(ids):
        collect_dataset(
            "fttpo/TreatmentSim-v0", "random", 3, dataset_id, seed=10 * seed, reference_episodes=4
        )
    return ids


def test_mixture_is_combined_once_with_the_parts_references(two_parts: tuple[str, str]) -> None:
    target = ensure_mixture(list(two_parts))
    assert target == "mixtures/test/mix/first-v0_second-v0-v0" == mixture_id(list(two_parts))
    mixed = minari.load_dataset(target)
    assert mixed.total_episodes == 6 and mixed.total_steps == 6 * 24
    assert mixed.spec.env_spec.id == "fttpo/TreatmentSim-v0"  # recover_environment works
    metadata = json.loads((dataset_path(target) / "data" / "metadata.json").read_text())
    assert metadata["combined_datasets"] == list(two_parts)
    first = load_transitions(two_parts[0])
    assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (
        first.ref_min_score,
        first.ref_max_score,
    )
    returns = load_transitions(target).episode_returns()
    expected = [*first.episode_returns(), *load_transitions(two_parts[1]).episode_returns()]
    assert returns == pytest.approx(expected, rel=1e-6)
    stamp = (dataset_path(target) / "data" / "metadata.json").stat().st_mtime_ns
    assert ensure_mixture(list(two_parts)) == target  # cached: not combined again
    assert (dataset_path(target) / "data" / "metadata.json").stat().st_mtime_ns == stamp


def test_mixture_of_different_environments_fails_and_leaves_nothing(
    two_parts: tuple[str, str],
) -> None:
    other = "test/mix/lethal-v0"
    collect_dataset("fttpo/TreatmentSimLethal-v0", "random", 2, other, reference_episodes=2)
    with pytest.raises(DatasetError, match="could not combine .* share their environment"):
        ensure_mixture([two_parts[0], other])
    assert not dataset_exists(mixture_id([two_parts[0], other]))


def test_mixture_needs_two_distinct_ids() -> None:
    with pytest.raises(DatasetError, match="at least two different dataset ids"):
        mixture_id([TREATMENT_ID, TREATMENT_ID])


def test_yaml_dataset_may_list_ids_for_a_mixture(tmp_path: Path) -> None:
    data = {
        "dataset": {"id": ["test/mix/first-v0", "test/mix/second-v0"]},
        "evaluation": {"episodes": 1},
        "runs": [{"algorithm": "FtTPO", "config": {"kl_weight": 0.1}, "name": "fttpo"}],
        "seeds": [0],
        "stop": {"iterations": 1},
    }
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_experiment(path)
    assert spec.dataset.id == "mixtures/test/mix/first-v0_second-v0-v0"
    assert spec.dataset.parts == ("test/mix/first-v0", "test/mix/second-v0")
    data["dataset"]["id"] = ["test/mix/first-v0"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"`dataset.id` must list at least two different ids"):
        load_experiment(path)


def test_references_from_the_dataset_else_d4rl(two_parts: tuple[str, str]) -> None:
    own = dataset_references(two_parts[0])
    assert own is not None and own.source == SOURCE_DATASET
    cheetah = d4rl_references("HalfCheetah-v5")
    assert (cheetah.ref_min, cheetah.ref_max) == D4RL_REFERENCES["HalfCheetah"]
    assert cheetah.source == SOURCE_D4RL
    assert cheetah.normalize(12135.0) == pytest.approx(100.0)
    assert cheetah.normalize(-280.178953) == pytest.approx(0.0)
    assert d4rl_references("Walker2d-v4").ref_max == 4592.3
    assert d4rl_references("Hopper-v5").ref_min == -20.272305
    assert d4rl_references("Pendulum-v1") is None


def test_fttpo_download_prints_paths_and_fails_in_one_line(
    treatment_dataset: DatasetInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    from fttpo_ray.cli import main

    assert main(["download", TREATMENT_ID]) == 0
    assert capsys.readouterr().out == f"{TREATMENT_ID}: {dataset_path(TREATMENT_ID)}\n"
    assert main(["download", "fttpo/test/absent-v0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fttpo download: error: dataset 'fttpo/test/absent-v0' is not under")
