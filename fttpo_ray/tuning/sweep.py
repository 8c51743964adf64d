"""``fttpo sweep``: run an experiment YAML as Ray Tune experiments tracked in MLflow.

Each entry of ``runs`` becomes one ``tune.Tuner`` (one trainable per Tuner); the Tuners run one
after another on the same Ray instance and all their trials go into one MLflow experiment,
nested under one parent run per sweep. Storage layout::

    <storage>/<experiment>/<sweep id>/sweep.json      the YAML as run, MLflow ids, overrides
    <storage>/<experiment>/<sweep id>/<run name>/     Tune's experiment directory of that run
    <storage>/<experiment>/<sweep id>/<run name>.<dataset label>/   ... per dataset, when the
                                                      YAML lists several (an environment axis)

``resume=True`` continues the latest sweep of the experiment in ``storage``: every Tuner that
was started is restored with ``Tuner.restore`` (finished trials are kept, unfinished and errored
ones continue from their last checkpoint) and the ones not started yet are started; the MLflow
runs are reused, not duplicated (see :mod:`fttpo_ray.tuning.tracking`).
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fttpo_ray.data.minari_files import content_digest
from fttpo_ray.data.object_store import release_transitions, share_transitions
from fttpo_ray.errors import ConfigError, FttpoError, StorageFullError, first_line
from fttpo_ray.tuning.progress import ProgressCallback
from fttpo_ray.tuning.runtime import check_address, located, start_ray, stop_ray, storage_root
from fttpo_ray.tuning.schema import (
    ASHA,
    CONFIG,
    LIST_DOMAINS,
    RUNS,
    SEARCH,
    ExperimentSpec,
    RunSpec,
    load_experiment,
    validate_experiment,
)
from fttpo_ray.tuning.space import (
    RAY_DATA_RESERVED_CPUS,
    DatasetRef,
    RunPlan,
    algorithm_config,
    dataset_ref,
    needs_dataset,
    plan_run,
    prepare_dataset,
    tune_num_samples,
    tune_scheduler,
    tune_search_alg,
)
from fttpo_ray.tuning.tracking import (
    FAILED,
    FINISHED,
    KILLED,
    KIND_SWEEP,
    KIND_TAG,
    RUNNING,
    SWEEP_DIR_TAG,
    TIME_TOTAL_S,
    TRAINING_ITERATION,
    YAML_TAG,
    MLflowTrackingCallback,
    RunContext,
    check_tracking_store,
    dataset_source,
    experiment_id,
    open_tracking_store,
    resolve_tracking_uri,
)
from fttpo_ray.tuning.trainables import KIND_FTTPO, KIND_RLLIB, KIND_TRAINABLE, trainable_kind

logger = logging.getLogger(__name__)

SWEEP_STATE_FILE = "sweep.json"
SWEEP_YAML_ARTIFACT = "experiment.yaml"
TIME_FORMAT = "%Y%m%d-%H%M%S"

# ---- keys of sweep.json ---------------------------------------------------------------------
STATE_YAML = "yaml"
STATE_SOURCE = "source"
STATE_TRACKING_URI = "tracking_uri"
STATE_EXPERIMENT_ID = "experiment_id"
STATE_PARENT_RUN_ID = "parent_run_id"
STATE_ITERATIONS = "iterations"
STATE_MAX_CONCURRENT = "max_concurrent"
STATE_STARTED = "started"
#: Tune's result key of a trial's final result (also set when a scheduler stops the trial).
DONE = "done"
#: Tune's result key naming the trial.
TRIAL_ID = "trial_id"
#: RLlib's config key of the module's settings, and the end of its layer-width keys
#: (``fcnet_hiddens``, ``head_fcnet_hiddens``, ...).
MODEL_CONFIG = "model_config"
HIDDENS_SUFFIX = "hiddens"
#: Free space of the storage's disk below which `fttpo sweep` / `train` refuse to start: a tiny
#: sweep's checkpoints and Tune's state take about 1 MiB per trial.
MIN_FREE_STORAGE_BYTES = 16 * 2**20
#: Free space below which a disk that failed a write counts as full.
FULL_DISK_BYTES = 2**20
#: The words of the error ``ENOSPC`` (how it shows in the messages Ray passes on).
NO_SPACE_MESSAGE = "No space left on device"


@dataclass
class SweepOutcome:
    """What a sweep did and where to look."""

    experiment: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_dir: Path
    trials: int = 0
    errored: int = 0
    interrupted: bool = False
    wall_s: float = 0.0


def new_run_dir(parent: Path, prefix: str = "") -> Path:
    """Create and return a new directory ``<parent>/<prefix><time>`` (``-1``, ``-2``, ... appended
    when a run started in the same second has it): made atomically, so that two runs started at
    once never share one, whatever the process."""
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}{datetime.now().strftime(TIME_FORMAT)}"
    index = 0
    while True:
        path = parent / (f"{base}-{index}" if index else base)
        try:
            path.mkdir()
        except FileExistsError:
            index += 1
            continue
        return path


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Free space of the disk that holds ``path`` (or would hold it: its nearest existing
    ancestor)."""
    return shutil.disk_usage(_existing_ancestor(path)).free


def check_free_space(root: Path) -> None:
    """Raise :class:`StorageFullError` when the disk of the storage ``root`` has less than
    :data:`MIN_FREE_STORAGE_BYTES` free (checked before anything starts or is created)."""
    free = free_bytes(root)
    if free < MIN_FREE_STORAGE_BYTES:
        raise StorageFullError(
            f"the disk of storage directory '{root}' is (nearly) full: {free / 2**20:.1f} MiB "
            f"free, at least {MIN_FREE_STORAGE_BYTES // 2**20} MiB needed for checkpoints and "
            "Tune's state; free some space or choose another --storage"
        )


def is_disk_full(err: BaseException | None, path: Path) -> bool:
    """Whether ``err`` (or its cause or context) is ``ENOSPC``, or the disk of ``path`` is
    full now (Tune reports a failed write as other errors, such as ``EOFError`` reading a
    truncated error file)."""
    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if NO_SPACE_MESSAGE in str(err):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return free_bytes(path) < FULL_DISK_BYTES


def disk_full_error(path: Path, what: str, removed: Path | None = None) -> StorageFullError:
    """The one-line error of a storage disk that filled up while ``what`` happened (``removed``:
    the half-written folder taken away)."""
    gone = f"; the half-written '{removed}' was removed" if removed is not None else ""
    return StorageFullError(
        f"the disk of storage directory '{path}' is full ({NO_SPACE_MESSAGE}) while {what}"
        f"{gone}; free some space or choose another --storage, then run again"
    )


def latest_sweep_dir(root: Path, name: str) -> Path:
    """The most recent sweep directory of ``name`` under ``root`` (for ``--resume``)."""
    candidates = sorted(
        (p.parent for p in (root / name).glob(f"*/{SWEEP_STATE_FILE}")),
        key=lambda p: p.stat().st_mtime,
    )
    if not candidates:
        raise ConfigError(
            f"no sweep of '{name}' to resume under '{root}'; run without --resume, or pass the "
            "--storage of the interrupted sweep"
        )
    return candidates[-1]


def _read_state(sweep_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((sweep_dir / SWEEP_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"cannot read '{sweep_dir / SWEEP_STATE_FILE}' to resume: {err}"
        ) from None


def _write_state(sweep_dir: Path, state: dict[str, Any]) -> None:
    path = sweep_dir / SWEEP_STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(path)


def trial_concurrency(plan: RunPlan, spec: ExperimentSpec, requested: int) -> int | None:
    """Trials of ``plan`` allowed at once (``None``: as many as the resources allow).

    RLlib's own offline algorithms read a dataset too large for memory with Ray Data, whose
    tasks run outside the trial's placement group: :data:`RAY_DATA_RESERVED_CPUS` CPUs of the
    cluster are left free for them, or their trials would wait forever on a small machine. In
    memory (:class:`~fttpo_ray.algorithms.offline_data.InMemoryOfflineData`, every dataset up
    to ``IN_MEMORY_MAX_TRANSITIONS``) they use only their own CPU, and run as many at once as
    FtTPO's trials.
    """
    import ray

    from fttpo_ray.algorithms.offline_data import InMemoryOfflineData

    limit = requested or None
    config = plan.algorithm_config
    streams = config is not None and config.offline_data_class is not InMemoryOfflineData
    if plan.kind == KIND_RLLIB and streams:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        fit = max(1, int((cpus - RAY_DATA_RESERVED_CPUS) // spec.cpus_per_trial))
        limit = min(limit, fit) if limit else fit
    return limit


def reuses_actors(plan: RunPlan, spec: ExperimentSpec) -> bool:
    """Whether the trials of ``plan`` reuse their actors (Tune's ``reuse_actors``): FtTPO's do
    (:meth:`~fttpo_ray.algorithms.fttpo.fttpo.FtTPO.reset_config` builds the next trial's
    algorithm in the finished trial's process, sparing a process start and its imports) under
    the FIFO and ASHA schedulers, which only start and stop trials, unless the YAML sets
    ``resources.reuse_actors: false``. PBT and HyperBand pause and restore trials from
    checkpoints, and RLlib's own algorithms cannot reset: their trials are fresh actors."""
    scheduler = spec.scheduler
    return (
        spec.reuse_actors
        and plan.kind == KIND_FTTPO
        and (scheduler is None or scheduler.name == ASHA)
    )


def interrupted(
    grid: Any, iterations: int, time_s: float | None, completed: Collection[str] = ()
) -> bool:
    """Whether a finished ``Tuner.fit`` was interrupted rather than run to its end.

    After Ctrl-C Tune stops every trial and marks it terminated (one stopped in its set-up may
    carry an error without being counted as failed), so an interruption shows only in the
    results: more trials short of the stop criterion (no iteration at all for one that had not
    reported yet) than trials that failed. A trial that a scheduler stopped early is not short:
    Tune completed it (its id is in ``completed``: the MLflow callback saw it end) or marked its
    last result ``done``.
    """
    short = 0
    for result in grid:
        metrics = result.metrics or {}
        done = (
            metrics.get(TRIAL_ID) in completed
            or bool(metrics.get(DONE))
            or int(metrics.get(TRAINING_ITERATION) or 0) >= iterations
        )
        timed_out = time_s is not None and float(metrics.get(TIME_TOTAL_S) or 0.0) >= time_s
        short += not (done or timed_out)
    return short > grid.num_errors


def check_run_configs(
    spec: ExperimentSpec, runs: Sequence[RunSpec], dataset: DatasetRef, *, seed: int
) -> None:
    """Validate the ``AlgorithmConfig`` of each RLlib run before anything starts.

    The run's fixed ``config`` is validated, then each listed value of its ``search`` block
    (``grid_search``, ``choice``) and the lower bound of a range, one at a time, so that a
    value no trial could train with is a one-line :class:`ConfigError` instead of failed
    trials. FtTPO's ``validate()`` reads no file (the dataset is resolved where the algorithm
    is built); RLlib's own algorithms need the dataset's export, so they are checked once
    ``dataset`` is prepared.
    """
    for run in runs:
        if trainable_kind(run.algorithm) == KIND_TRAINABLE:
            continue
        index = [known.name for known in spec.runs].index(run.name)
        where = f"{spec.path}: `{RUNS}[{index}]"
        fixed = f"{where}.{CONFIG}` (run '{run.name}')"
        trials: list[tuple[str, dict[str, Any]]] = [(fixed, {})]
        for key, domain in run.search.items():
            values = domain.values if domain.kind in LIST_DOMAINS else domain.values[:1]
            trials += [(f"{where}.{SEARCH}.{key}` = {v!r}", {key: v}) for v in values]
        for label, overrides in trials:
            config = algorithm_config(spec, run, dataset, seed=seed, overrides=overrides)
            try:
                config.validate()
                check_layer_widths(config.model_config)
            except (FttpoError, ValueError) as err:
                raise ConfigError(f"{label}: {first_line(err)}") from None


def check_layer_widths(model_config: Any) -> None:
    """Raise :class:`ConfigError` for a ``model_config`` whose layer widths (its ``*hiddens``
    lists, such as ``fcnet_hiddens``) are not integers >= 1: a network RLlib cannot build (it
    fails inside the trial, ``fcnet_hiddens: [0]`` with a division by zero)."""
    for key, widths in dict(model_config or {}).items():
        if not key.endswith(HIDDENS_SUFFIX) or widths is None:
            continue
        valid = isinstance(widths, (list, tuple)) and all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths
        )
        if not valid:
            raise ConfigError(
                f"`{MODEL_CONFIG}.{key}` must list layer widths, integers >= 1; got {widths!r}"
            )


def _tuner(
    plan: RunPlan,
    spec: ExperimentSpec,
    sweep_dir: Path,
    *,
    iterations: int,
    max_concurrent: int,
    callbacks: list[Any],
    resume: bool,
) -> Any:
    from ray import tune

    path = sweep_dir / plan.name
    if resume and tune.Tuner.can_restore(str(path)):
        logger.info("Restoring run '%s' from %s", plan.name, path)
        return tune.Tuner.restore(
            str(path),
            trainable=located(plan.trainable),
            resume_unfinished=True,
            resume_errored=True,
            param_space=plan.param_space,
        )
    stop: dict[str, float] = {TRAINING_ITERATION: iterations}
    if spec.time_s is not None:
        stop[TIME_TOTAL_S] = spec.time_s
    ck = spec.checkpoint
    if plan.kind == KIND_TRAINABLE:
        checkpoint = tune.CheckpointConfig(num_to_keep=ck.num_to_keep)
    else:
        checkpoint = tune.CheckpointConfig(
            checkpoint_frequency=ck.frequency,
            checkpoint_at_end=ck.at_end,
            num_to_keep=ck.num_to_keep,
        )
    return tune.Tuner(
        located(plan.trainable),
        param_space=plan.param_space,
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            scheduler=tune_scheduler(spec, plan.run, iterations),
            search_alg=tune_search_alg(spec),
            num_samples=tune_num_samples(spec),
            max_concurrent_trials=trial_concurrency(plan, spec, max_concurrent),
            reuse_actors=reuses_actors(plan, spec),
        ),
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=str(sweep_dir),
            stop=stop,
            checkpoint_config=checkpoint,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=callbacks,
            verbose=0,
            log_to_file=False,
        ),
    )


def _parent_run(
    client: Any, exp_id: str, spec: ExperimentSpec, sweep_dir: Path, iterations: int
) -> str:
    from mlflow.entities import Param

    run = client.create_run(
        exp_id,
        run_name=f"sweep {sweep_dir.name}",
        tags={KIND_TAG: KIND_SWEEP, SWEEP_DIR_TAG: str(sweep_dir), YAML_TAG: str(spec.path)},
    )
    run_id = run.info.run_id
    params = {
        "yaml": spec.path.name,
        "runs": ",".join(r.name for r in spec.runs),
        "algorithms": ",".join(sorted({r.algorithm for r in spec.runs})),
        "seeds": ",".join(str(s) for s in spec.seeds),
        "iterations": str(iterations),
        "dataset_id": ",".join(ds.id for ds in spec.datasets),
        "evaluation_episodes": str(spec.evaluation.episodes),
    }
    client.log_batch(run_id, params=[Param(k, v[:250]) for k, v in params.items()])
    client.log_text(run_id, spec.path.read_text(encoding="utf-8"), SWEEP_YAML_ARTIFACT)
    return run_id


def run_sweep(
    config_path: str | Path,
    *,
    address: str | None = None,
    mlflow_uri: str | None = None,
    storage: str | Path | None = None,
    iterations: int | None = None,
    resume: bool = False,
    max_concurrent: int | None = None,
    callbacks: Sequence[Any] = (),
) -> SweepOutcome:
    """Run (or with ``resume`` continue) the sweep of an experiment YAML; see the module doc.

    ``callbacks``: more Tune callbacks (``ray.tune.Callback``), given to every run's Tuner after
    the sweep's own MLflow tracking and progress callbacks.

    The sweep's report is not written here: ``fttpo sweep`` writes it afterwards
    (:func:`fttpo_ray.reporting.report.write_sweep_report`)."""
    start = time.perf_counter()
    spec = load_experiment(config_path)
    root = storage_root(storage)
    if address:
        check_address(address)
    if iterations is not None and iterations < 1:
        raise ConfigError(f"--iterations must be >= 1; got {iterations}")
    if max_concurrent is not None and max_concurrent < 0:
        raise ConfigError(f"--max-concurrent must be >= 0; got {max_concurrent}")

    state: dict[str, Any] = {}
    if resume:
        sweep_dir = latest_sweep_dir(root, spec.name)
        state = _read_state(sweep_dir)
        stored = state.get(STATE_TRACKING_URI)
        requested = resolve_tracking_uri(mlflow_uri)
        if mlflow_uri and stored and mlflow_uri != stored:
            raise ConfigError(
                f"the sweep in '{sweep_dir}' is tracked in '{stored}'; resume it with that "
                f"--mlflow-uri (got '{mlflow_uri}')"
            )
        uri = stored or requested
        spec = validate_experiment(state[STATE_YAML], spec.path)
        iterations = state.get(STATE_ITERATIONS) or spec.iterations
        max_concurrent = (
            state.get(STATE_MAX_CONCURRENT, 0) if max_concurrent is None else max_concurrent
        )
        logger.info("Resuming sweep %s", sweep_dir)
    else:
        uri = resolve_tracking_uri(mlflow_uri)
        iterations = iterations or spec.iterations
        max_concurrent = spec.max_concurrent if max_concurrent is None else max_concurrent

    check_tracking_store(uri)
    check_free_space(root)
    first_seed = spec.seeds[0]
    kinds = {run.name: trainable_kind(run.algorithm) for run in spec.runs}
    fttpo_runs = [run for run in spec.runs if kinds[run.name] == KIND_FTTPO]
    declared = [dataset_ref(ds) for ds in spec.datasets]
    for ref in declared:
        check_run_configs(spec, fttpo_runs, ref, seed=first_seed)
    # Nothing is created before this point; the datasets are collected if missing (a cache).
    datasets = (
        [prepare_dataset(spec, ds, address=address) for ds in spec.datasets]
        if needs_dataset(spec)
        else declared
    )
    rllib_runs = [run for run in spec.runs if kinds[run.name] == KIND_RLLIB]
    for ref in datasets:
        check_run_configs(spec, rllib_runs, ref, seed=first_seed)
    plans = [plan_run(spec, run, ref) for run in spec.runs for ref in datasets]

    client = open_tracking_store(uri)
    if not resume:
        sweep_dir = root / spec.name  # the sweep's own directory is made once Ray runs
    parent_id = state.get(STATE_PARENT_RUN_ID, "")
    outcome = SweepOutcome(spec.name, uri, "", parent_id, sweep_dir)
    started_ray = start_ray(address)
    status = FAILED
    shared: list[Any] = []
    made: Path | None = None  # the sweep directory this call created
    writing = "the sweep's state was written"  # what a full disk interrupted
    try:
        # FtTPO trials read their transition table from Ray's object store (put once here), so
        # no node needs the dataset on its disk.
        shared = share_transitions(p.dataset.id for p in plans if p.kind == KIND_FTTPO)
        exp_id = outcome.experiment_id = experiment_id(client, spec.name, uri)
        if resume:
            sweep_dir.mkdir(parents=True, exist_ok=True)
        else:
            sweep_dir = outcome.sweep_dir = made = new_run_dir(root / spec.name)
        if parent_id:
            client.update_run(parent_id, status=RUNNING)
        else:
            parent_id = _parent_run(client, exp_id, spec, sweep_dir, iterations)
            outcome.parent_run_id = parent_id
            state = {
                STATE_YAML: spec.raw,
                STATE_SOURCE: str(spec.path),
                STATE_TRACKING_URI: uri,
                STATE_EXPERIMENT_ID: exp_id,
                STATE_PARENT_RUN_ID: parent_id,
                STATE_ITERATIONS: iterations,
                STATE_MAX_CONCURRENT: max_concurrent,
                STATE_STARTED: datetime.now().isoformat(timespec="seconds"),
            }
            _write_state(sweep_dir, state)
        logger.info(
            "Sweep '%s': %d run(s), storage %s, MLflow %s (experiment %s, parent run %s)",
            spec.name,
            len(spec.runs),
            sweep_dir,
            uri,
            exp_id,
            parent_id,
        )
        # Each trial logs its dataset as an MLflow input; the digest is computed once.
        sources = {p.dataset.id: dataset_source(p.dataset.id) for p in plans}
        digests = {ds: content_digest(ds) for ds, source in sources.items() if source}
        for plan in plans:
            run = plan.run
            mutated = spec.scheduler.hyperparam_mutations if spec.scheduler else {}
            context = RunContext(
                experiment_id=exp_id,
                parent_run_id=parent_id,
                run_name=run.name,
                algorithm=run.algorithm,
                env=plan.dataset.env_id,
                dataset_id=plan.dataset.id,
                yaml_keys={key: run.dict_key(key) for key in run.config},
                searched=tuple(run.search),
                sweep_dir=str(sweep_dir),
                log_checkpoint=spec.log_checkpoint,
                iterations=iterations,
                time_s=spec.time_s,
                mutated={key: run.dict_key(key) for key in mutated},
                label=plan.dataset.id if len(datasets) > 1 else "",
                dataset_digest=digests.get(plan.dataset.id, ""),
                dataset_source=sources[plan.dataset.id],
            )
            tracker = MLflowTrackingCallback(tracking_uri=uri, context=context)
            tuner = _tuner(
                plan,
                spec,
                sweep_dir,
                iterations=iterations,
                max_concurrent=max_concurrent,
                callbacks=[tracker, ProgressCallback(plan.name, iterations), *callbacks],
                resume=resume,
            )
            logger.info("Run '%s' (%s) starts on %s", run.name, run.algorithm, plan.dataset.id)
            writing = f"run '{run.name}' was running"
            grid = tuner.fit()
            if grid.num_errors and is_disk_full(None, sweep_dir):
                raise OSError(errno.ENOSPC, NO_SPACE_MESSAGE)  # the trials failed of it
            outcome.trials += len(grid)
            outcome.errored += grid.num_errors
            tracked = tracker.trial_runs.items()
            completed = {tid for tid, r in tracked if r.status in (FINISHED, FAILED)}
            if interrupted(grid, iterations, spec.time_s, completed):
                outcome.interrupted = True
                break
        status = KILLED if outcome.interrupted else (FAILED if outcome.errored else FINISHED)
    except KeyboardInterrupt:
        outcome.interrupted = True
        status = KILLED
        raise
    except Exception as err:  # noqa: BLE001 - a full disk shows as any of Tune's errors
        if not is_disk_full(err, sweep_dir):
            raise
        if made is not None:
            # Half-written checkpoints and state that cannot be resumed: gone, freeing the space.
            shutil.rmtree(made, ignore_errors=True)
        raise disk_full_error(root, writing, made) from None
    finally:
        if parent_id:
            client.set_terminated(parent_id, status=status)
        release_transitions(shared)
        stop_ray(started_ray)

    outcome.wall_s = time.perf_counter() - start
    return outcome
