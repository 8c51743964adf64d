"""Experiment YAML validation: every shipped YAML is valid and sorted; bad input is a
ConfigError naming the key and the file (exact-behaviour tests, no Ray started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning.schema import apply_overrides, load_experiment, read_yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "tune_configs").glob("*.yaml"))

VALID = {
    "dataset": {"id": "fttpo/treatment/random-v0"},
    "evaluation": {"episodes": 2},
    "runs": [
        {
            "algorithm": "FtTPO",
            "config": {"fat_q": 2.0, "kl_weight": 0.1, "thin_q": 0.0},
            "name": "fttpo",
            "search": {"kl_weight": {"grid_search": [0.1, 1.0]}},
        }
    ],
    "seeds": [0, 1],
    "stop": {"iterations": 2},
}


def write(tmp_path: Path, data: Any, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def with_change(path: tuple, value: Any) -> dict:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def keys_in_file_order(node: yaml.Node, where: str = "") -> list[str]:
    """Paths of mappings whose keys are not sorted (``search`` blocks included)."""
    bad = []
    if isinstance(node, yaml.MappingNode):
        keys = [k.value for k, _ in node.value]
        if keys != sorted(keys):
            bad.append(where or "<top>")
        for key, value in node.value:
            bad += keys_in_file_order(value, f"{where}.{key.value}" if where else key.value)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            bad += keys_in_file_order(item, f"{where}[{i}]")
    return bad


def test_there_are_the_three_experiment_files() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"quickstart", "treatment_q_sweep", "mujoco_halfcheetah"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_yaml_validates_with_sorted_keys(path: Path) -> None:
    spec = load_experiment(path)
    assert spec.name == path.stem
    assert keys_in_file_order(yaml.compose(path.read_text())) == []


def test_treatment_q_sweep_is_the_documented_grid() -> None:
    spec = load_experiment(REPO / "tune_configs" / "treatment_q_sweep.yaml")
    search = spec.runs[0].search
    assert search["fat_q"].values == (1.0, 1.5, 2.0, 2.5)
    assert search["thin_q"].values == (-1.0, 0.0, 0.5)
    assert search["kl_weight"].values == (0.01, 0.1, 1.0)
    assert len(spec.seeds) == 5


def test_quickstart_has_fttpo_its_baselines_iql_and_cql_with_equal_budgets() -> None:
    spec = load_experiment(REPO / "tune_configs" / "quickstart.yaml")
    assert spec.runs[0].search["variant"].values == ("fttpo", "rar", "reverse_kl")
    assert spec.run("tawac").config["variant"] == "fat_only"
    assert spec.run("tawac").config["fat_q"] == 1.0
    assert spec.run("iql").algorithm == "IQL"
    assert spec.run("cql").algorithm == "CQL"
    steps = spec.run("fttpo").config["num_gradient_steps_per_iteration"]
    for name in ("iql", "cql"):
        assert spec.run(name).config["dataset_num_iters_per_learner"] == steps
    assert spec.seeds == (0, 1)


def test_scientific_notation_is_a_float(tmp_path: Path) -> None:
    text = yaml.safe_dump(VALID).replace("kl_weight: 0.1\n", "kl_weight: 1e-1\n", 1)
    spec = load_experiment(write(tmp_path, text))
    assert spec.runs[0].config["kl_weight"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("change", "value", "expected"),
    [
        (("colour",), "red", "`colour` is not a known key"),
        (
            ("runs", 0, "config", "fat_qq"),
            2.0,
            "`runs[0].config.fat_qq` is not a config field of FtTPO (did you mean `fat_q`",
        ),
        (
            ("runs", 0, "config", "fat_q"),
            "high",
            "`runs[0].config.fat_q` must be a number; got 'high'",
        ),
        (
            ("runs", 0, "config", "thin_support_in_box"),
            1,
            "`runs[0].config.thin_support_in_box` must be true or false",
        ),
        (("runs", 0, "config", "seed"), 3, "`runs[0].config.seed` is set by `seeds`"),
        (("runs", 0, "algorithm"), "NoSuchAlgo", "unknown algorithm 'NoSuchAlgo'"),
        (
            ("runs", 0, "search", "kl_weight"),
            {"normal": [0, 1]},
            "`runs[0].search.kl_weight` must be one of",
        ),
        (("runs", 0, "search", "kl_weight"), {"loguniform": [0.0, 1.0]}, "needs low > 0"),
        (
            ("runs", 0, "search", "gama"),
            {"grid_search": [0.9]},
            "`runs[0].search.gama` is not a config field of FtTPO (did you mean `gamma`?)",
        ),
        (
            ("runs", 0, "search", "kl_weight"),
            {"grid_search": [0.1, "high"]},
            "`runs[0].search.kl_weight.grid_search[1]` must be a number; got 'high' (str)",
        ),
        (("seeds",), [0, 0], "`seeds` has repeated seeds"),
        (("seeds",), "0", "`seeds` must be a non-empty list of integers"),
        (("stop", "iterations"), 0, "`stop.iterations` must be >= 1; got 0"),
        (("evaluation", "episodes"), 2.5, "`evaluation.episodes` must be an integer"),
        (("runs", 0, "name"), "a b", "may use only letters"),
        (
            ("dataset", "held_out_fraction"),
            1.0,
            "`dataset.held_out_fraction` must be in [0, 1); got 1.0",
        ),
        (("dataset", "split_seed"), -1, "`dataset.split_seed` must be >= 0; got -1"),
        (
            ("runs", 0, "config", "held_out_fraction"),
            0.1,
            "`runs[0].config.held_out_fraction` is set by `dataset.held_out_fraction`; remove it",
        ),
        (("dataset", "size"), 3, "`dataset.size` is not a known key; allowed here: env, episodes"),
        (
            ("defaults",),
            {"IQL": {"beta": 0.5}},
            "`defaults.IQL` is not the algorithm of any run; the runs' algorithms are: FtTPO",
        ),
        (
            ("defaults",),
            {"FtTPO": {"gama": 0.5}},
            "`defaults.FtTPO.gama` is not a config field of FtTPO (did you mean `gamma`?)",
        ),
    ],
)
def test_bad_values_name_the_key_and_the_file(
    tmp_path: Path, change: tuple, value: Any, expected: str
) -> None:
    path = write(tmp_path, with_change(change, value))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_dataset_split_and_defaults_block(tmp_path: Path) -> None:
    spec = load_experiment(write(tmp_path, VALID))
    assert (spec.dataset.held_out_fraction, spec.dataset.split_seed) == (0.2, 0)
    data = with_change(("dataset",), {"held_out_fraction": 0.0, "id": "x/y-v0", "split_seed": 3})
    data["defaults"] = {"FtTPO": {"gamma": 0.9, "kl_weight": 1.0}}
    spec = load_experiment(write(tmp_path, data))
    assert (spec.dataset.held_out_fraction, spec.dataset.split_seed) == (0.0, 3)
    # The run's own config wins over the shared block; the rest of the block is added.
    assert spec.runs[0].config == {"gamma": 0.9, "kl_weight": 0.1, "fat_q": 2.0, "thin_q": 0.0}


def test_missing_required_key(tmp_path: Path) -> None:
    data = dict(VALID)
    del data["stop"]
    with pytest.raises(ConfigError, match=r"`stop` is missing \(required\)"):
        load_experiment(write(tmp_path, data))


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    text = yaml.safe_dump(VALID) + "seeds: [3]\n"
    with pytest.raises(ConfigError, match="duplicate key 'seeds'"):
        load_experiment(write(tmp_path, text))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="experiment file 'no/such.yaml' not found"):
        read_yaml("no/such.yaml")


def test_overrides_set_config_and_section_keys(tmp_path: Path) -> None:
    spec = load_experiment(
        write(tmp_path, VALID), overrides=["fat_q=1.5", "stop.iterations=7", "thin_q=-1"]
    )
    assert spec.runs[0].config["fat_q"] == 1.5
    assert spec.runs[0].config["thin_q"] == -1.0
    assert spec.iterations == 7


def test_overrides_set_any_config_field_and_name_an_unknown_one(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    spec = load_experiment(path, overrides=["gamma=0.5"])  # not listed in the YAML: a field
    assert spec.runs[0].config["gamma"] == 0.5
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides=["gama=0.5"])
    assert str(info.value) == (
        f"{path}: `runs[0].config.gama` is not a config field of FtTPO (did you mean `gamma`?)"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("fat_q", "--set expects key=value"),
        ("fat_q=[1", "invalid YAML"),
    ],
)
def test_bad_overrides(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        apply_overrides(VALID, [override], source="exp.yaml")
