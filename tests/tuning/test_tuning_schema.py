"""The YAML's schedulers, search algorithms and environment axis: what validates, and the one-line
errors (key path, bad value, valid values) for what does not — before anything starts (no Ray)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning.schema import load_experiment
from fttpo_ray.tuning.space import SeedRepeater, dataset_label, tune_num_samples
from fttpo_ray.tuning.sweep import interrupted

REPO = Path(__file__).resolve().parents[2]
TREATMENT = {"env": "fttpo/TreatmentSim-v0", "id": "fttpo/treatment/random-v0"}
LETHAL = {"env": "fttpo/TreatmentSimLethal-v0", "id": "fttpo/treatment-lethal/random-v0"}
METRIC = "evaluation/thin/episode_return_mean"

BASE = {
    "dataset": TREATMENT,
    "evaluation": {"episodes": 2},
    "runs": [
        {
            "algorithm": "FtTPO",
            "config": {"actor_lr": 3e-4, "fat_q": 2.0, "kl_weight": 0.1, "thin_q": 0.0},
            "name": "fttpo",
            "search": {"fat_q": {"uniform": [1.0, 2.5]}, "thin_q": {"uniform": [-1.0, 0.5]}},
        }
    ],
    "seeds": [0, 1],
    "stop": {"iterations": 4},
}


def experiment(tmp_path: Path, **changes: Any) -> Path:
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_asha_with_metric_and_mode(tmp_path: Path) -> None:
    spec = load_experiment(
        experiment(
            tmp_path,
            metric=METRIC,
            mode="max",
            scheduler={"grace_period": 2, "name": "asha", "reduction_factor": 3},
        )
    )
    assert (spec.metric, spec.mode) == (METRIC, "max")
    assert spec.scheduler.name == "asha"
    assert (spec.scheduler.grace_period, spec.scheduler.reduction_factor) == (2, 3.0)
    assert spec.scheduler.max_t is None  # stop.iterations at run time


def test_pbt_with_mutations_and_checkpoints(tmp_path: Path) -> None:
    spec = load_experiment(
        experiment(
            tmp_path,
            checkpoint={"frequency": 1},
            metric=METRIC,
            mode="max",
            scheduler={
                "hyperparam_mutations": {
                    "actor_lr": {"loguniform": [1e-4, 1e-3]},
                    "kl_weight": {"loguniform": [0.01, 1.0]},
                },
                "name": "pbt",
                "perturbation_interval": 2,
            },
        )
    )
    mutations = spec.scheduler.hyperparam_mutations
    assert mutations["kl_weight"].kind == "loguniform"
    assert mutations["actor_lr"].values == (1e-4, 1e-3)
    assert spec.scheduler.perturbation_interval == 2


def test_optuna_runs_each_proposal_once_per_seed(tmp_path: Path) -> None:
    spec = load_experiment(
        experiment(
            tmp_path, metric=METRIC, mode="max", num_samples=6, search_alg={"name": "optuna"}
        )
    )
    assert spec.search_alg.name == "optuna"
    assert tune_num_samples(spec) == 12


def test_seed_repeater_gives_each_repeat_its_seed() -> None:
    class Fixed:
        metric, mode = METRIC, "max"

        def suggest(self, trial_id: str) -> dict:
            return {"kl_weight": float(trial_id)}

    repeater = SeedRepeater(Fixed(), seeds=(7, 11))
    configs = [repeater.suggest(str(i)) for i in range(4)]
    assert configs == [
        {"kl_weight": 0.0, "seed": 7},
        {"kl_weight": 0.0, "seed": 11},
        {"kl_weight": 2.0, "seed": 7},
        {"kl_weight": 2.0, "seed": 11},
    ]


def test_a_list_of_datasets_is_an_environment_axis(tmp_path: Path) -> None:
    spec = load_experiment(experiment(tmp_path, dataset=[TREATMENT, LETHAL]))
    assert [d.id for d in spec.datasets] == [TREATMENT["id"], LETHAL["id"]]
    assert [d.env for d in spec.datasets] == [TREATMENT["env"], LETHAL["env"]]
    assert spec.dataset == spec.datasets[0]
    assert dataset_label(LETHAL["id"]) == "fttpo_treatment-lethal_random-v0"
    single = load_experiment(experiment(tmp_path))
    assert single.datasets == (single.dataset,)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"metric": METRIC, "mode": "max", "scheduler": {"name": "median"}},
            "`scheduler.name` must be one of asha, hyperband, pbt; got 'median'",
        ),
        (
            {"metric": METRIC, "mode": "max", "search_alg": {"name": "hyperopt"}},
            "`search_alg.name` must be one of optuna; got 'hyperopt'",
        ),
        (
            {
                "metric": METRIC,
                "mode": "max",
                "scheduler": {
                    "hyperparam_mutations": {"kl_weight": {"loguniform": [0.01, 1.0]}},
                    "name": "pbt",
                },
            },
            "`checkpoint.frequency` must be >= 1 with `scheduler` pbt",
        ),
        (
            {
                "checkpoint": {"frequency": 1},
                "metric": METRIC,
                "mode": "max",
                "scheduler": {"name": "hyperband"},
            },
            None,
        ),
        (
            {"metric": METRIC, "mode": "max", "scheduler": {"name": "hyperband"}},
            "`checkpoint.frequency` must be >= 1 with `scheduler` hyperband",
        ),
        (
            {
                "checkpoint": {"frequency": 1},
                "metric": METRIC,
                "mode": "max",
                "scheduler": {"name": "pbt"},
            },
            "`scheduler.hyperparam_mutations` is missing (required by pbt)",
        ),
        (
            {
                "checkpoint": {"frequency": 1},
                "metric": METRIC,
                "mode": "max",
                "scheduler": {
                    "hyperparam_mutations": {"gama": {"uniform": [0.9, 0.99]}},
                    "name": "pbt",
                },
            },
            "`scheduler.hyperparam_mutations.gama` is not a config field of `runs[0]` (FtTPO) "
            "(did you mean `gamma`?)",
        ),
        (
            {"metric": METRIC, "mode": "max", "scheduler": {"name": "asha", "quantile": 1}},
            "`scheduler.quantile` is not a known key; allowed here: brackets, grace_period",
        ),
        (
            {"mode": "max", "scheduler": {"name": "asha"}},
            "`metric` is missing: `scheduler` needs it",
        ),
        (
            {"metric": METRIC, "mode": "up", "scheduler": {"name": "asha"}},
            "`mode` must be one of max, min; got 'up'",
        ),
        (
            {"metric": "return", "mode": "max", "scheduler": {"name": "asha"}},
            "`metric` must be a metric of docs/metrics.md",
        ),
        (
            {
                "evaluation": {"episodes": 2, "interval": 2},
                "metric": METRIC,
                "mode": "max",
                "scheduler": {"name": "asha"},
            },
            "`evaluation.interval` must be 1 when `scheduler`",
        ),
        (
            {"metric": METRIC, "mode": "max", "scheduler": {"name": "asha", "reduction_factor": 1}},
            "`scheduler.reduction_factor` must be > 1; got 1.0",
        ),
        (
            {
                "metric": METRIC,
                "mode": "max",
                "runs": [
                    {
                        **BASE["runs"][0],
                        "search": {"fat_q": {"grid_search": [1.0, 2.0]}},
                    }
                ],
                "search_alg": {"name": "optuna"},
            },
            "`runs[0].search.fat_q.grid_search` cannot be used with `search_alg` optuna",
        ),
        (
            {
                "checkpoint": {"frequency": 1},
                "metric": METRIC,
                "mode": "max",
                "scheduler": {
                    "hyperparam_mutations": {"kl_weight": {"uniform": [0.01, 1.0]}},
                    "name": "pbt",
                },
                "search_alg": {"name": "optuna"},
            },
            "`search_alg` cannot be combined with `scheduler` pbt",
        ),
        ({"dataset": []}, "`dataset` must be a dataset block or a non-empty list"),
        ({"dataset": [TREATMENT, TREATMENT]}, "`dataset[1].id` repeats dataset"),
        ({"dataset": [TREATMENT, {"env": "x"}]}, "`dataset[1].id` is missing (required)"),
    ],
)
def test_bad_tuning_settings_are_one_line_errors(
    tmp_path: Path, changes: dict, expected: str | None
) -> None:
    path = experiment(tmp_path, **changes)
    if expected is None:
        load_experiment(path)
    else:
        assert expected in error(path)


def test_shipped_asha_search_has_continuous_q_and_temperature() -> None:
    spec = load_experiment(REPO / "tune_configs" / "treatment_q_asha.yaml")
    assert (spec.scheduler.name, spec.metric, spec.mode) == ("asha", METRIC, "max")
    search = spec.runs[0].search
    assert {key: search[key].kind for key in ("fat_q", "thin_q", "kl_weight")} == {
        "fat_q": "uniform",
        "thin_q": "uniform",
        "kl_weight": "loguniform",
    }
    assert spec.evaluation.interval == 1


def test_shipped_environment_sweep_lists_the_treatment_environments() -> None:
    spec = load_experiment(REPO / "tune_configs" / "q_sweep_across_envs.yaml")
    envs = [d.env for d in spec.datasets]
    assert envs[:2] == [TREATMENT["env"], LETHAL["env"]]
    assert [d.id for d in spec.datasets[:2]] == [TREATMENT["id"], LETHAL["id"]]
    halfcheetah = spec.datasets[2]
    assert halfcheetah.parts == (
        "fttpo/halfcheetah/medium-sac-v0",
        "fttpo/halfcheetah/expert-sac-v0",
    )


def test_a_thin_metric_is_an_error_for_rllib_algorithms(tmp_path: Path) -> None:
    iql = {"algorithm": "IQL", "config": {"beta": 0.1}, "name": "iql"}
    path = experiment(tmp_path, metric=METRIC, mode="max", runs=[iql], scheduler={"name": "asha"})
    assert "`metric` is not in the results of `runs[0]` (IQL" in error(path)
    fat = experiment(
        tmp_path,
        metric="evaluation/fat/episode_return_mean",
        mode="max",
        runs=[iql],
        scheduler={"name": "asha"},
    )
    assert load_experiment(fat).metric == "evaluation/fat/episode_return_mean"


class Grid(list):
    """A finished ``Tuner.fit``'s results as :func:`interrupted` reads them."""

    def __init__(self, metrics: list[dict], num_errors: int = 0) -> None:
        super().__init__(type("Result", (), {"metrics": m})() for m in metrics)
        self.num_errors = num_errors


def test_trials_a_scheduler_stopped_are_not_an_interruption() -> None:
    finished = {"trial_id": "a", "training_iteration": 4}
    stopped_running = {"trial_id": "b", "training_iteration": 1, "done": True}
    stopped_paused = {"trial_id": "c", "training_iteration": 2}
    assert not interrupted(Grid([finished, stopped_running, stopped_paused]), 4, None, {"c"})
    # the same paused trial, not completed by Tune: the sweep was interrupted
    assert interrupted(Grid([finished, stopped_running, stopped_paused]), 4, None, set())
    # a trial that failed is short but counted as an error, not an interruption
    assert not interrupted(Grid([finished, {"trial_id": "d"}], num_errors=1), 4, None)
