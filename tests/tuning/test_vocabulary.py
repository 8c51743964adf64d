"""Report vocabularies: which algorithm's hyper-parameters identify its runs in MLflow params,
tables and heat-maps, looked up by the registered name (no Tune run, no MLflow store)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fttpo_ray import metrics as m
from fttpo_ray.algorithms.fttpo.vocabulary import REPORT_PARAMETERS, VOCABULARY
from fttpo_ray.algorithms.vocabulary import (
    NO_VOCABULARY,
    Heatmap,
    ReportParameter,
    ReportVocabulary,
)
from fttpo_ray.reporting import plots
from fttpo_ray.reporting.columns import POLICY, RETURN_LAST, VIOLATION_LAST
from fttpo_ray.reporting.report import vocabulary_keys
from fttpo_ray.tuning import trainables
from fttpo_ray.tuning.tracking import RunContext, trial_params, trial_variant
from fttpo_ray.tuning.trainables import register_report_vocabulary, report_vocabulary


def context(algorithm: str, yaml_keys: dict[str, str]) -> RunContext:
    return RunContext(
        experiment_id="1",
        parent_run_id="",
        run_name="run",
        algorithm=algorithm,
        env="fttpo/TreatmentSim-v0",
        dataset_id="fttpo/treatment/random-v0",
        yaml_keys=yaml_keys,
        searched=(),
        sweep_dir="sweep",
    )


def test_fttpo_reports_its_three_hyper_parameters_and_its_variant() -> None:
    assert VOCABULARY.keys == ("fat_q", "thin_q", "kl_weight")
    assert VOCABULARY.parameters == REPORT_PARAMETERS
    assert VOCABULARY.variant_key == "variant"
    assert VOCABULARY.heatmap is not None
    assert (VOCABULARY.heatmap.rows.key, VOCABULARY.heatmap.columns.key) == ("thin_q", "kl_weight")
    assert VOCABULARY.heatmap.policy == m.THIN


def test_lookup_by_registered_name() -> None:
    assert report_vocabulary("FtTPO") is VOCABULARY
    assert report_vocabulary("IQL") is NO_VOCABULARY
    assert report_vocabulary("no_such_trainable") is NO_VOCABULARY


def test_a_declared_vocabulary_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainables, "_DECLARED_VOCABULARIES", {})
    own = ReportVocabulary(parameters=(ReportParameter("lr", "learning rate"),))
    register_report_vocabulary("IQL", own)
    assert report_vocabulary("IQL") is own
    assert report_vocabulary("FtTPO") is VOCABULARY


def test_trial_params_log_the_vocabulary_where_the_config_has_it() -> None:
    config = {"seed": 3, "fat_q": 2.0, "thin_q": 0.0, "kl_weight": 0.1, "variant": "rar"}
    params = trial_params(context("FtTPO", {"lr": "lr"}), {**config, "lr": 1e-3})
    assert params == {
        "algorithm": "FtTPO",
        "run": "run",
        "env": "fttpo/TreatmentSim-v0",
        "dataset_id": "fttpo/treatment/random-v0",
        "seed": "3",
        "variant": "rar",
        "fat_q": "2.0",
        "thin_q": "0.0",
        "kl_weight": "0.1",
        "lr": "0.001",
    }
    # An algorithm without a vocabulary logs what the YAML sets, labelled by its name.
    iql = trial_params(context("IQL", {"expectile": "expectile"}), {**config, "expectile": 0.8})
    assert iql["variant"] == "iql"
    assert iql["expectile"] == "0.8"
    assert not {"fat_q", "thin_q", "kl_weight"} & set(iql)


def test_trial_variant_falls_back_to_the_algorithm_name() -> None:
    assert trial_variant("FtTPO", {"variant": "fat_only"}) == "fat_only"
    assert trial_variant("FtTPO", {}) == "fttpo"
    assert trial_variant("CQL", {"variant": "rar"}) == "cql"


def test_report_groups_by_the_vocabularies_of_the_trials_algorithms() -> None:
    trials = pd.DataFrame({"algorithm": ["IQL", "FtTPO", "FtTPO"]})
    assert vocabulary_keys(trials) == ["fat_q", "thin_q", "kl_weight"]
    assert vocabulary_keys(trials.iloc[:1]) == []
    assert vocabulary_keys(pd.DataFrame({"run": ["a"]})) == []


def test_heatmap_draws_the_declared_policy_per_run_and_variant(tmp_path: Path) -> None:
    x, y = ReportParameter("a", "a"), ReportParameter("b", "b")
    heatmap = Heatmap(rows=y, columns=x, panels=None, policy=m.FAT)
    values = {RETURN_LAST: 1.0, VIOLATION_LAST: 0.0}
    rows = [
        {"run": "r", "variant": "v", POLICY: policy, "a": a, "b": b, **values}
        for policy in (m.THIN, m.FAT)
        for a in (1, 2)
        for b in (1, 2)
    ]
    # A run with a single (a, b) point gets no heat-map.
    rows.append({"run": "s", "variant": "v", POLICY: m.FAT, "a": 1, "b": 1, **values})
    files = plots.heatmaps(pd.DataFrame(rows), heatmap, tmp_path)
    assert files == [tmp_path / "heatmap_r_v.png"]
    assert files[0].is_file()
