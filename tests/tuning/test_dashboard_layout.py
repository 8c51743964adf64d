"""The MLflow layout a person compares in the dashboard (no Ray): trial runs at the top level,
named and tagged by sweep, run, variant, report parameters and seed; params only where they
apply; the dataset as an MLflow input; the experiment marked as a model-training one; the
report reading stores of both layouts and showing ``–`` where a setting does not apply."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from fttpo_ray.data.minari_files import content_digest, dataset_path
from fttpo_ray.reporting.report import (
    compact_table,
    load_report_data,
    summary_tables,
)
from fttpo_ray.reporting.results import MISSING
from fttpo_ray.tuning import tracking as tr

EXPERIMENT = "layout"
DATASET_ID = "test/layout/tiny-v0"
RETURN = "evaluation/thin/episode_return_mean"
FAT_RETURN = "evaluation/fat/episode_return_mean"


def context(experiment_id: str = "1", sweep_run_id: str = "", **fields: object) -> tr.RunContext:
    values: dict = {
        "experiment_id": experiment_id,
        "parent_run_id": sweep_run_id,
        "run_name": "tawac",
        "algorithm": "FtTPO",
        "env": "fttpo/TreatmentSim-v0",
        "dataset_id": DATASET_ID,
        "yaml_keys": {"thin_q": "thin_q", "fat_q": "fat_q", "actor_lr": "actor_lr"},
        "searched": ("kl_weight",),
        "sweep_dir": "sweep",
    }
    values.update(fields)
    return tr.RunContext(**values)


def test_params_leave_out_what_the_variant_lacks_and_log_numbers_as_floats() -> None:
    config = {"seed": 1, "variant": "fat_only", "fat_q": 1, "thin_q": 0.0, "kl_weight": 1}
    params = tr.trial_params(context(), {**config, "actor_lr": 3e-4})
    # Tsallis-AWAC (fat_only) has no thin policy: no thin_q, although the YAML sets it.
    assert "thin_q" not in params
    assert (params["fat_q"], params["kl_weight"]) == ("1.0", "1.0")
    assert (params["variant"], params["seed"], params["actor_lr"]) == ("fat_only", "1", "0.0003")
    fttpo = tr.trial_params(context(run_name="fttpo"), {**config, "variant": "fttpo"})
    assert fttpo["thin_q"] == "0.0"


def test_run_names_read_as_run_variant_parameters_and_seed() -> None:
    config = {"seed": 1, "variant": "rar", "fat_q": 2.0, "thin_q": 0.0, "kl_weight": 0.1}
    assert (
        tr.trial_run_name(context(run_name="fttpo"), config)
        == "fttpo rar fat_q=2 thin_q=0 kl_weight=0.1 seed=1"
    )
    tawac = {**config, "variant": "fat_only", "fat_q": 1.0, "kl_weight": 0.123456789}
    assert tr.trial_run_name(context(), tawac) == "tawac fat_only fat_q=1 kl_weight=0.1235 seed=1"
    iql = context(run_name="iql", algorithm="IQL", searched=("expectile",), yaml_keys={})
    assert tr.trial_run_name(iql, {"seed": 0, "expectile": 0.8}) == "iql expectile=0.8 seed=0"


def test_runs_view_url_opens_the_training_runs_of_the_experiment() -> None:
    assert (
        tr.runs_view_url("sqlite:////tmp/mlflow.db", "7")
        == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert (
        tr.runs_view_url("http://10.0.0.2:5001/", "7")
        == "http://10.0.0.2:5001/#/experiments/7/runs?workflowType=machine_learning"
    )


def test_the_algorithms_sections_are_logged_whole() -> None:
    result = {
        "evaluation": {"thin": {"episode_return_mean": -3.0}, "env_runners": {"x": 1.0}},
        "selection": {"td_error": 0.5, "held_out_transitions": 40},
        "selected": {"iteration": 2},
        "other": {"td_error": 9.0},
    }
    assert tr.select_metrics(result) == {RETURN: -3.0}
    assert tr.select_metrics(result, ("selection", "selected")) == {
        RETURN: -3.0,
        "selection/td_error": 0.5,
        "selection/held_out_transitions": 40.0,
        "selected/iteration": 2.0,
    }


def write_dataset(files: dict[str, bytes]) -> Path:
    data = dataset_path(DATASET_ID) / "data"
    data.mkdir(parents=True, exist_ok=True)
    metadata = {"data_format": "arrow", "total_episodes": 1, "total_steps": 2}
    (data / "metadata.json").write_text(json.dumps(metadata))
    for name, content in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    return data


def test_dataset_digest_follows_the_bytes_not_the_file_times() -> None:
    data = write_dataset({"episode_0/a.arrow": b"abc"})
    first = content_digest(DATASET_ID)
    assert len(first) == 16
    (data / "episode_0/a.arrow").touch()
    assert content_digest(DATASET_ID) == first
    (data / "episode_0/a.arrow").write_bytes(b"abd")
    assert content_digest(DATASET_ID) != first


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_experiment_is_a_model_training_one(client: MlflowClient, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tr.experiment_id(client, EXPERIMENT, uri)
    tags = client.get_experiment(exp_id).tags
    assert tags[tr.EXPERIMENT_KIND_TAG] == tr.MODEL_TRAINING_KIND
    # An experiment made before is tagged when it is used again.
    old = client.create_experiment("old")
    assert tr.experiment_id(client, "old", uri) == old
    assert client.get_experiment(old).tags[tr.EXPERIMENT_KIND_TAG] == tr.MODEL_TRAINING_KIND


def test_trial_run_is_top_level_tagged_and_logs_its_dataset(
    client: MlflowClient, tmp_path: Path
) -> None:
    write_dataset({"episode_0/a.arrow": b"abc"})
    exp_id = tr.experiment_id(client, EXPERIMENT, f"sqlite:///{tmp_path / 'mlflow.db'}")
    source = tr.dataset_source(DATASET_ID)
    assert source == str(dataset_path(DATASET_ID))
    ctx = context(
        exp_id, "sweep-run", dataset_digest=content_digest(DATASET_ID), dataset_source=source
    )
    config = {"seed": 1, "variant": "fat_only", "fat_q": 1.0, "thin_q": 0.0, "kl_weight": 0.1}
    run_id = tr.create_trial_run(client, ctx, name="n", trial_id="t1", config=config)
    run = client.get_run(run_id)
    assert tr.PARENT_RUN_ID_TAG not in run.data.tags
    tags = run.data.tags
    assert (tags[tr.SWEEP_RUN_ID_TAG], tags[tr.VARIANT_TAG], tags[tr.SEED_TAG]) == (
        "sweep-run",
        "fat_only",
        "1",
    )
    assert "thin_q" not in run.data.params
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == DATASET_ID
    assert dataset_input.dataset.digest == content_digest(DATASET_ID)
    assert json.loads(dataset_input.dataset.source) == {"uri": source}
    assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "training"}
    # No dataset on disk (a plain trainable's sweep): no input, no error.
    bare = tr.create_trial_run(
        client, context(exp_id, "sweep-run"), name="m", trial_id="t2", config=config
    )
    assert not client.get_run(bare).inputs.dataset_inputs


def log_trial(
    client: MlflowClient, exp_id: str, tags: dict[str, str], params: dict[str, str], value: float
) -> None:
    run_id = client.create_run(exp_id, tags={tr.KIND_TAG: tr.KIND_TRIAL, **tags}).info.run_id
    metric = RETURN if params["variant"] != "iql" else FAT_RETURN
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in params.items()],
        metrics=[Metric(metric, value, 0, 1)],
    )
    client.set_terminated(run_id)


def test_report_reads_both_layouts_and_shows_a_dash_where_a_setting_does_not_apply(
    client: MlflowClient, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = tr.experiment_id(client, EXPERIMENT, uri)
    sweep = client.create_run(exp_id, tags={tr.KIND_TAG: tr.KIND_SWEEP}).info.run_id
    base = {"algorithm": "FtTPO", "env": "e", "dataset_id": DATASET_ID, "fat_q": "2.0"}
    fttpo = {**base, "run": "fttpo", "variant": "fttpo", "thin_q": "0.0"}
    # An old store: trials nested under the sweep run, thin_q logged on the fat_only run.
    old = {tr.PARENT_RUN_ID_TAG: sweep}
    log_trial(client, exp_id, old, {**fttpo, "seed": "0"}, -4.0)
    log_trial(client, exp_id, old, {**base, "run": "tawac", "variant": "fat_only",
                                    "thin_q": "0.0", "seed": "0"}, -5.0)  # fmt: skip
    # The new layout: top-level runs tagged with their sweep run.
    new = {tr.SWEEP_RUN_ID_TAG: sweep}
    log_trial(client, exp_id, new, {**fttpo, "seed": "1"}, -2.0)
    iql = {"algorithm": "IQL", "env": "e", "dataset_id": DATASET_ID, "run": "iql"}
    log_trial(client, exp_id, new, {**iql, "variant": "iql", "seed": "0"}, -6.0)
    # A trial of another sweep is not read.
    log_trial(client, exp_id, {tr.SWEEP_RUN_ID_TAG: "other"}, {**fttpo, "seed": "2"}, 9.0)

    data = load_report_data(EXPERIMENT, tracking_uri=uri, sweep=sweep)
    assert len(data.trials) == 4
    assert set(data.trials["parent_run_id"]) == {sweep}
    _, summary, display = summary_tables(data)
    rows = {row["variant"]: row for row in display.to_dict("records")}
    assert rows["fttpo"]["thin_q"] == "0.0"
    assert rows["fttpo"]["n"] == 2
    assert rows["fttpo"]["return (last)"] == "-3 ± 1"
    assert rows["fat_only"]["thin_q"] == MISSING
    assert rows["iql"]["thin_q"] == MISSING
    assert rows["iql"]["fat_q"] == MISSING
    fat_only = summary[summary["variant"] == "fat_only"].iloc[0]
    assert isinstance(fat_only["thin_q"], float) and math.isnan(fat_only["thin_q"])
    compact = compact_table(display, data.group_columns)
    assert list(compact[compact["variant"] == "fat_only"]["thin_q"]) == [MISSING]
