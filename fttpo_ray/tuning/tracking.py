"""MLflow tracking of sweeps and runs: a resume-safe Tune callback and the store helpers.

Layout in MLflow, made to be compared in MLflow's UI without digging: one experiment per YAML
(named after the file, tagged as a model-training experiment), one *sweep* run per sweep (its
YAML, the report) and, beside it at the top level, one *trial* run per Tune trial, tagged with
its sweep's run id (:data:`SWEEP_RUN_ID_TAG`) and named by run, variant, report parameters and
seed (:func:`trial_run_name`), so that the runs list shows every trial and the chart view
draws them on first open (MLflow folds nested runs under their parent). Sweeps written before
kept their trials nested (tag ``mlflow.parentRunId``): both are read (:func:`sweep_filters`).
A trial run holds:

* params: what the YAML sets (the run's ``config`` with the trial's sampled values) plus
  ``algorithm``, ``run``, ``env``, ``dataset_id``, ``seed``, ``variant`` and the
  hyper-parameters of the algorithm's report vocabulary
  (:func:`fttpo_ray.tuning.trainables.report_vocabulary`) that apply to its variant (a
  parameter of a policy the variant lacks is not logged) — numbers of the vocabulary as floats
  (``1`` and ``1.0`` group together), values shortened to :data:`MAX_PARAM_CHARS` characters;
* its dataset as an MLflow input (name: the Minari id, digest: :func:`content_digest` of its
  files, source: its directory), so that MLflow's Datasets column and filter work;
* metrics, per training iteration (``step``): only the names of :mod:`fttpo_ray.metrics`
  (see :func:`select_metrics`) and the sections the algorithm's vocabulary names, not the few
  hundred keys of an RLlib result; MLflow's chart view makes one section per prefix
  (``evaluation/thin``, ``evaluation/fat``, ``learner``, ``selection``...);
* artifacts: ``config.json`` (the trial's full config) and the final ``checkpoint/``.

Why not Tune's ``MLflowLoggerCallback``: it logs every config key as a param and, after
``Tuner.restore``, opens new runs while the old ones stay RUNNING. This callback keeps the
trial-id -> run-id map in its Tune state *and* as a run tag, so that a restored sweep continues
the same runs; metrics of iterations that a restored trial repeats (those after its last
checkpoint) are not logged twice. It only uses ``MlflowClient`` with explicit run ids — never
the "active run" of MLflow's fluent API, which concurrent trials would share (ray#20473).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import secrets
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ray.tune import Callback

from fttpo_ray import metrics as m
from fttpo_ray.data.minari_files import dataset_exists, dataset_path
from fttpo_ray.envs.glucose import PATIENT_GROUPS
from fttpo_ray.errors import ConfigError, first_line
from fttpo_ray.tuning.trainables import report_vocabulary

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: MLflow prints a "View run at <url>" line to stdout (and asks the server for the run first)
#: whenever a run on a tracking server ends; the sweep sets it to "true" (stdout is for results).
SUPPRESS_URL_PRINTING_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"
SQLITE_SCHEME = "sqlite"
HTTP_SCHEMES = ("http", "https")
#: Database servers (SQLAlchemy URIs) that MLflow supports as stores.
SQL_SCHEMES = ("postgresql", "mysql", "mssql")
#: The first bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"
CONNECT_TIMEOUT_S = 5.0
#: SQLite's message for SQLITE_FULL (a full disk or file system quota).
SQLITE_FULL_MESSAGE = "database or disk is full"
#: The suffix of the temporary file in which a new SQLite store is built.
STORE_BUILD_SUFFIX = ".creating"
#: The fix named by every "cannot use this store" error.
STORE_FIX = "pass a working --mlflow-uri (or MLFLOW_TRACKING_URI), e.g. sqlite:///$PWD/mlflow.db"

#: MLflow caps param values (6000 characters in 3.x); ours stay far below.
MAX_PARAM_CHARS = 250

# ---- tags ---------------------------------------------------------------------------------------
#: MLflow's tag of a nested run; trial runs of older sweeps carry it (see :func:`sweep_filters`).
PARENT_RUN_ID_TAG = "mlflow.parentRunId"
#: The sweep run a trial run belongs to (trial runs are top-level runs beside it).
SWEEP_RUN_ID_TAG = "fttpo.sweep_run_id"
#: The trial's variant and seed (also params), to filter and group by in MLflow's UI.
VARIANT_TAG = "fttpo.variant"
SEED_TAG = "fttpo.seed"
#: MLflow 3's experiment tag telling its UI what the experiment is for; the value for training
#: runs (the UI's "Model training" pages, not the GenAI ones).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: Context of a dataset input (``mlflow.data.context``): the data the run trained on.
DATASET_CONTEXT_TAG = "mlflow.data.context"
TRAINING_CONTEXT = "training"
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
#: How a trial ended (:data:`OUTCOMES`): reached the stop criterion, stopped early by the
#: scheduler, failed, or interrupted (the sweep was stopped).
OUTCOME_TAG = "fttpo.outcome"
OUTCOME_FINISHED = "finished"
OUTCOME_STOPPED_EARLY = "stopped_early"
OUTCOME_FAILED = "failed"
OUTCOME_INTERRUPTED = "interrupted"
OUTCOMES = (OUTCOME_FINISHED, OUTCOME_STOPPED_EARLY, OUTCOME_FAILED, OUTCOME_INTERRUPTED)
#: PBT: how many times the trial's hyperparameters were replaced (exploit + explore).
EXPLOITS_TAG = "fttpo.pbt_exploits"
#: PBT: metric prefix of the perturbed hyperparameters' values per iteration.
HYPERPARAMETER_PREFIX = "config/"
#: Where a trial ran: the Ray node id, host name and IP of its latest (re)start, and every node
#: id it ran on, in order (comma-separated; two after a restart on another node).
NODE_ID_TAG = "fttpo.node_id"
HOSTNAME_TAG = "fttpo.hostname"
NODE_IP_TAG = "fttpo.node_ip"
NODES_TAG = "fttpo.nodes"

# ---- params -------------------------------------------------------------------------------------
ALGORITHM_PARAM = "algorithm"
RUN_PARAM = "run"
ENV_PARAM = "env"
DATASET_ID_PARAM = "dataset_id"
SEED_PARAM = "seed"
#: The trial's variant: the value of its algorithm's variant key, else the algorithm's name.
VARIANT_PARAM = "variant"

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
#: Tune's result fields naming where a result was computed (``node_id``: see
#: :func:`fttpo_ray.tuning.runtime.located`).
NODE_ID = "node_id"
HOSTNAME = "hostname"
NODE_IP = "node_ip"
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
    m.ABSTENTION_RATE,
    m.CERTIFIED_SHARE_MEAN,
    m.CERTIFIED_WIDTH_MEAN,
    m.CERTIFICATE_BOUND_WIDTH_MEAN,
    m.CERTIFICATE_MULTIPLIER,
    # the glucose simulator's clinical measures (docs/metrics.md), overall and per patient group
    m.TIME_IN_RANGE,
    m.TIME_BELOW_70,
    m.TIME_BELOW_54,
    m.TIME_ABOVE_180,
    m.GLUCOSE_MEAN,
    *(m.group_metric(name, group) for name in m.GROUP_METRICS for group in PATIENT_GROUPS),
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


def select_metrics(result: Mapping[str, Any], sections: tuple[str, ...] = ()) -> dict[str, float]:
    """The metrics of a Tune/RLlib result that are logged: the names of :mod:`fttpo_ray.metrics`
    and every number under one of ``sections`` (``<section>/...``; an algorithm's
    :attr:`~fttpo_ray.algorithms.vocabulary.ReportVocabulary.metric_sections`)."""
    flat = flatten(result)
    prefixes = tuple(f"{section}/" for section in sections)
    selected: dict[str, float] = {}
    for key, value in flat.items():
        if key in _TRACKED or (prefixes and key.startswith(prefixes)):
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


def _is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or the error it wraps: SQLAlchemy's ``orig``, a cause) is a full disk."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if isinstance(current, sqlite3.Error) and SQLITE_FULL_MESSAGE in str(current):
            return True
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return False


def create_sqlite_store(db: Path, uri: str) -> None:
    """Create the SQLite store ``db`` of ``uri`` whole, or leave nothing (no-op if it exists).

    MLflow builds a new store in place, in a chain of schema migrations that SQLite does not undo
    when one fails: a creation stopped by a full disk leaves a half-built file that MLflow can no
    longer open or upgrade ("duplicate column name: step"), and two processes creating one store
    at once run the migrations twice on it. Here the store (schema and MLflow's ``Default``
    experiment) is built in a temporary file beside ``db`` and hard-linked to ``db`` only if no
    ``db`` exists yet: atomic, and a store another process created meanwhile is kept and used,
    never replaced. The temporary file is removed whatever happens.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # SQLite creates the file (so its mode follows the umask, as the store's would); the name
    # is unique to this process and call.
    tmp = db.with_name(f".{db.name}.{os.getpid()}.{secrets.token_hex(4)}{STORE_BUILD_SUFFIX}")
    tmp_uri = f"{SQLITE_SCHEME}:///{tmp}"
    try:
        SqlAlchemyStore(tmp_uri, (db.parent / ARTIFACTS_DIR_NAME).as_uri())
        _dispose_engine(tmp_uri)
        with tmp.open("rb+") as built:
            os.fsync(built.fileno())
        try:
            os.link(tmp, db)
        except FileExistsError:
            logger.info("MLflow store %s was created by another process; using it", db)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # A file system without hard links: a rename, which another creator may win.
            if not db.exists():
                os.replace(tmp, db)
    except Exception as err:  # noqa: BLE001 - OSError, SQLAlchemy's and MLflow's errors alike
        if _is_disk_full(err):
            raise ConfigError(
                f"cannot create MLflow store '{uri}': no space left on device in '{db.parent}' "
                "(nothing was written); free space there or pass another --mlflow-uri"
            ) from None
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise ConfigError(f"cannot create MLflow store '{uri}': {detail}; {STORE_FIX}") from None
    finally:
        _dispose_engine(tmp_uri)
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def _dispose_engine(uri: str) -> None:
    """Close and forget the engine MLflow keeps for ``uri`` (its engines live in a class map)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def _is_half_built(db: Path) -> bool:
    """Whether the SQLite file ``db`` is an MLflow store whose creation stopped half-way: it holds
    no experiment (a store MLflow finished always holds its ``Default`` experiment, even when
    deleted) or not even the table."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            (count,) = connection.execute("SELECT count(*) FROM experiments").fetchone()
    except sqlite3.OperationalError as err:
        return "no such table" in str(err)
    except sqlite3.Error:
        return False
    return count == 0


def open_tracking_store(uri: str, *, must_exist: bool = False) -> Any:
    """An ``MlflowClient`` on ``uri`` after :func:`check_tracking_store` and a first query.

    A SQLite store that does not exist yet is created (unless ``must_exist``), whole or not at
    all (:func:`create_sqlite_store`); one that a creation left half-built is named as such.
    """
    from mlflow.tracking import MlflowClient

    os.environ.setdefault(SUPPRESS_URL_PRINTING_ENV, "true")
    check_tracking_store(uri, must_exist=must_exist)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        create_sqlite_store(db, uri)
    elif db is not None and db.stat().st_size and _is_half_built(db):
        # Checked before MLflow opens it: MLflow would run its migrations on it again.
        raise ConfigError(
            f"cannot open MLflow store '{uri}': '{db}' is half-built (its creation was "
            "interrupted, e.g. by a full disk) and holds no experiment; delete it and run again"
        )
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; all mean "cannot open"
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise ConfigError(f"cannot open MLflow store '{uri}': {detail}; {STORE_FIX}") from None
    return client


def experiment_id(client: Any, name: str, uri: str) -> str:
    """Id of the MLflow experiment ``name``, created (or restored if deleted) when needed, and
    tagged as a model-training experiment (:data:`EXPERIMENT_KIND_TAG`)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(
            name,
            artifact_location=artifact_location(uri, name),
            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
        )
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
        )
    return experiment.experiment_id


#: The MLflow UI's query parameter choosing between its GenAI and its model-training pages.
WORKFLOW_QUERY = "workflowType=machine_learning"
#: Where ``mlflow ui`` serves by default.
DEFAULT_UI_URL = "http://127.0.0.1:5000"


def runs_view_url(uri: str, experiment: str) -> str:
    """The address of an experiment's training-runs view in MLflow's UI: on the tracking server
    of ``uri``, or where ``mlflow ui`` serves by default for a local store."""
    parsed = urlparse(uri)
    base = uri.rstrip("/") if parsed.scheme in HTTP_SCHEMES else DEFAULT_UI_URL
    return f"{base}/#/experiments/{experiment}/runs?{WORKFLOW_QUERY}"


def sweep_filters(sweep_run_id: str) -> tuple[str, ...]:
    """Search filters finding the trial runs of a sweep: top-level runs tagged with the sweep's
    run, and the nested runs of sweeps written before (MLflow's filters have no ``OR``)."""
    return (
        f"tags.`{SWEEP_RUN_ID_TAG}` = '{sweep_run_id}'",
        f"tags.`{PARENT_RUN_ID_TAG}` = '{sweep_run_id}'",
    )


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
    #: The stop criterion, to tell a finished trial from one a scheduler stopped early.
    iterations: int = 0
    time_s: float | None = None
    #: PBT's perturbed keys: param name -> key of the trial's config dict.
    mutated: dict[str, str] = field(default_factory=dict)
    #: The dataset id in trial run names when a sweep has several datasets ("" otherwise).
    label: str = ""
    #: The dataset logged as each run's input (see :func:`dataset_input`): its digest and
    #: source ("": none logged, e.g. a plain trainable's sweep without a dataset).
    dataset_digest: str = ""
    dataset_source: str = ""


def trial_outcome(context: RunContext, status: str, last_result: Mapping[str, Any]) -> str:
    """:data:`OUTCOME_TAG` of a trial whose run ends with ``status`` after ``last_result``."""
    if status == FAILED:
        return OUTCOME_FAILED
    if status != FINISHED:
        return OUTCOME_INTERRUPTED
    iteration = int(last_result.get(TRAINING_ITERATION) or 0)
    elapsed = float(last_result.get(TIME_TOTAL_S) or 0.0)
    timed_out = context.time_s is not None and elapsed >= context.time_s
    if iteration >= context.iterations or timed_out:
        return OUTCOME_FINISHED
    return OUTCOME_STOPPED_EARLY


def trial_variant(algorithm: str, config: Mapping[str, Any]) -> str:
    """The label that tables group by: the value of the algorithm's variant key (FtTPO's
    ``variant``), else the algorithm's name in lower case."""
    key = report_vocabulary(algorithm).variant_key
    variant = config.get(key) if key else None
    if isinstance(variant, str) and variant:
        return variant
    return algorithm.lower()


def _report_number(value: Any) -> Any:
    """A report parameter's value as it is logged: a number as a float (so that ``1`` and
    ``1.0`` are one group in MLflow's UI), anything else as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def trial_params(context: RunContext, config: Mapping[str, Any]) -> dict[str, str]:
    """Params of a trial run: the YAML's keys (trial values) plus the identifying fields; the
    report parameters that do not apply to the trial's variant are left out, even where the
    YAML sets them (the q of a policy that the variant lacks)."""
    vocabulary = report_vocabulary(context.algorithm)
    variant = trial_variant(context.algorithm, config)
    params: dict[str, Any] = {
        ALGORITHM_PARAM: context.algorithm,
        RUN_PARAM: context.run_name,
        ENV_PARAM: context.env,
        DATASET_ID_PARAM: context.dataset_id,
        SEED_PARAM: config.get(SEED_PARAM),
        VARIANT_PARAM: variant,
    }
    applicable = vocabulary.keys_for(variant)
    for key in applicable:
        if key in config:
            params[key] = _report_number(config[key])
    inapplicable = set(vocabulary.keys) - set(applicable)
    for name, key in context.yaml_keys.items():
        if key in config and name not in params and name not in inapplicable:
            params[name] = config[key]
    return {key: param_value(value) for key, value in params.items() if value is not None}


def trial_run_name(context: RunContext, config: Mapping[str, Any]) -> str:
    """A trial run's name, read in MLflow's runs list: the run, the variant where it differs,
    the dataset on an environment axis, the report parameters of its variant and the other
    searched keys (``key=value``), and the seed, e.g. ``iql expectile=0.8 seed=1``."""
    variant = trial_variant(context.algorithm, config)
    parts = list(dict.fromkeys((context.run_name, variant)))  # the variant once
    if context.label:
        parts.append(context.label)
    keys = list(report_vocabulary(context.algorithm).keys_for(variant))
    keys += [key for key in context.searched if key not in keys and key != VARIANT_PARAM]
    for name in keys:
        key = context.yaml_keys.get(name, name)
        if key in config and name != SEED_PARAM:
            parts.append(f"{name}={_short(config[key])}")
    if config.get(SEED_PARAM) is not None:
        parts.append(f"{SEED_PARAM}={config[SEED_PARAM]}")
    return " ".join(parts)


#: Significant digits of a number in a run name (a value drawn by a random search).
NAME_DIGITS = 4


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.{NAME_DIGITS}g}"
    return param_value(value)


def dataset_source(dataset_id: str) -> str:
    """The source of a run's dataset input: the local Minari dataset's directory ("" when
    there is none, e.g. a plain trainable's sweep names a dataset it never made)."""
    return str(dataset_path(dataset_id)) if dataset_exists(dataset_id) else ""


def dataset_input(context: RunContext) -> Any:
    """The MLflow dataset input of a run's dataset (``None`` without a source): name = the
    Minari id, digest = :func:`~fttpo_ray.data.minari_files.content_digest`, source = its
    directory, context = training."""
    if not context.dataset_source:
        return None
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource  # made by MLflow at import
    from mlflow.entities import DatasetInput, InputTag

    source = LocalArtifactDatasetSource(context.dataset_source)
    dataset = MetaDataset(source, name=context.dataset_id, digest=context.dataset_digest)
    return DatasetInput(
        dataset._to_mlflow_entity(), [InputTag(DATASET_CONTEXT_TAG, TRAINING_CONTEXT)]
    )


def create_trial_run(
    client: Any,
    context: RunContext,
    *,
    name: str,
    trial_id: str,
    config: Mapping[str, Any],
    trial_dir: str = "",
    kind: str = KIND_TRIAL,
    log_params: bool = True,
) -> str:
    """Create the MLflow run of a trial (a top-level run tagged with its sweep's run, if there
    is one) with its tags, its dataset input, ``config.json`` and (unless ``log_params`` is
    false: the caller logs :func:`trial_params` with its first batch) its params; returns the
    run id."""
    from mlflow.entities import Param

    tags = {
        KIND_TAG: kind,
        TRIAL_ID_TAG: trial_id,
        RUN_TAG: context.run_name,
        VARIANT_TAG: trial_variant(context.algorithm, config),
        SWEEP_DIR_TAG: context.sweep_dir,
        SEARCHED_TAG: ",".join(context.searched),
        TRIAL_DIR_TAG: trial_dir,
    }
    if config.get(SEED_PARAM) is not None:
        tags[SEED_TAG] = str(config[SEED_PARAM])
    if context.parent_run_id:
        tags[SWEEP_RUN_ID_TAG] = context.parent_run_id
    run_id = client.create_run(context.experiment_id, run_name=name, tags=tags).info.run_id
    if log_params:
        params = trial_params(context, config)
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    dataset = dataset_input(context)
    if dataset is not None:
        client.log_inputs(run_id, [dataset])
    client.log_text(
        run_id, json.dumps(dict(config), default=repr, indent=1, sort_keys=True), CONFIG_ARTIFACT
    )
    return run_id


def result_metrics(
    result: Mapping[str, Any], step: int, sections: tuple[str, ...] = ()
) -> list[Any]:
    """The selected metrics of one result (see :func:`select_metrics`) as MLflow metrics."""
    return _metrics(select_metrics(result, sections), step)


def _metrics(values: Mapping[str, float], step: int) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in values.items()]


def log_result(
    client: Any,
    run_id: str,
    result: Mapping[str, Any],
    step: int,
    sections: tuple[str, ...] = (),
) -> None:
    """Log the selected metrics of one result (see :func:`select_metrics`) at ``step``."""
    batch = result_metrics(result, step, sections)
    if batch:
        client.log_batch(run_id, metrics=batch)


#: MLflow's limits on one ``log_batch`` call.
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
#: Seconds the callback keeps metrics before it writes them (one ``log_batch`` per run).
FLUSH_INTERVAL_S = 1.0


@dataclass
class TrialRun:
    """The MLflow run of one trial, the last iteration logged to it and where it ran."""

    run_id: str
    last_step: int = 0
    status: str = RUNNING
    #: Ray node ids the trial ran on, in order (a restart on another node adds one).
    nodes: list[str] = field(default_factory=list)
    #: PBT: the perturbed hyperparameters' last values and how often they were replaced.
    hyperparameters: dict[str, float] = field(default_factory=dict)
    exploits: int = 0


@dataclass
class PendingWrites:
    """What the callback has yet to write to one run (written by :meth:`flush`)."""

    params: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def flush(self, client: Any, run_id: str) -> int:
        """Write everything in as few ``log_batch`` calls as MLflow's limits allow; the calls."""
        from mlflow.entities import RunTag

        tags = [RunTag(k, v) for k, v in self.tags.items()]
        calls = 0
        while self.params or self.metrics or tags:
            params, self.params = self.params[:MAX_BATCH_PARAMS], self.params[MAX_BATCH_PARAMS:]
            batch_tags, tags = tags[:MAX_BATCH_TAGS], tags[MAX_BATCH_TAGS:]
            room = MAX_BATCH_METRICS - len(params) - len(batch_tags)
            metrics, self.metrics = self.metrics[:room], self.metrics[room:]
            client.log_batch(run_id, metrics=metrics, params=params, tags=batch_tags)
            calls += 1
        self.tags.clear()
        return calls


def _write_pending(client: Any, pending: PendingWrites, run_id: str) -> int:
    return pending.flush(client, run_id)


def _log_artifacts(client: Any, run_id: str, path: str, artifact_path: str) -> None:
    client.log_artifacts(run_id, path, artifact_path)


def _set_terminated(client: Any, run_id: str, status: str) -> None:
    client.set_terminated(run_id, status=status)


class BackgroundWriter:
    """One thread that makes MLflow requests in the order they were submitted, with its own
    ``MlflowClient``, so that the Tune driver does not wait for the tracking server.

    A failed request is logged (a warning naming the run) and the next one is made.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.requests = 0
        self.failures = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(client, *args, **kwargs)``; it returns its request count (or None: 1)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="fttpo-mlflow", daemon=True)
            self._thread.start()
        self._queue.put((what, fn, args, kwargs))

    def drain(self) -> None:
        """Wait until every submitted request has been made."""
        if self._thread is not None:
            self._queue.join()

    def _run(self) -> None:
        from mlflow.tracking import MlflowClient

        os.environ.setdefault(SUPPRESS_URL_PRINTING_ENV, "true")
        client = MlflowClient(tracking_uri=self.tracking_uri)
        while True:
            what, fn, args, kwargs = self._queue.get()
            try:
                made = fn(client, *args, **kwargs)
                self.requests += 1 if made is None else int(made)
            except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; the sweep goes on
                self.failures += 1
                logger.warning("MLflow request failed (%s): %s", what, first_line(err))
            finally:
                self._queue.task_done()


@dataclass(eq=False)
class MLflowTrackingCallback(Callback):
    """Tune callback: one nested MLflow run per trial, resume-safe (see the module docstring).

    Writes are batched: a trial's params, its metrics and tags are kept for up to
    ``flush_interval_s`` seconds and written with one ``log_batch`` per run (also when the
    trial ends, when Tune saves the experiment state and when the experiment ends), so the
    MLflow calls per result fall as results come faster. The batches, a finished trial's
    checkpoint upload and the end of its run are made by a :class:`BackgroundWriter` thread,
    in order, so the driver does not wait for the server; Tune's state is saved (and the
    experiment ends) only after every write was made, so the state never counts a step that
    MLflow does not hold. Only creating a run (its id is needed) and the look-ups of a restored
    sweep are made in the driver's thread.
    """

    tracking_uri: str
    context: RunContext
    trial_runs: dict[str, TrialRun] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    flush_interval_s: float = FLUSH_INTERVAL_S

    def __post_init__(self) -> None:
        self._client: Any = None
        self._pending: dict[str, PendingWrites] = {}
        self._last_flush = time.monotonic()
        # Set by set_state (a restored sweep): runs whose last step is read again from MLflow;
        # only a restored sweep looks up trials it does not know in MLflow.
        self._unverified: set[str] = set()
        self._restored = False
        #: MLflow requests made in the driver's thread (see :attr:`requests`).
        self.calls = 0
        self._writer: BackgroundWriter | None = None
        self._sections = report_vocabulary(self.context.algorithm).metric_sections

    def __getstate__(self) -> dict[str, Any]:
        self.flush()
        self.drain()
        state = dict(self.__dict__)
        state["_client"] = None
        state["_writer"] = None
        return state

    @property
    def writer(self) -> BackgroundWriter:
        """The background writer (created on first use, also after unpickling)."""
        if self._writer is None:
            self._writer = BackgroundWriter(self.tracking_uri)
        return self._writer

    @property
    def requests(self) -> int:
        """MLflow requests made so far, in the driver's thread and in the background."""
        return self.calls + (self._writer.requests if self._writer else 0)

    def drain(self) -> None:
        """Wait until the background writer has made every queued request."""
        if self._writer is not None:
            self._writer.drain()

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` (created on first use, also after unpickling)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            os.environ.setdefault(SUPPRESS_URL_PRINTING_ENV, "true")
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ---- Tune state: the trial -> run map survives Tuner.restore ------------------------------

    def get_state(self) -> dict[str, Any]:
        self.flush()
        self.drain()
        return {
            "runs": {tid: vars(run) for tid, run in self.trial_runs.items()},
            "checkpoints": dict(self.checkpoints),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.trial_runs = {tid: TrialRun(**run) for tid, run in state.get("runs", {}).items()}
        self.checkpoints = dict(state.get("checkpoints", {}))
        # A driver killed without warning (SIGKILL) may have written steps after the state was
        # saved: the last step of every unfinished run is read from MLflow before it is trusted.
        self._unverified = {
            tid for tid, run in self.trial_runs.items() if run.status not in (FINISHED, FAILED)
        }
        self._restored = True

    # ---- batched writes -----------------------------------------------------------------------

    def _pending_for(self, run_id: str) -> PendingWrites:
        return self._pending.setdefault(run_id, PendingWrites())

    def flush(self, run_id: str | None = None) -> None:
        """Queue what is pending (for ``run_id`` only, if given) for the background writer."""
        run_ids = [run_id] if run_id is not None else list(self._pending)
        for rid in run_ids:
            pending = self._pending.pop(rid, None)
            if pending is not None:
                self.writer.submit(f"log_batch {rid}", _write_pending, pending, rid)
        if run_id is None:
            self._last_flush = time.monotonic()

    def _flush_if_due(self) -> None:
        if self._pending and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    # ---- run lookup ---------------------------------------------------------------------------

    def _existing_run(self, trial_id: str) -> TrialRun | None:
        if trial_id in self.trial_runs:
            run = self.trial_runs[trial_id]
            if trial_id in self._unverified:
                self._unverified.discard(trial_id)
                run.last_step = max(run.last_step, self._logged_steps(run.run_id))
            return run
        if not self._restored:
            return None
        ctx = self.context
        found: list[Any] = []
        for sweep_filter in sweep_filters(ctx.parent_run_id):
            found = self.client.search_runs(
                [ctx.experiment_id],
                filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and {sweep_filter}",
                max_results=1,
            )
            self.calls += 1
            if found:
                break
        if not found:
            return None
        run_id = found[0].info.run_id
        return TrialRun(run_id=run_id, last_step=self._logged_steps(run_id))

    def _logged_steps(self, run_id: str) -> int:
        """The last iteration logged to ``run_id`` in MLflow."""
        history = self.client.get_metric_history(run_id, TRAINING_ITERATION)
        self.calls += 1
        return max((int(point.step) for point in history), default=0)

    def run_id(self, trial_id: str) -> str | None:
        """The MLflow run id of a trial, if it has one."""
        run = self.trial_runs.get(trial_id)
        return run.run_id if run else None

    # ---- Tune hooks ---------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from mlflow.entities import Param

        existing = self._existing_run(trial.trial_id)
        if existing is not None:
            if existing.status != RUNNING:
                self.client.update_run(existing.run_id, status=RUNNING)
                self.calls += 1
            existing.status = RUNNING
            self.trial_runs[trial.trial_id] = existing
            logger.info("Trial %s continues MLflow run %s", trial.trial_id, existing.run_id)
            return
        run_id = create_trial_run(
            self.client,
            self.context,
            name=trial_run_name(self.context, trial.config),
            trial_id=trial.trial_id,
            config=trial.config,
            trial_dir=str(getattr(trial, "path", "") or ""),
            log_params=False,
        )
        self.calls += 3 if self.context.dataset_source else 2
        params = trial_params(self.context, trial.config)
        self._pending_for(run_id).params = [Param(k, v) for k, v in params.items()]
        self.trial_runs[trial.trial_id] = TrialRun(run_id=run_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run = self.trial_runs.get(trial.trial_id)
        if run is None:
            return
        node = result.get(NODE_ID)
        if node and (not run.nodes or run.nodes[-1] != node):
            run.nodes.append(str(node))
            self._pending_for(run.run_id).tags.update(
                {
                    NODE_ID_TAG: str(node),
                    HOSTNAME_TAG: str(result.get(HOSTNAME, "")),
                    NODE_IP_TAG: str(result.get(NODE_IP, "")),
                    NODES_TAG: ",".join(run.nodes),
                }
            )
        values = self._hyperparameters(run, trial)
        step = int(result.get(TRAINING_ITERATION, run.last_step + 1))
        if step > run.last_step:
            metrics = result_metrics(result, step, self._sections)
            if values:
                metrics += _metrics(
                    {f"{HYPERPARAMETER_PREFIX}{name}": v for name, v in values.items()}, step
                )
            self._pending_for(run.run_id).metrics.extend(metrics)
            run.last_step = step
        self._flush_if_due()

    def _hyperparameters(self, run: TrialRun, trial: Any) -> dict[str, float]:
        """PBT's perturbed values in the trial's config now; a change since the last result is
        an exploit, counted in :data:`EXPLOITS_TAG`."""
        values = {}
        for name, key in self.context.mutated.items():
            number = _as_number(trial.config.get(key))
            if number is not None:
                values[name] = number
        if run.hyperparameters and values != run.hyperparameters:
            run.exploits += 1
            self._pending_for(run.run_id).tags[EXPLOITS_TAG] = str(run.exploits)
        run.hyperparameters = values
        return values

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._flush_if_due()

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
        last_result = getattr(trial, "last_result", None) or {}
        outcome = trial_outcome(self.context, status, last_result)
        self._pending_for(run.run_id).tags[OUTCOME_TAG] = outcome
        self.flush(run.run_id)
        if status == FINISHED and self.context.log_checkpoint:
            checkpoint = getattr(trial, "checkpoint", None)
            path = getattr(checkpoint, "path", None) or self.checkpoints.get(trial.trial_id)
            if path and Path(path).is_dir():
                self.writer.submit(
                    f"log_artifacts {run.run_id}",
                    _log_artifacts,
                    run.run_id,
                    str(path),
                    CHECKPOINT_ARTIFACT_DIR,
                )
        self.writer.submit(f"set_terminated {run.run_id}", _set_terminated, run.run_id, status)
        run.status = status

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, FINISHED)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id not in self.trial_runs:
            # It failed while being built (Tune starts a trial once its trainable is set up):
            # it still gets its run, so that it has its row and its outcome.
            self.on_trial_start(iteration, trials, trial)
        self._finish(trial, FAILED)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()
        self.drain()
        for trial in trials:
            run = self.trial_runs.get(trial.trial_id)
            if run is not None and run.status == RUNNING:
                self.client.set_tag(run.run_id, OUTCOME_TAG, OUTCOME_INTERRUPTED)
                self.client.set_terminated(run.run_id, status=KILLED)
                self.calls += 2
                run.status = KILLED
