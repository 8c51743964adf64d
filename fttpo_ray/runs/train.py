"""``fttpo train``: one run of one algorithm from an experiment YAML, on a local Ray.

The run's ``config`` block is used as it is (its ``search`` block is ignored), with ``--set``
overrides, the first of the YAML's ``seeds`` (or ``seed``) and ``stop.iterations`` (or
``iterations``). Metrics go to the YAML's MLflow experiment as a top-level run (tag
``fttpo.kind = train``); the final checkpoint is written to
``<storage>/<experiment>/train-<time>/checkpoint`` (``train-<time>-1``, ... for a run started in
the same second as another: each run has its own folder) and logged as an artifact.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fttpo_ray.data.minari_files import content_digest
from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning.progress import describe_result
from fttpo_ray.tuning.runtime import start_ray, stop_ray, storage_root
from fttpo_ray.tuning.schema import load_experiment
from fttpo_ray.tuning.space import algorithm_config, dataset_ref, prepare_dataset
from fttpo_ray.tuning.sweep import (
    check_free_space,
    check_run_configs,
    disk_full_error,
    is_disk_full,
    new_run_dir,
)
from fttpo_ray.tuning.tracking import (
    CHECKPOINT_ARTIFACT_DIR,
    FAILED,
    FINISHED,
    KILLED,
    KIND_TRAIN,
    TRAINING_ITERATION,
    RunContext,
    check_tracking_store,
    create_trial_run,
    dataset_source,
    experiment_id,
    log_result,
    open_tracking_store,
    resolve_tracking_uri,
    select_metrics,
    trial_run_name,
)
from fttpo_ray.tuning.trainables import (
    KIND_FTTPO,
    KIND_TRAINABLE,
    report_vocabulary,
    trainable_kind,
)

logger = logging.getLogger(__name__)

TRAIN_DIR_PREFIX = "train-"
CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainOutcome:
    """Result of :func:`train_once`."""

    experiment: str
    run: str
    tracking_uri: str
    mlflow_run_id: str
    experiment_id: str
    checkpoint: Path
    iterations: int
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


def train_once(
    config_path: str | Path,
    *,
    overrides: Sequence[str] = (),
    run: str | None = None,
    mlflow_uri: str | None = None,
    storage: str | Path | None = None,
    iterations: int | None = None,
    seed: int | None = None,
) -> TrainOutcome:
    """Train one run of the YAML (see the module docstring) and return its final metrics."""
    start = time.perf_counter()
    spec = load_experiment(config_path, overrides=overrides, run=run)
    run_spec = spec.run(run)
    if trainable_kind(run_spec.algorithm) == KIND_TRAINABLE:
        raise ConfigError(
            f"{spec.path}: run '{run_spec.name}' uses '{run_spec.algorithm}', which is not an "
            "RLlib algorithm; `fttpo train` runs RLlib algorithms, use `fttpo sweep` for others"
        )
    if iterations is not None and iterations < 1:
        raise ConfigError(f"--iterations must be >= 1; got {iterations}")
    seed = spec.seeds[0] if seed is None else seed
    iterations = iterations or spec.iterations
    root = storage_root(storage)
    uri = resolve_tracking_uri(mlflow_uri)
    check_tracking_store(uri)
    check_free_space(root)
    # Every setting is checked before anything starts or is created (the search block is not
    # used here). RLlib's own algorithms are checked once their dataset export exists.
    fixed = replace(run_spec, search={})
    declared = dataset_ref(spec.dataset)
    fttpo = trainable_kind(run_spec.algorithm) == KIND_FTTPO
    if fttpo:
        check_run_configs(spec, [fixed], declared, seed=seed)
    dataset = prepare_dataset(spec)
    if not fttpo:
        check_run_configs(spec, [fixed], dataset, seed=seed)
    config = algorithm_config(spec, run_spec, dataset, seed=seed)

    started_ray = start_ray(None)
    algo = None
    run_id = ""
    status = FAILED
    out_dir: Path | None = None
    try:
        out_dir = new_run_dir(root / spec.name, TRAIN_DIR_PREFIX)
        algo = config.build_algo()
        client = open_tracking_store(uri)
        exp_id = experiment_id(client, spec.name, uri)
        source = dataset_source(dataset.id)
        context = RunContext(
            experiment_id=exp_id,
            parent_run_id="",
            run_name=run_spec.name,
            algorithm=run_spec.algorithm,
            env=dataset.env_id,
            dataset_id=dataset.id,
            yaml_keys={key: run_spec.dict_key(key) for key in run_spec.config},
            searched=(),
            sweep_dir=str(out_dir),
            dataset_digest=content_digest(dataset.id) if source else "",
            dataset_source=source,
        )
        settings = config.to_dict()
        sections = report_vocabulary(run_spec.algorithm).metric_sections
        run_id = create_trial_run(
            client,
            context,
            name=f"train {trial_run_name(context, settings)}",
            trial_id=out_dir.name,
            config=settings,
            trial_dir=str(out_dir),
            kind=KIND_TRAIN,
        )
        result: dict = {}
        for index in range(1, iterations + 1):
            result = algo.train()
            step = int(result.get(TRAINING_ITERATION, index))
            log_result(client, run_id, result, step, sections)
            logger.info(
                "%s iter %d/%d: %s", run_spec.name, step, iterations, describe_result(result)
            )
        checkpoint = Path(algo.save_to_path(str(out_dir / CHECKPOINT_DIR)))
        client.log_artifacts(run_id, str(checkpoint), CHECKPOINT_ARTIFACT_DIR)
        status = FINISHED
        return TrainOutcome(
            experiment=spec.name,
            run=run_spec.name,
            tracking_uri=uri,
            mlflow_run_id=run_id,
            experiment_id=exp_id,
            checkpoint=checkpoint,
            iterations=iterations,
            seed=seed,
            metrics=select_metrics(result, sections),
            wall_s=time.perf_counter() - start,
        )
    except KeyboardInterrupt:
        status = KILLED
        raise
    except OSError as err:
        if is_disk_full(err, root):
            raise disk_full_error(root, "the run was training or saving its checkpoint") from None
        raise
    finally:
        if run_id:
            client.set_terminated(run_id, status=status)
        if algo is not None:
            algo.stop()
        stop_ray(started_ray)
        if status != FINISHED and out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)  # no folder without a whole checkpoint
