"""MLflow tracking of sweeps and runs: a resume-safe Tune callback and the store helpers.

Layout in MLflow: one experiment per YAML (named after the file), one *parent* run per sweep,
one *nested* run per Tune trial (tag ``mlflow.parentRunId``). A trial run holds:

* params: what the YAML sets (the run's ``config`` with the trial's sampled values) plus
  ``algorithm``, ``run``, ``env``, ``dataset_id``, ``seed``, ``variant`` and, where the
  algorithm has them, ``fat_q``, ``thin_q``, ``kl_weight`` — values shortened to
  :data:`MAX_PARAM_CHARS` characters;
* metrics, per training iteration (``step``): only the names of :mod:`fttpo_ray.metrics`
  (see :func:`select_metrics`), not the few hundred keys of an RLlib result;
* artifacts: ``config.json`` (the trial's full config) and the final ``checkpoint/``.

Why not Tune's ``MLflowLoggerCallback``: it logs every config key as a param and, after
``Tuner.restore``, opens new runs while the old ones stay RUNNING. This callback keeps the
trial-id -> run-id map in its Tune state *and* as a run tag, so that a restored sweep continues
the same runs; metrics of iterations that a restored trial repeats (those after its last
checkpoint) are not logged twice. It only uses ``MlflowClient`` with explicit run ids — never
the "active run" of MLflow's fluent API, which concurrent trials would share (ray#20473).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ray.tune import Callback

from fttpo_ray import metrics as m
from fttpo_ray.errors import ConfigError

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"
SQLITE_SCHEME = "sqlite"
HTTP_SCHEMES = ("http", "https")
#: Database servers (SQLAlchemy URIs) that MLflow supports as stores.
SQL_SCHEMES = ("postgresql", "mysql", "mssql")
#: The first bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"
CONNECT_TIMEOUT_S = 5.0
#: The fix named by every "cannot use this store" error.
STORE_FIX = "pass a working --mlflow-uri (or MLFLOW_TRACKING_URI), e.g. sqlite:///$PWD/mlflow.db"

#: MLflow caps param values (6000 characters in 3.x); ours stay far below.
MAX_PARAM_CHARS = 250

# ---- tags ---------------------------------------------------------------------------------------
PARENT_RUN_ID_TAG = "mlflow.parentRunId"
KIND_TAG = "fttpo.kind"
KIND_SWEEP = "sweep"
KIND_TRIAL = "trial"
KIND_TRAIN = "train"
TRIAL_ID_TAG = "fttpo.trial_id"
RUN_TAG = "fttpo.run"
SWEEP_DIR_TAG = "fttpo.sweep_dir"
TRIAL_DIR_TAG = "fttpo.trial_dir"
SEARCHED_TAG = "fttpo.searched"
YAML_TAG = "fttpo.yaml"

# ---- params -------------------------------------------------------------------------------------
ALGORITHM_PARAM = "algorithm"
RUN_PARAM = "run"
ENV_PARAM = "env"
DATASET_ID_PARAM = "dataset_id"
SEED_PARAM = "seed"
VARIANT_PARAM = "variant"
FAT_Q_PARAM = "fat_q"
THIN_Q_PARAM = "thin_q"
KL_WEIGHT_PARAM = "kl_weight"
#: Config fields logged as params whenever the algorithm has them.
ALWAYS_LOGGED_FIELDS = (FAT_Q_PARAM, THIN_Q_PARAM, KL_WEIGHT_PARAM, VARIANT_PARAM)

# ---- artifacts ----------------------------------------------------------------------------------
CONFIG_ARTIFACT = "config.json"
CHECKPOINT_ARTIFACT_DIR = "checkpoint"

# ---- run statuses -------------------------------------------------------------------------------
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
KILLED = "KILLED"

# ---- metrics ------------------------------------------------------------------------------------
TRAINING_ITERATION = "training_iteration"
TIME_TOTAL_S = "time_total_s"
TIME_THIS_ITER_S = "time_this_iter_s"
#: Standard Tune result keys that are logged besides ours.
STANDARD_METRICS = (TRAINING_ITERATION, TIME_TOTAL_S, TIME_THIS_ITER_S)
#: Names under ``evaluation/<policy>/`` that are logged.
EVALUATION_NAMES = (
    m.EPISODE_RETURN_MEAN,
    m.EPISODE_RETURN_SEM,
    m.EPISODES,
    m.EPISODE_LEN_MEAN,
    m.NORMALIZED_SCORE,
    m.VIOLATION_RATE,
    m.VIOLATIONS,
    m.ACTIONS,
    m.VIOLATION_RATE_UB95,
    m.PROHIBITED_MASS_MEAN,
    m.PROHIBITED_MASS_ZERO_FRAC,
    m.DEATHS_PER_100_EPISODES,
    m.BOUNDARY_ACTION_RATE,
    m.SUPPORT_HALFWIDTH_MEAN,
    m.SUPPORT_OUTSIDE_BOX_FRAC,
)
LEARNER_NAMES = (m.CRITIC_LOSS, m.VALUE_LOSS, m.FAT_LOSS, m.THIN_LOSS, m.GRAD_STEPS_PER_S)
#: RLlib's own loss keys (``learners/default_policy/<key>``) of its offline algorithms, logged
#: under our names: the critic (``qf_loss``), the value net (``vf_loss``) and the acting policy,
#: which has full support and is therefore a "fat" policy in our vocabulary (``policy_loss``).
RLLIB_LEARNER_PREFIX = "learners/default_policy"
RLLIB_LOSS_NAMES = {"qf_loss": m.CRITIC_LOSS, "vf_loss": m.VALUE_LOSS, "policy_loss": m.FAT_LOSS}


def tracked_metric_names() -> tuple[str, ...]:
    """Every metric name that :func:`select_metrics` may return."""
    names = [m.evaluation_key(p, n) for p in m.POLICIES for n in EVALUATION_NAMES]
    names += [m.learner_key(n) for n in LEARNER_NAMES]
    return tuple(names) + STANDARD_METRICS


_TRACKED = frozenset(tracked_metric_names())


def flatten(result: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested result dict -> ``{"a/b/c": value}`` (Tune's delimiter)."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def select_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a Tune/RLlib result that are logged (names of :mod:`fttpo_ray.metrics`)."""
    flat = flatten(result)
    selected: dict[str, float] = {}
    for key, value in flat.items():
        if key in _TRACKED:
            number = _as_number(value)
            if number is not None:
                selected[key] = number
    for rllib_name, name in RLLIB_LOSS_NAMES.items():
        key = m.learner_key(name)
        value = _as_number(flat.get(f"{RLLIB_LEARNER_PREFIX}/{rllib_name}"))
        if key not in selected and value is not None:
            selected[key] = value
    return selected


def param_value(value: Any) -> str:
    """A param value as MLflow stores it: short text (lists/dicts as compact JSON)."""
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=repr, separators=(",", ":"))
    else:
        text = str(value)
    if len(text) > MAX_PARAM_CHARS:
        text = text[: MAX_PARAM_CHARS - 3] + "..."
    return text


# ---- the tracking store -------------------------------------------------------------------------


def default_tracking_uri(directory: str | Path | None = None) -> str:
    """``sqlite:///<absolute directory>/mlflow.db`` (the working directory by default)."""
    base = Path(directory or os.getcwd()).resolve()
    return f"{SQLITE_SCHEME}:///{base / DEFAULT_DB_NAME}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else :func:`default_tracking_uri`."""
    return uri or os.environ.get(TRACKING_URI_ENV) or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other stores)."""
    if not uri.startswith(f"{SQLITE_SCHEME}:///"):
        return None
    return Path(uri[len(f"{SQLITE_SCHEME}:///") :])


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifact root of a new experiment: next to a local SQLite database (else the server's)."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / ARTIFACTS_DIR_NAME / experiment).resolve().as_uri()


def check_reachable(host: str, port: int, what: str, fix: str) -> None:
    """Raise :class:`ConfigError` unless a TCP connection to ``host:port`` opens quickly."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"cannot reach {what} at {host}:{port} ({reason}); {fix}") from None


def is_writable_dir(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (tried, not inferred from the mode bits,
    which do not bind the superuser and say nothing of read-only file systems)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".fttpo-write-test-"):
            return True
    except OSError:
        return False


def check_tracking_store(uri: str, *, must_exist: bool = False) -> None:
    """:class:`ConfigError` unless the store at ``uri`` can be used; creates nothing.

    A SQLite store needs an existing, writable directory (SQLite writes its journal next to the
    database) and, if the file exists, a writable SQLite file; with ``must_exist`` the file must
    exist. A server must answer on its port. Checked up front because MLflow retries a store it
    cannot open for about two minutes before it gives up.
    """
    fix = STORE_FIX
    parsed = urlparse(uri)
    db = sqlite_path(uri)
    if db is not None:
        if not db.parent.is_dir():
            raise ConfigError(
                f"MLflow store '{uri}': directory '{db.parent}' does not exist; {fix}"
            )
        if not db.exists():
            if must_exist:
                raise ConfigError(
                    f"MLflow store '{uri}' does not exist (no file '{db}'); pass the "
                    "--mlflow-uri that `fttpo sweep` or `fttpo train` wrote to"
                )
            if not is_writable_dir(db.parent):
                raise ConfigError(f"MLflow store '{uri}': cannot create '{db}'; {fix}")
            return
        try:
            with db.open("r+b") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as err:
            raise ConfigError(
                f"MLflow store '{uri}': '{db}' is not writable ({err.strerror or err}); {fix}"
            ) from None
        if header and header != SQLITE_HEADER:
            raise ConfigError(f"cannot open MLflow store '{uri}': '{db}' is not SQLite; {fix}")
        if not is_writable_dir(db.parent):
            raise ConfigError(
                f"MLflow store '{uri}': directory '{db.parent}' is not writable; {fix}"
            )
    elif parsed.scheme in HTTP_SCHEMES:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        check_reachable(parsed.hostname or "localhost", port, f"the MLflow server '{uri}'", fix)
    elif parsed.scheme not in ("", "file", "databricks", *SQL_SCHEMES):
        raise ConfigError(f"MLflow store '{uri}': unsupported scheme '{parsed.scheme}'; {fix}")


def open_tracking_store(uri: str, *, must_exist: bool = False) -> Any:
    """An ``MlflowClient`` on ``uri`` after :func:`check_tracking_store` and a first query.

    A SQLite store that does not exist yet is created (unless ``must_exist``).
    """
    from mlflow.tracking import MlflowClient

    check_tracking_store(uri, must_exist=must_exist)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; all mean "cannot open"
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise ConfigError(f"cannot open MLflow store '{uri}': {detail}; {STORE_FIX}") from None
    return client


def experiment_id(client: Any, name: str, uri: str) -> str:
    """Id of the MLflow experiment ``name``, created (or restored if deleted) when needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location(uri, name))
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def find_experiment(client: Any, name: str) -> str:
    """Id of an existing experiment; :class:`ConfigError` listing the known names otherwise."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(
            f"no MLflow experiment named '{name}' in this store; experiments: "
            f"{', '.join(names) or 'none'} (check --experiment and --mlflow-uri)"
        )
    return experiment.experiment_id


# ---- trial runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What the callback needs to name and describe the trials of one YAML run."""

    experiment_id: str
    parent_run_id: str
    run_name: str
    algorithm: str
    env: str | None
    dataset_id: str
    #: Param name (the YAML key) -> key of the trial's config dict.
    yaml_keys: dict[str, str]
    searched: tuple[str, ...]
    sweep_dir: str
    log_checkpoint: bool = True


def trial_params(context: RunContext, config: Mapping[str, Any]) -> dict[str, str]:
    """Params of a trial run: the YAML's keys (trial values) plus the identifying fields."""
    from fttpo_ray.tuning.space import trial_variant

    params: dict[str, Any] = {
        ALGORITHM_PARAM: context.algorithm,
        RUN_PARAM: context.run_name,
        ENV_PARAM: context.env,
        DATASET_ID_PARAM: context.dataset_id,
        SEED_PARAM: config.get(SEED_PARAM),
        VARIANT_PARAM: trial_variant(context.algorithm, config),
    }
    keys = {**{key: key for key in ALWAYS_LOGGED_FIELDS}, **context.yaml_keys}
    for name, key in keys.items():
        if key in config and name not in params:
            params[name] = config[key]
    return {key: param_value(value) for key, value in params.items() if value is not None}


def create_trial_run(
    client: Any,
    context: RunContext,
    *,
    name: str,
    trial_id: str,
    config: Mapping[str, Any],
    trial_dir: str = "",
    kind: str = KIND_TRIAL,
) -> str:
    """Create the MLflow run of a trial (nested under the sweep's parent run, if there is one)
    with its params, tags and ``config.json``; returns the run id."""
    from mlflow.entities import Param

    tags = {
        KIND_TAG: kind,
        TRIAL_ID_TAG: trial_id,
        RUN_TAG: context.run_name,
        SWEEP_DIR_TAG: context.sweep_dir,
        SEARCHED_TAG: ",".join(context.searched),
        TRIAL_DIR_TAG: trial_dir,
    }
    if context.parent_run_id:
        tags[PARENT_RUN_ID_TAG] = context.parent_run_id
    run_id = client.create_run(context.experiment_id, run_name=name, tags=tags).info.run_id
    params = trial_params(context, config)
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    client.log_text(
        run_id, json.dumps(dict(config), default=repr, indent=1, sort_keys=True), CONFIG_ARTIFACT
    )
    return run_id


def log_result(client: Any, run_id: str, result: Mapping[str, Any], step: int) -> None:
    """Log the selected metrics of one result (see :func:`select_metrics`) at ``step``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, step) for k, v in select_metrics(result).items()]
    if batch:
        client.log_batch(run_id, metrics=batch)


@dataclass
class TrialRun:
    """The MLflow run of one trial and the last iteration logged to it."""

    run_id: str
    last_step: int = 0
    status: str = RUNNING


@dataclass(eq=False)
class MLflowTrackingCallback(Callback):
    """Tune callback: one nested MLflow run per trial, resume-safe (see the module docstring)."""

    tracking_uri: str
    context: RunContext
    trial_runs: dict[str, TrialRun] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` (created on first use, also after unpickling)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ---- Tune state: the trial -> run map survives Tuner.restore ------------------------------

    def get_state(self) -> dict[str, Any]:
        return {
            "runs": {tid: vars(run) for tid, run in self.trial_runs.items()},
            "checkpoints": dict(self.checkpoints),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.trial_runs = {tid: TrialRun(**run) for tid, run in state.get("runs", {}).items()}
        self.checkpoints = dict(state.get("checkpoints", {}))

    # ---- run lookup ---------------------------------------------------------------------------

    def _existing_run(self, trial_id: str) -> TrialRun | None:
        if trial_id in self.trial_runs:
            return self.trial_runs[trial_id]
        ctx = self.context
        found = self.client.search_runs(
            [ctx.experiment_id],
            filter_string=(
                f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' "
                f"and tags.`{PARENT_RUN_ID_TAG}` = '{ctx.parent_run_id}'"
            ),
            max_results=1,
        )
        if not found:
            return None
        run_id = found[0].info.run_id
        history = self.client.get_metric_history(run_id, TRAINING_ITERATION)
        last = max((int(point.step) for point in history), default=0)
        return TrialRun(run_id=run_id, last_step=last)

    def run_id(self, trial_id: str) -> str | None:
        """The MLflow run id of a trial, if it has one."""
        run = self.trial_runs.get(trial_id)
        return run.run_id if run else None

    # ---- Tune hooks ---------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        existing = self._existing_run(trial.trial_id)
        if existing is not None:
            self.client.update_run(existing.run_id, status=RUNNING)
            existing.status = RUNNING
            self.trial_runs[trial.trial_id] = existing
            logger.info("Trial %s continues MLflow run %s", trial.trial_id, existing.run_id)
            return
        run_id = create_trial_run(
            self.client,
            self.context,
            name=f"{self.context.run_name}:{trial.experiment_tag}",
            trial_id=trial.trial_id,
            config=trial.config,
            trial_dir=str(getattr(trial, "path", "") or ""),
        )
        self.trial_runs[trial.trial_id] = TrialRun(run_id=run_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run = self.trial_runs.get(trial.trial_id)
        if run is None:
            return
        step = int(result.get(TRAINING_ITERATION, run.last_step + 1))
        if step <= run.last_step:
            return
        log_result(self.client, run.run_id, result, step)
        run.last_step = step

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        path = getattr(checkpoint, "path", None)
        if path:
            self.checkpoints[trial.trial_id] = str(path)

    def _finish(self, trial: Any, status: str) -> None:
        run = self.trial_runs.get(trial.trial_id)
        if run is None or run.status in (FINISHED, FAILED):
            return
        if status == FINISHED and self.context.log_checkpoint:
            checkpoint = getattr(trial, "checkpoint", None)
            path = getattr(checkpoint, "path", None) or self.checkpoints.get(trial.trial_id)
            if path and Path(path).is_dir():
                self.client.log_artifacts(run.run_id, str(path), CHECKPOINT_ARTIFACT_DIR)
        self.client.set_terminated(run.run_id, status=status)
        run.status = status

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, FINISHED)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, FAILED)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:
            run = self.trial_runs.get(trial.trial_id)
            if run is not None and run.status == RUNNING:
                self.client.set_terminated(run.run_id, status=KILLED)
                run.status = KILLED
