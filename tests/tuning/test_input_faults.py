"""Bad inputs and faults of issue 23 that used to slip through: each ends with one line naming the
problem and the fix, a non-zero exit status, no traceback, and nothing half-written or lost.

Each test reproduces one defect of the issue's list (the number is in the test's docstring).
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from fttpo_ray.cli import EXIT_ERROR, main
from fttpo_ray.errors import ConfigError
from fttpo_ray.runs import train
from fttpo_ray.runs.evaluate import ALGORITHM_STATE_FILE
from fttpo_ray.tuning import sweep
from fttpo_ray.tuning.schema import load_experiment
from tests.helpers import small_disk
from tests.tuning.test_cli_errors import fails, tiny_yaml

#: What ``fttpo eval`` says it accepts, at the end of each of its checkpoint errors.
EVAL_ACCEPTS = "fttpo eval accepts the checkpoint of an algorithm with continuous (Box) actions"
CLASS_FILE = "class_and_ctor_args.pkl"

#: The dataset of the tests that train (``tests/tuning/test_cli_errors.py`` checks that its own
#: is never collected).
RUNNING_DATASET_ID = "test/input-faults/treatment-v0"


def running_yaml(path: Path, **changes: Any) -> Path:
    """:func:`tiny_yaml` on a dataset of its own, for the tests that train."""
    tiny_yaml(path, **changes)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["dataset"]["id"] = RUNNING_DATASET_ID
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return path


# ---- defect 12: small ones ------------------------------------------------------------------


def test_yaml_syntax_error_names_the_file_and_the_position(tmp_path: Path) -> None:
    """12: a syntax error named PyYAML's ``"<unicode string>"`` instead of the file."""
    path = tmp_path / "broken.yaml"
    path.write_text("seeds: [0, 1\nstop: {iterations: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "unicode string" not in message
    assert message.startswith(f"{path}, line 2, column 5: invalid YAML: ")
    assert "(while parsing a flow sequence that starts at line 1, column 8)" in message
    assert "\n" not in message


def test_yaml_syntax_error_of_a_set_value_names_the_option(tmp_path: Path) -> None:
    """12: the value of ``--set`` is named as its source, not ``"<unicode string>"``."""
    path = tiny_yaml(tmp_path / "tiny.yaml")
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides=["fat_q=[1"])
    assert str(info.value).startswith("--set fat_q, line 1, column 3: invalid YAML: ")


def test_missing_metric_message_is_grammatical(tmp_path: Path) -> None:
    """12: "`scheduler` need it" now reads "`scheduler` needs it"."""
    path = tiny_yaml(tmp_path / "tiny.yaml", mode="max", scheduler={"name": "asha"})
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert "`metric` is missing: `scheduler` needs it (e.g. metric: " in str(info.value)


@pytest.mark.parametrize(
    ("config", "search", "where"),
    [
        ({"actor_lr": 1e6}, None, "`runs[0].config.actor_lr` = 1000000.0"),
        ({}, {"critic_lr": {"grid_search": [3e-4, 30.0]}}, "`runs[0].search.critic_lr"),
        ({}, {"value_lr": {"loguniform": [1e-4, 5.0]}}, "`runs[0].search.value_lr.loguniform[1]`"),
    ],
)
def test_implausible_learning_rate_is_accepted_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    config: dict,
    search: dict | None,
    where: str,
) -> None:
    """12: ``actor_lr: 1e6`` was accepted silently; it is still valid, with a warning naming the
    key and the value."""
    path = tiny_yaml(tmp_path / "tiny.yaml", config=config, search=search)
    with caplog.at_level(logging.WARNING, logger="fttpo_ray"):
        load_experiment(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert where in warnings[0] and "learning rate above 1.0" in warnings[0]
    assert str(path) in warnings[0]


def test_plausible_learning_rates_give_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tiny_yaml(
        tmp_path / "tiny.yaml",
        config={"actor_lr": 1.0, "critic_lr": 3e-4},
        search={"value_lr": {"grid_search": [1e-4, 1e-3]}},
    )
    with caplog.at_level(logging.WARNING, logger="fttpo_ray"):
        load_experiment(path)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_cli_prints_the_learning_rate_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12: the CLI shows the warning on stderr (here before failing on an unrelated bad value,
    so that nothing is trained)."""
    monkeypatch.chdir(tmp_path)
    path = tiny_yaml(tmp_path / "tiny.yaml", config={"actor_lr": 1e6})
    rc = main(["train", str(path), "--set", "fat_q=5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "`runs[0].config.actor_lr` = 1000000.0 is a learning rate above 1.0" in err


# ---- defect 6: `fttpo eval` on a damaged or foreign checkpoint ------------------------------


def checkpoint_files(path: Path, algorithm_class: Any, config: Any) -> Path:
    """The two files by which RLlib (``Checkpointable.save_to_path``) and ``fttpo eval`` know an
    algorithm checkpoint: ``rllib_checkpoint.json`` and the class with its constructor
    arguments (the config's state), as ``Algorithm.save_to_path`` writes them."""
    path.mkdir(parents=True)
    (path / ALGORITHM_STATE_FILE).write_text(
        json.dumps({"class_and_ctor_args_file": CLASS_FILE, "state_file": "algorithm_state"})
    )
    ctor = {"class": algorithm_class, "ctor_args_and_kwargs": ((config.get_state(),), {})}
    (path / CLASS_FILE).write_bytes(pickle.dumps(ctor))
    return path


def ppo_cartpole(path: Path) -> Path:
    from ray.rllib.algorithms.ppo import PPO, PPOConfig

    return checkpoint_files(path, PPO, PPOConfig().environment("CartPole-v1"))


def test_eval_of_a_checkpoint_without_its_class_file(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    """6: a checkpoint missing ``class_and_ctor_args.pkl`` gave a traceback."""
    checkpoint = ppo_cartpole(tmp_path / "ckpt")
    (checkpoint / CLASS_FILE).unlink()
    failure = fails(capsys, ["eval", str(checkpoint)], watch=[cwd, tmp_path], minari=minari_root)
    assert f"'{checkpoint}' is a damaged algorithm checkpoint: {CLASS_FILE} is missing" in (
        failure.line
    )
    assert EVAL_ACCEPTS in failure.line


@pytest.mark.parametrize(("size", "error"), [(0, "EOFError"), (60, "UnpicklingError")])
def test_eval_of_a_truncated_class_file(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    cwd: Path,
    minari_root: Path,
    size: int,
    error: str,
) -> None:
    """6: a truncated ``class_and_ctor_args.pkl`` ended in ``EOFError: Ran out of input``."""
    checkpoint = ppo_cartpole(tmp_path / "ckpt")
    data = (checkpoint / CLASS_FILE).read_bytes()
    (checkpoint / CLASS_FILE).write_bytes(data[:size])
    failure = fails(capsys, ["eval", str(checkpoint)], watch=[cwd, tmp_path], minari=minari_root)
    assert f"is a damaged algorithm checkpoint: {CLASS_FILE} cannot be read ({error}" in (
        failure.line
    )
    assert EVAL_ACCEPTS in failure.line


def test_eval_of_a_discrete_action_checkpoint(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    """6: an RLlib PPO CartPole checkpoint failed deep in the evaluation (``'Discrete' object has
    no attribute 'low'``)."""
    checkpoint = ppo_cartpole(tmp_path / "ckpt")
    failure = fails(capsys, ["eval", str(checkpoint)], watch=[cwd, tmp_path], minari=minari_root)
    assert (
        f"'{checkpoint}' is a checkpoint of PPO on 'CartPole-v1', whose actions are Discrete(2) "
        "(not continuous)" in failure.line
    )
    assert EVAL_ACCEPTS in failure.line


def test_eval_of_an_fttpo_checkpoint_whose_dataset_is_missing(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    """6: FtTPO is rebuilt from its training dataset: a missing one is named before Ray starts."""
    from fttpo_ray.algorithms.fttpo.fttpo import FtTPO, FtTPOConfig

    gone = "test/input-faults/gone-v0"
    config = FtTPOConfig().environment("fttpo/TreatmentSim-v0").dataset(gone)
    checkpoint = checkpoint_files(tmp_path / "ckpt", FtTPO, config)
    failure = fails(capsys, ["eval", str(checkpoint)], watch=[cwd, tmp_path], minari=minari_root)
    assert (
        f"'{checkpoint}' is an FtTPO checkpoint trained on dataset '{gone}', which is not under "
        f"the Minari root {minari_root}: fttpo eval rebuilds FtTPO from its training dataset"
        in failure.line
    )


@pytest.mark.slow
def test_eval_of_a_real_ppo_cartpole_checkpoint(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    """6, as a person meets it: a checkpoint that RLlib's PPO wrote for CartPole."""
    from ray.rllib.algorithms.ppo import PPOConfig

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        config = PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
        algorithm = config.build_algo()
        checkpoint = Path(algorithm.save_to_path(str(tmp_path / "ppo")))
        algorithm.stop()
    finally:
        ray.shutdown()
    capsys.readouterr()
    rc = main(["eval", str(checkpoint)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_ERROR and len(err) == 1, err
    assert "is a checkpoint of PPO on 'CartPole-v1', whose actions are Discrete(2)" in err[0]
    assert not ray.is_initialized()


# ---- defect 1: two runs started in the same second ---------------------------------------------

#: The second every run of these tests starts in.
FROZEN = datetime(2026, 1, 2, 3, 4, 5)


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> datetime:
        return FROZEN


@pytest.fixture
def one_second(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every run folder is named in the same second; returns that name."""
    monkeypatch.setattr(sweep, "datetime", _FrozenClock)
    return FROZEN.strftime(sweep.TIME_FORMAT)


def test_sweeps_started_at_once_get_their_own_folders(tmp_path: Path, one_second: str) -> None:
    """1: two sweeps with one --storage started in the same second wrote into one folder (the
    name was checked free, then made later with ``exist_ok``). Eight at once, from threads
    released together, each get a folder of their own."""
    parent = tmp_path / "storage" / "quickstart"
    start = threading.Barrier(8)
    made: list[Path] = []

    def one() -> None:
        start.wait()
        made.append(sweep.new_run_dir(parent))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {one_second, *(f"{one_second}-{i}" for i in range(1, 8))}
    assert sorted(p.name for p in made) == sorted(expected)
    assert {p.name for p in parent.iterdir()} == expected


def test_a_new_folder_never_takes_an_existing_one(tmp_path: Path, one_second: str) -> None:
    """A folder left by an earlier run (even an empty one) is never reused."""
    (tmp_path / f"train-{one_second}").mkdir()
    (tmp_path / f"train-{one_second}" / "checkpoint").mkdir()
    (tmp_path / f"train-{one_second}-1").mkdir()
    assert sweep.new_run_dir(tmp_path, "train-").name == f"train-{one_second}-2"
    assert (tmp_path / f"train-{one_second}" / "checkpoint").is_dir()


@pytest.mark.slow
def test_two_trainings_in_one_second_keep_both_checkpoints(
    tmp_path: Path, cwd: Path, one_second: str
) -> None:
    """1: two `fttpo train` runs (seeds 0 and 7) started in the same second wrote the same
    checkpoint folder; now each has its own, and its MLflow run names it."""
    from mlflow.tracking import MlflowClient

    path = running_yaml(tmp_path / "tiny.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "storage"
    outcomes = [
        train.train_once(path, seed=seed, mlflow_uri=uri, storage=storage) for seed in (0, 7)
    ]
    folders = [o.checkpoint.parent for o in outcomes]
    assert [f.name for f in folders] == [f"train-{one_second}", f"train-{one_second}-1"]
    for outcome in outcomes:
        assert (outcome.checkpoint / ALGORITHM_STATE_FILE).is_file()
    client = MlflowClient(uri)
    for outcome, folder in zip(outcomes, folders, strict=True):
        run = client.get_run(outcome.mlflow_run_id)
        assert run.data.params["seed"] == str(outcome.seed)
        assert str(folder) in run.data.tags.values()


# ---- defect 2: a trial that fails while being built ------------------------------------------


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_layer_width_zero_fails_before_ray(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path, command: str
) -> None:
    """2: ``model_config: {fcnet_hiddens: [0]}`` failed every trial inside Ray (three tracebacks,
    a division by zero, exit 2 from a misleading report error)."""
    path = tiny_yaml(tmp_path / "tiny.yaml", config={"model_config": {"fcnet_hiddens": [0]}})
    failure = fails(capsys, [command, str(path)], watch=[cwd], minari=minari_root)
    assert (
        "`runs[0].config` (run 'fttpo'): `model_config.fcnet_hiddens` must list layer widths, "
        "integers >= 1; got [0]" in failure.line
    )


def test_layer_widths_checked_for_each_searched_value(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    path = tiny_yaml(
        tmp_path / "tiny.yaml",
        search={"model_config": {"grid_search": [{"fcnet_hiddens": [8]}, {"fcnet_hiddens": [-4]}]}},
    )
    failure = fails(capsys, ["sweep", str(path)], watch=[cwd], minari=minari_root)
    assert "`runs[0].search.model_config` = {'fcnet_hiddens': [-4]}" in failure.line
    assert "got [-4]" in failure.line


def nan_reward_dataset(dataset_id: str) -> None:
    """A tiny treatment dataset whose first episode's third reward is NaN (its Arrow file
    rewritten, as a broken logger or a bad export would leave it)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from fttpo_ray.data import collect_dataset, dataset_path, load_transitions

    collect_dataset("fttpo/TreatmentSim-v0", "random", 2, dataset_id, reference_policy=None)
    (part,) = (dataset_path(dataset_id) / "data" / "0").glob("*.arrow")
    with ipc.open_file(part) as reader:
        table = reader.read_all()
    rewards = table.column("rewards").to_pylist()
    rewards[2] = float("nan")
    index = table.schema.get_field_index("rewards")
    table = table.set_column(index, "rewards", pa.array(rewards, pa.float64()))
    with ipc.new_file(part, table.schema) as writer:
        writer.write_table(table)
    load_transitions(dataset_id)  # converted once here, not by the command under test


def test_nan_rewards_fail_the_sweep_before_ray(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path, minari_root: Path
) -> None:
    """2: a dataset with a NaN reward, which `fttpo train` rejected in one line, failed every
    trial of `fttpo sweep` inside Ray; now both say so before Ray starts."""
    dataset_id = "test/input-faults/nan-reward-v0"
    nan_reward_dataset(dataset_id)
    capsys.readouterr()
    path = tiny_yaml(tmp_path / "tiny.yaml")
    data = yaml.safe_load(path.read_text())
    data["dataset"] = {"id": dataset_id}
    path.write_text(yaml.safe_dump(data))
    for command in ("sweep", "train"):
        failure = fails(capsys, [command, str(path)], watch=[cwd], minari=minari_root)
        assert (
            f"dataset '{dataset_id}' has a non-finite value in column 'rewards' at transition 2; "
            "clean or re-collect the dataset" in failure.line
        )


def test_the_error_of_a_failed_trial_is_its_cause(tmp_path: Path) -> None:
    """2: the progress line names the error the trial died of, past Ray's actor error, and the
    trial's own copy of its traceback."""
    from types import SimpleNamespace

    from fttpo_ray.tuning.progress import traceback_path, trial_error

    error_file = tmp_path / "session" / "error.txt"
    error_file.parent.mkdir()
    error_file.write_text(
        "Failure # 1 (occurred at 2026-01-02_03-04-05)\n"
        "\x1b[36mray::Located.__init__()\x1b[39m (pid=1, ip=10.0.0.1)\n"
        "ray.exceptions.ActorDiedError: The actor died because of an error raised in its "
        "creation task\n"
        "Traceback (most recent call last):\n"
        '  File "fttpo.py", line 3, in setup\n'
        "    1 / 0\n"
        "ZeroDivisionError: float division by zero\n\n"
    )
    trial = SimpleNamespace(error_file=str(error_file), path=str(tmp_path / "storage" / "t0"))
    assert trial_error(trial) == "ZeroDivisionError: float division by zero"
    assert traceback_path(trial) == str(tmp_path / "storage" / "t0" / "error.txt")
    assert trial_error(SimpleNamespace(error_file=None, path="")) == "unknown error"


@pytest.mark.slow
def test_a_trial_failing_while_built_has_its_run_its_row_and_one_line(
    capsys: pytest.CaptureFixture, tmp_path: Path, cwd: Path
) -> None:
    """2: a trial that still fails while being built (here its data does not fit the in-memory
    limit that its split needs, which only the trial finds out) had no MLflow run, so the sweep
    ended with a misleading report error and exit 2, after three Ray tracebacks. Now: one line
    naming the trial and its error (its traceback kept in the trial's folder), its MLflow run
    (FAILED, outcome failed), its row in the table, exit 1."""
    from mlflow.tracking import MlflowClient

    from fttpo_ray.tuning import tracking as tr

    path = running_yaml(
        tmp_path / "tiny.yaml", config={"in_memory_max_transitions": 1}, max_failures=0
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["sweep", str(path), "--mlflow-uri", uri, "--storage", str(tmp_path / "storage")])
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    assert "Traceback" not in captured.err and "ERROR" not in captured.err
    (line,) = [line for line in captured.err.splitlines() if "FAILED" in line]
    assert (
        "fttpo 0_seed=0 FAILED: fttpo_ray.errors.ConfigError: `held_out_fraction`=0.2 needs the "
        "dataset in memory" in line
    )
    traceback = Path(line.rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert traceback.is_file() and str(tmp_path / "storage") in str(traceback)
    assert "| fttpo | –      | failed  | 1 | 0/1" in captured.out
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    trials = client.search_runs(
        [experiment.experiment_id], f"tags.`{tr.KIND_TAG}` = '{tr.KIND_TRIAL}'"
    )
    assert len(trials) == 1
    assert trials[0].info.status == tr.FAILED
    assert trials[0].data.tags[tr.OUTCOME_TAG] == tr.OUTCOME_FAILED


# ---- defect 3: a full disk under --storage ----------------------------------------------------


@pytest.fixture
def two_mib_disk(tmp_path: Path) -> Iterator[Path]:
    yield from small_disk(tmp_path / "disk", "2M")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    yield from small_disk(tmp_path / "disk", "300k")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sweep", "train"])
def test_a_storage_disk_too_full_to_start_is_one_line(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    cwd: Path,
    minari_root: Path,
    two_mib_disk: Path,
    command: str,
) -> None:
    """3: a sweep on a 2 MiB disk ran until the disk was full (exit 1, six tracebacks, last line
    ``EOFError: Ran out of input``, FAILED runs, half-written folders). Now it does not start."""
    path = tiny_yaml(tmp_path / "tiny.yaml")
    storage = two_mib_disk / "results"
    failure = fails(
        capsys,
        [command, str(path), "--storage", str(storage)],
        watch=[cwd, two_mib_disk],
        minari=minari_root,
    )
    assert f"the disk of storage directory '{storage}' is (nearly) full: 2.0 MiB free" in (
        failure.line
    )
    assert "free some space or choose another --storage" in failure.line


@pytest.mark.slow
def test_a_storage_disk_that_fills_up_during_a_sweep_is_one_line(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    cwd: Path,
    tiny_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """3: the disk fills up while the trials write their checkpoints: one line naming the full
    disk, no traceback, and the half-written sweep folder removed (the space freed)."""
    monkeypatch.setattr(sweep, "MIN_FREE_STORAGE_BYTES", 0)  # let it start on the tiny disk
    path = running_yaml(tmp_path / "tiny.yaml", stop={"iterations": 2}, max_failures=0)
    storage = tiny_disk / "results"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["sweep", str(path), "--storage", str(storage), "--mlflow-uri", uri])
    captured = capsys.readouterr()
    assert rc == EXIT_ERROR, captured.err
    assert "Traceback" not in captured.err and "EOFError" not in captured.err
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == captured.err.strip().splitlines()[-1]
    assert errors[0].startswith(
        f"fttpo sweep: error: the disk of storage directory '{storage}' is full (No space left "
        "on device) while run 'fttpo' was running; the half-written "
    )
    assert list((storage / "tiny").iterdir()) == []
    assert captured.out == ""
    assert not ray.is_initialized()
