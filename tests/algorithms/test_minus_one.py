"""A field set to -1 keeps its value on every path (issue: RLlib drops values equal to -1).

RLlib 2.60's ``AlgorithmConfig.get_state()`` drops every value equal to its ``DEPRECATED_VALUE``
(-1); ``Algorithm.__init__`` and checkpoint restore rebuild the config from that state, so
``thin_q=-1`` trained (or was restored) as the default ``thin_q=0``. Checked here: the config's
state and dict round trips for every numeric field, ``build_algo()``, ``save_to_path`` /
``Algorithm.from_checkpoint``, a Tune trial and ``fttpo eval`` of its checkpoint, ``fttpo train
--set thin_q=-1``, and an invalid -1 (``kl_weight``) rejected like any other invalid value.
Real Ray, Tune, RLlib and MLflow on the tiny treatment dataset (a few gradient steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from ray.rllib.algorithms.algorithm import Algorithm

from fttpo_ray import FtTPO, FtTPOConfig
from fttpo_ray.cli import EXIT_ERROR
from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning import tracking as tr
from tests.helpers import TREATMENT_ID, run_cli, tiny_fttpo_config

REPO = Path(__file__).resolve().parents[2]
MINUS_ONE = -1
EPISODES = 5
EVALUATION_SEED = 7
THIN = "thin"
EXPERIMENT = "tiny"
STORAGE = "storage"
#: Metrics of the thin policy that depend on its q (its support and hence its samples).
THIN_METRICS = ("episode_return_mean", "violation_rate", "support_halfwidth_mean")


#: The module's FtTPO: thin_q = -1, five evaluation episodes on fixed seeds.
SETTINGS = {
    "thin_q": MINUS_ONE,
    "evaluation_duration": EPISODES,
    "evaluation_seed": EVALUATION_SEED,
}


def eval_cli(checkpoint: str) -> dict[str, dict[str, float]]:
    rc, stdout, _ = run_cli(
        ["eval", checkpoint, "--episodes", str(EPISODES), "--seed", str(EVALUATION_SEED)]
    )
    assert rc == 0
    return json.loads(stdout)


def assert_thin_q_minus_one(algo: Algorithm) -> None:
    assert algo.config.thin_q == MINUS_ONE
    assert algo.get_module().thin_q == MINUS_ONE


def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def train_args(tmp_path: Path, override: str) -> list[str]:
    """``fttpo train`` of :func:`tiny_experiment` with one ``--set`` override."""
    path = tiny_experiment(tmp_path / f"{EXPERIMENT}.yaml")
    return [
        "train",
        str(path),
        "--set",
        override,
        "--mlflow-uri",
        mlflow_uri(tmp_path),
        "--storage",
        str(tmp_path / STORAGE),
    ]


def tiny_experiment(path: Path) -> Path:
    """quickstart.yaml's ``fttpo`` run alone, shrunk to seconds."""
    data = yaml.safe_load((REPO / "tune_configs" / "quickstart.yaml").read_text())
    (run,) = [run for run in data["runs"] if run["name"] == "fttpo"]
    run.pop("search")
    run.setdefault("config", {}).update(
        num_gradient_steps_per_iteration=5,
        train_batch_size_per_learner=32,
        model_config={"fcnet_hiddens": [16, 16]},
    )
    data["runs"] = [run]
    data["seeds"] = [0]
    data["evaluation"].update(episodes=EPISODES, seed=EVALUATION_SEED)
    data["stop"]["iterations"] = 1
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


NUMERIC_FIELDS = sorted(
    name
    for name, value in vars(FtTPOConfig()).items()
    if isinstance(value, (int, float)) and not isinstance(value, bool)
)


def test_every_numeric_field_keeps_minus_one_through_state_and_dict() -> None:
    """``from_state(get_state())`` (build, checkpoint) and ``from_dict(to_dict())`` (Tune)."""
    assert {"thin_q", "kl_weight", "fat_q", "gamma", "evaluation_seed"} <= set(NUMERIC_FIELDS)
    for name in NUMERIC_FIELDS:
        config = FtTPOConfig().dataset(TREATMENT_ID)
        setattr(config, name, MINUS_ONE)
        assert getattr(FtTPOConfig.from_state(config.get_state()), name) == MINUS_ONE, name
        assert getattr(FtTPOConfig.from_dict(config.to_dict()), name) == MINUS_ONE, name


def test_an_invalid_minus_one_is_rejected(tmp_path: Path) -> None:
    message = "`kl_weight` (tau) must be > 0; got -1"
    config = tiny_fttpo_config(SETTINGS, kl_weight=MINUS_ONE)
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert message in str(info.value)
    with pytest.raises(ConfigError) as info:
        config.build_algo()
    assert message in str(info.value)

    rc, _, stderr = run_cli(train_args(tmp_path, "kl_weight=-1"))
    assert rc == EXIT_ERROR
    assert "`kl_weight` (tau) must be > 0" in stderr
    assert not list(tmp_path.glob("**/rllib_checkpoint.json"))


@pytest.mark.slow
def test_build_algo_and_checkpoint_keep_thin_q_minus_one(ray_local: None, tmp_path: Path) -> None:
    algo = tiny_fttpo_config(SETTINGS).build_algo()
    try:
        assert_thin_q_minus_one(algo)
        algo.train()
        expected = algo.evaluate()[THIN]
        checkpoint = algo.save_to_path(str(tmp_path / "checkpoint"))
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(checkpoint)
    try:
        assert isinstance(restored, FtTPO)
        assert_thin_q_minus_one(restored)
        assert {key: restored.evaluate()[THIN][key] for key in THIN_METRICS} == {
            key: expected[key] for key in THIN_METRICS
        }
    finally:
        restored.stop()


@pytest.mark.slow
def test_tune_trial_and_fttpo_eval_keep_thin_q_minus_one(ray_local: None, tmp_path: Path) -> None:
    """The sweep's path (``param_space = config.to_dict()``, thin_q in the grid), then
    ``fttpo eval`` of the trial's checkpoint reproduces the trial's last evaluation."""
    space = tiny_fttpo_config(SETTINGS, thin_q=0.0).to_dict()
    space["thin_q"] = tune.grid_search([MINUS_ONE])
    (result,) = tune.Tuner(
        "FtTPO",
        param_space=space,
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            stop={"training_iteration": 1},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
            verbose=0,
        ),
    ).fit()
    assert result.error is None
    restored = Algorithm.from_checkpoint(result.checkpoint.path)
    try:
        assert_thin_q_minus_one(restored)
    finally:
        restored.stop()
    trained = result.metrics["evaluation"][THIN]
    evaluated = eval_cli(result.checkpoint.path)[THIN]
    for key in THIN_METRICS:
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_fttpo_train_keeps_thin_q_minus_one(ray_local: None, tmp_path: Path) -> None:
    rc, _, _ = run_cli(train_args(tmp_path, "thin_q=-1"))
    assert rc == 0
    client = MlflowClient(mlflow_uri(tmp_path))
    (run,) = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string=f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRAIN}'",
    )
    assert float(run.data.params["thin_q"]) == MINUS_ONE
    (checkpoint,) = (tmp_path / STORAGE).glob(f"{EXPERIMENT}/train-*/checkpoint")
    restored = Algorithm.from_checkpoint(str(checkpoint))
    try:
        assert_thin_q_minus_one(restored)
    finally:
        restored.stop()
