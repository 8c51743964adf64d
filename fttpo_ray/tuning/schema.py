"""The experiment YAML (``tune_configs/*.yaml``): loading and strict validation.

One file describes one experiment — one MLflow experiment named after the file. Its schema
(version 1; documented with examples in ``docs/tuning.md``)::

    checkpoint: {at_end: true, frequency: 1, num_to_keep: 2}       # optional
    dataset: {episodes: 50, env: fttpo/TreatmentSim-v0, id: fttpo/treatment/random-v0, seed: 0}
    # or a list of such blocks: an environment axis (one Tune experiment per run and dataset)
    # `id` may list several ids (medium + expert): their mixture, combined once (docs/datasets.md)
    evaluation: {episodes: 20, explore: true, interval: 1, seed: 1000000}
    max_concurrent: 0        # optional: trials at once (0 = as many as the CPUs allow)
    max_failures: 2          # optional: restarts of a failed trial (from its last checkpoint;
                             # -1: without limit), e.g. when its node dies
    metric: evaluation/thin/episode_return_mean   # what a scheduler / search_alg optimises
    mlflow: {log_checkpoint: true}                                  # optional
    mode: max                # with metric: max or min
    num_samples: 1           # optional: Tune's repeats of the search (random domains); with a
                             # search_alg: the configurations it proposes (each run per seed)
    resources: {cpus_per_trial: 1}                                   # optional
    runs:                    # one Tune experiment per run, all in the same MLflow experiment
      - algorithm: FtTPO     # a Tune/RLlib trainable name: FtTPO, IQL, CQL, BC, MARWIL, ...
        config: {...}        # every hyper-parameter: AlgorithmConfig field names and values
        name: fttpo          # unique; [A-Za-z0-9_.-]
        search:              # optional: config keys swept, in Tune's vocabulary
          lr: {grid_search: [0.0001, 0.0003, 0.001]}
    scheduler: {grace_period: 1, name: asha, reduction_factor: 2}  # optional: asha, hyperband,
                             # pbt (with hyperparam_mutations and checkpoint.frequency >= 1)
    search_alg: {name: optuna, seed: 0}    # optional: Optuna's TPE over the runs' search ranges
    seeds: [0, 1]            # every search point runs once per seed
    stop: {iterations: 5}

Unknown keys, missing keys, duplicate keys and ill-typed values raise
:class:`~fttpo_ray.errors.ConfigError` naming the key (as a path such as
``runs[0].config.lr``) and the file. ``config`` keys are checked against the algorithm's own
default config: the key must exist there and the value must have the default's type (an
integer is accepted for a float). Numbers such as ``3e-4`` are read as floats (YAML 1.2), not
as strings as PyYAML's YAML 1.1 resolver would.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fttpo_ray import metrics as m
from fttpo_ray.defaults import EVALUATION_SEED
from fttpo_ray.errors import ConfigError, DatasetError
from fttpo_ray.tuning.trainables import KIND_RLLIB, algorithm_defaults, trainable_kind

# ---- top-level keys ------------------------------------------------------------------------
CHECKPOINT = "checkpoint"
DATASET = "dataset"
EVALUATION = "evaluation"
MAX_CONCURRENT = "max_concurrent"
MAX_FAILURES = "max_failures"
METRIC = "metric"
MLFLOW = "mlflow"
MODE = "mode"
NUM_SAMPLES = "num_samples"
RESOURCES = "resources"
RUNS = "runs"
SCHEDULER = "scheduler"
SEARCH_ALG = "search_alg"
SEEDS = "seeds"
STOP = "stop"

# ---- keys of the sections ------------------------------------------------------------------
AT_END = "at_end"
FREQUENCY = "frequency"
NUM_TO_KEEP = "num_to_keep"
ID = "id"
ENV = "env"
EPISODES = "episodes"
SEED = "seed"
EXPLORE = "explore"
INTERVAL = "interval"
LOG_CHECKPOINT = "log_checkpoint"
CPUS_PER_TRIAL = "cpus_per_trial"
ITERATIONS = "iterations"
TIME_S = "time_s"

# ---- schedulers and search algorithms (Tune's names: tune.create_scheduler / create_searcher) --
ASHA = "asha"
HYPERBAND = "hyperband"
PBT = "pbt"
SCHEDULER_NAMES = (ASHA, HYPERBAND, PBT)
#: Schedulers that pause or clone trials and so resume them from checkpoints.
CHECKPOINTING_SCHEDULERS = (HYPERBAND, PBT)
OPTUNA = "optuna"
SEARCH_ALG_NAMES = (OPTUNA,)
MODES = ("max", "min")
GRACE_PERIOD = "grace_period"
REDUCTION_FACTOR = "reduction_factor"
BRACKETS = "brackets"
MAX_T = "max_t"
PERTURBATION_INTERVAL = "perturbation_interval"
HYPERPARAM_MUTATIONS = "hyperparam_mutations"
QUANTILE_FRACTION = "quantile_fraction"
RESAMPLE_PROBABILITY = "resample_probability"
N_STARTUP_TRIALS = "n_startup_trials"
#: Keys allowed in `scheduler` / `search_alg`, besides `name`, per name.
SCHEDULER_KEYS = {
    ASHA: (BRACKETS, GRACE_PERIOD, MAX_T, REDUCTION_FACTOR),
    HYPERBAND: (MAX_T, REDUCTION_FACTOR),
    PBT: (HYPERPARAM_MUTATIONS, PERTURBATION_INTERVAL, QUANTILE_FRACTION, RESAMPLE_PROBABILITY),
}
SEARCH_ALG_KEYS = {OPTUNA: (N_STARTUP_TRIALS, SEED)}
#: Prefix of the evaluation metrics, reported only at evaluation iterations.
EVALUATION_METRIC_PREFIX = f"{m.EVALUATION_PREFIX}/"
#: Tune's own result keys that a scheduler may use.
TUNE_METRICS = ("training_iteration", "time_total_s")

# ---- keys of a run -------------------------------------------------------------------------
ALGORITHM = "algorithm"
CONFIG = "config"
NAME = "name"
SEARCH = "search"

# ---- Tune's search vocabulary ----------------------------------------------------------------
GRID_SEARCH = "grid_search"
CHOICE = "choice"
UNIFORM = "uniform"
LOGUNIFORM = "loguniform"
RANDINT = "randint"
#: Domains that list values (any type) and domains given as ``[low, high]`` bounds.
LIST_DOMAINS = (GRID_SEARCH, CHOICE)
RANGE_DOMAINS = (UNIFORM, LOGUNIFORM, RANDINT)
SEARCH_DOMAINS = LIST_DOMAINS + RANGE_DOMAINS

# ---- AlgorithmConfig fields that the YAML sets through its own sections ----------------------
#: ``config`` key -> the YAML key that sets it instead.
RESERVED_CONFIG_KEYS = {
    "seed": SEEDS,
    "env": f"{DATASET}.{ID}",
    "dataset_id": f"{DATASET}.{ID}",
    "input": f"{DATASET}.{ID}",
    "evaluation_interval": f"{EVALUATION}.{INTERVAL}",
    "evaluation_duration": f"{EVALUATION}.{EPISODES}",
    "evaluation_duration_unit": f"{EVALUATION}.{EPISODES}",
    "evaluation_seed": f"{EVALUATION}.{SEED}",
    "evaluation_explore": f"{EVALUATION}.{EXPLORE}",
    "custom_evaluation_function": EVALUATION,
}

RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")

DEFAULT_CHECKPOINT_FREQUENCY = 0
DEFAULT_NUM_TO_KEEP = 2
#: Restarts of a failed trial (Tune's ``FailureConfig.max_failures``; -1: no limit).
DEFAULT_MAX_FAILURES = 2
DEFAULT_CPUS_PER_TRIAL = 1

_SCALAR_TYPES = (bool, int, float, str)


# ---- data classes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchDomain:
    """One swept key: a Tune domain ``kind`` (``grid_search``, ``choice``, ...) and its values
    (the listed values, or the ``[low, high]`` bounds)."""

    kind: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class RunSpec:
    """One entry of ``runs``: an algorithm, its full config and the keys it sweeps."""

    name: str
    algorithm: str
    config: dict[str, Any]
    search: dict[str, SearchDomain] = field(default_factory=dict)
    #: YAML key -> key of the algorithm's ``to_dict()`` (they differ for properties such as
    #: ``train_batch_size_per_learner`` and ``model_config``, stored as ``_<name>``).
    dict_keys: dict[str, str] = field(default_factory=dict)

    def dict_key(self, key: str) -> str:
        """The ``to_dict()``/Tune config key of the YAML key ``key``."""
        return self.dict_keys.get(key, key)


@dataclass(frozen=True)
class DatasetSpec:
    """The dataset every run learns from; created on demand where the data layer can."""

    id: str
    env: str | None = None
    episodes: int | None = None
    seed: int = 0
    #: The ids combined into ``id`` when the YAML lists several (a mixture such as
    #: medium + expert; ``id`` is then :func:`fttpo_ray.data.remote.mixture_id` of them).
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationSpec:
    """Evaluation every ``interval`` iterations on ``episodes`` episodes seeded from ``seed``."""

    episodes: int
    interval: int = 1
    seed: int = EVALUATION_SEED
    explore: bool = True


@dataclass(frozen=True)
class CheckpointSpec:
    """Checkpoint every ``frequency`` iterations (0: never in between) and/or at the end."""

    frequency: int = DEFAULT_CHECKPOINT_FREQUENCY
    at_end: bool = True
    num_to_keep: int = DEFAULT_NUM_TO_KEEP


@dataclass(frozen=True)
class SchedulerSpec:
    """A Tune trial scheduler (:data:`SCHEDULER_NAMES`) in training iterations.

    ``max_t`` defaults to ``stop.iterations``; ``hyperparam_mutations`` (PBT) maps ``config``
    keys to the domain that a resampled value is drawn from.
    """

    name: str
    grace_period: int = 1
    reduction_factor: float = 2.0
    brackets: int = 1
    max_t: int | None = None
    perturbation_interval: int = 1
    hyperparam_mutations: dict[str, SearchDomain] = field(default_factory=dict)
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25


@dataclass(frozen=True)
class SearchAlgSpec:
    """A Tune search algorithm (:data:`SEARCH_ALG_NAMES`): Optuna's TPE sampler, seeded."""

    name: str
    seed: int | None = None
    n_startup_trials: int | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment YAML.

    ``datasets`` holds every dataset block (several make an environment axis: each run is
    swept on each); ``dataset`` is the first, the one ``fttpo train`` uses.
    """

    name: str
    path: Path
    dataset: DatasetSpec
    evaluation: EvaluationSpec
    runs: tuple[RunSpec, ...]
    seeds: tuple[int, ...]
    iterations: int
    time_s: float | None = None
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    num_samples: int = 1
    cpus_per_trial: float = DEFAULT_CPUS_PER_TRIAL
    max_concurrent: int = 0
    max_failures: int = DEFAULT_MAX_FAILURES
    log_checkpoint: bool = True
    raw: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[DatasetSpec, ...] = ()
    metric: str | None = None
    mode: str | None = None
    scheduler: SchedulerSpec | None = None
    search_alg: SearchAlgSpec | None = None

    def __post_init__(self) -> None:
        if not self.datasets:
            object.__setattr__(self, "datasets", (self.dataset,))

    def run(self, name: str | None = None) -> RunSpec:
        """The run called ``name`` (the first run when ``name`` is None)."""
        if name is None:
            return self.runs[0]
        for run in self.runs:
            if run.name == name:
                return run
        names = ", ".join(run.name for run in self.runs)
        raise ConfigError(f"{self.path}: no run named '{name}'; the runs are: {names}")


# ---- YAML loading -----------------------------------------------------------------------------

_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``3e-4`` as a float (YAML 1.2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _FLOAT_PATTERN, list("-+0123456789.")
)


def parse_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text with the strict loader; syntax errors become :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())
        raise ConfigError(f"{source}: invalid YAML: {detail}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment YAML file into a dict (not validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"experiment file '{path}' not found; give the path of a YAML such as "
            "tune_configs/quickstart.yaml"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read experiment file '{path}': {err.strerror}") from None
    data = parse_yaml_text(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


# ---- overrides (`fttpo train --set`) ------------------------------------------------------------


def apply_overrides(
    raw: dict[str, Any], overrides: Sequence[str], *, run: str | None = None, source: str = ""
) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a raw YAML dict (a copy is returned).

    A plain key (``lr=3e-4``) sets that key in the ``config`` of the run ``run`` (the first
    run by default); a dotted key (``stop.iterations=2``) sets a top-level section's key.
    Values are parsed as YAML (``1e-3`` is a float, ``true`` a bool, ``[1, 2]`` a list).
    """
    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. --set lr=3e-4); got '{item}'")
        value = parse_yaml_text(text, f"--set {key}")
        if "." in key:
            section, _, name = key.partition(".")
            target = data.setdefault(section, {})
            if not isinstance(target, dict) or "." in name:
                raise ConfigError(f"--set {key}: '{section}' is not a section of {source}")
            target[name] = value
            continue
        runs = data.get(RUNS)
        if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
            raise ConfigError(f"--set {key}: {source} has no valid `{RUNS}` list to apply it to")
        index = 0
        if run is not None:
            names = [r.get(NAME) for r in runs]
            if run not in names:
                raise ConfigError(f"{source}: no run named '{run}'; the runs are: {names}")
            index = names.index(run)
        config = runs[index].setdefault(CONFIG, {})
        if not isinstance(config, dict):
            raise ConfigError(
                f"--set {key}: `{RUNS}[{index}].{CONFIG}` of {source} is not a mapping"
            )
        if key not in config:
            raise ConfigError(
                f"--set {key}: unknown key; `{RUNS}[{index}].{CONFIG}` of {source} lists every "
                "hyper-parameter of the run, add it there first"
            )
        config[key] = value
    return data


# ---- validation -------------------------------------------------------------------------------


class _Checker:
    """Type checks that name the key path and the file in their errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.source}: `{key}` {message}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping; got {_show(value)}")
        for name in value:
            if not isinstance(name, str):
                self.fail(key, f"has a non-string key {_show(name)}")
        return value

    def keys(
        self, value: dict[str, Any], key: str, required: Sequence[str], optional: Sequence[str]
    ) -> None:
        allowed = set(required) | set(optional)
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                self.fail(where, f"is not a known key; allowed here: {', '.join(sorted(allowed))}")
        for name in required:
            if name not in value:
                where = f"{key}.{name}" if key else name
                self.fail(where, "is missing (required)")

    def integer(self, value: Any, key: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer; got {_show(value)}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}; got {value}")
        return int(value)

    def number(self, value: Any, key: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number; got {_show(value)}")
        if not math.isfinite(value):
            self.fail(key, f"must be finite; got {value}")
        if positive and value <= 0:
            self.fail(key, f"must be > 0; got {value}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false; got {_show(value)}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string; got {_show(value)}")
        return value


def _show(value: Any) -> str:
    text = repr(value)
    kind = type(value).__name__
    return f"{text[:80]} ({kind})" if len(text) <= 80 else f"{text[:77]}... ({kind})"


def config_value(default: Any, value: Any, key: str, check: _Checker) -> Any:
    """``value`` checked against the type of the algorithm's default ``default``.

    bool ↔ bool; int ↔ int; float ↔ int or float (returned as float); str ↔ str; tuple/list ↔
    list (returned as the default's sequence type); dict ↔ dict; ``None`` default ↔ any plain
    YAML value. Defaults of other types (classes, callables) cannot be set from a YAML.
    """
    if value is None:
        return None
    if default is None:
        if isinstance(value, (*_SCALAR_TYPES, list, dict)):
            return value
        check.fail(
            key, f"must be a plain value (number, string, list, mapping); got {_show(value)}"
        )
    if isinstance(default, bool):
        return check.boolean(value, key)
    if isinstance(default, int):
        return check.integer(value, key)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            check.fail(key, f"must be a number; got {_show(value)}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            check.fail(key, f"must be a string; got {_show(value)}")
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            check.fail(key, f"must be a list; got {_show(value)}")
        return tuple(value) if isinstance(default, tuple) else list(value)
    if isinstance(default, dict):
        return check.mapping(value, key)
    check.fail(key, f"cannot be set from a YAML (its default is a {type(default).__name__})")
    return None


def _search_domain(
    value: Any, key: str, default: Any, check: _Checker, known_default: bool
) -> SearchDomain:
    spec = check.mapping(value, key)
    if len(spec) != 1 or next(iter(spec)) not in SEARCH_DOMAINS:
        check.fail(
            key,
            f"must be one of {{{', '.join(f'{d}: ...' for d in SEARCH_DOMAINS)}}}; "
            f"got {_show(value)}",
        )
    kind, values = next(iter(spec.items()))
    where = f"{key}.{kind}"
    if not isinstance(values, list) or not values:
        check.fail(where, f"must be a non-empty list; got {_show(values)}")
    if kind in LIST_DOMAINS:
        items = [
            config_value(default, item, f"{where}[{i}]", check) if known_default else item
            for i, item in enumerate(values)
        ]
        return SearchDomain(kind, tuple(items))
    if len(values) != 2:
        check.fail(where, f"must be [low, high]; got {_show(values)}")
    if kind == RANDINT:
        low, high = (check.integer(v, f"{where}[{i}]") for i, v in enumerate(values))
        if known_default and default is not None and not isinstance(default, int):
            check.fail(key, f"is not an integer key; use {UNIFORM} or {LOGUNIFORM}")
    else:
        low, high = (check.number(v, f"{where}[{i}]") for i, v in enumerate(values))
        if (
            known_default
            and default is not None
            and (isinstance(default, bool) or not isinstance(default, float))
        ):
            check.fail(key, f"is not a float key; use {GRID_SEARCH}, {CHOICE} or {RANDINT}")
        if kind == LOGUNIFORM and low <= 0:
            check.fail(where, f"needs low > 0; got {low}")
    if not low < high:
        check.fail(where, f"needs low < high; got {values}")
    return SearchDomain(kind, (low, high))


def _run(value: Any, index: int, check: _Checker) -> RunSpec:
    key = f"{RUNS}[{index}]"
    run = check.mapping(value, key)
    check.keys(run, key, required=(ALGORITHM, CONFIG, NAME), optional=(SEARCH,))
    name = check.string(run[NAME], f"{key}.{NAME}")
    if not RUN_NAME_PATTERN.match(name):
        check.fail(f"{key}.{NAME}", f"may use only letters, digits, '_', '.', '-'; got '{name}'")
    algorithm = check.string(run[ALGORITHM], f"{key}.{ALGORITHM}")
    defaults = algorithm_defaults(algorithm, f"{key}.{ALGORITHM}", check)
    config_key = f"{key}.{CONFIG}"
    raw_config = check.mapping(run[CONFIG], config_key)
    config: dict[str, Any] = {}
    dict_keys: dict[str, str] = {}
    for name_, item in raw_config.items():
        where = f"{config_key}.{name_}"
        if name_ in RESERVED_CONFIG_KEYS:
            check.fail(
                where, f"is set by `{RESERVED_CONFIG_KEYS[name_]}`; remove it from `{CONFIG}`"
            )
        if defaults is None:
            if not isinstance(item, (*_SCALAR_TYPES, list, dict)) and item is not None:
                check.fail(where, f"must be a plain value; got {_show(item)}")
            config[name_] = item
            continue
        dict_key = _dict_key(name_, defaults)
        if dict_key is None:
            public = {k.lstrip("_"): v for k, v in defaults.items()}
            close = _close_matches(name_, public)
            hint = f" (did you mean {close}?)" if close else ""
            check.fail(where, f"is not a config field of {algorithm}{hint}")
        dict_keys[name_] = dict_key
        config[name_] = config_value(defaults[dict_key], item, where, check)
    search: dict[str, SearchDomain] = {}
    if SEARCH in run and run[SEARCH] is not None:
        search_key = f"{key}.{SEARCH}"
        for name_, item in check.mapping(run[SEARCH], search_key).items():
            where = f"{search_key}.{name_}"
            if name_ in RESERVED_CONFIG_KEYS:
                check.fail(where, f"is set by `{RESERVED_CONFIG_KEYS[name_]}`, not searched")
            if name_ not in config:
                check.fail(
                    where,
                    f"is not listed in `{config_key}`; list every hyper-parameter there with its "
                    "default (used by `fttpo train`) and sweep it here",
                )
            known = defaults is not None
            search[name_] = _search_domain(
                item, where, defaults.get(dict_keys[name_]) if known else None, check, known
            )
    return RunSpec(
        name=name, algorithm=algorithm, config=config, search=search, dict_keys=dict_keys
    )


def _dict_key(name: str, defaults: Mapping[str, Any]) -> str | None:
    """``name`` itself, or ``_<name>`` for config properties; None if neither is a field."""
    if name.startswith("_"):
        return None
    if name in defaults:
        return name
    if f"_{name}" in defaults:
        return f"_{name}"
    return None


def _close_matches(name: str, candidates: Mapping[str, Any]) -> str:
    import difflib

    return ", ".join(f"`{c}`" for c in difflib.get_close_matches(name, list(candidates), n=2))


def dataset_block(value: Any, key: str, check: _Checker) -> DatasetSpec:
    """One dataset block (``key`` is its path in errors: ``dataset`` or ``dataset[1]``)."""
    ds = check.mapping(value, key)
    check.keys(ds, key, required=(ID,), optional=(ENV, EPISODES, SEED))
    parts: tuple[str, ...] = ()
    if isinstance(ds[ID], list):
        # Several ids: their mixture (Minari's combine_datasets), under a derived local id.
        from fttpo_ray.data.remote import mixture_id

        parts = tuple(check.string(item, f"{key}.{ID}[{i}]") for i, item in enumerate(ds[ID]))
        if len(parts) < 2 or len(set(parts)) != len(parts):
            check.fail(f"{key}.{ID}", f"must list at least two different ids; got {list(parts)}")
        try:
            dataset_id = mixture_id(parts)
        except DatasetError as err:
            check.fail(f"{key}.{ID}", str(err))
    else:
        dataset_id = check.string(ds[ID], f"{key}.{ID}")
    return DatasetSpec(
        id=dataset_id,
        parts=parts,
        env=check.string(ds[ENV], f"{key}.{ENV}") if ds.get(ENV) is not None else None,
        episodes=(
            check.integer(ds[EPISODES], f"{key}.{EPISODES}", minimum=1)
            if ds.get(EPISODES) is not None
            else None
        ),
        seed=check.integer(ds.get(SEED, 0), f"{key}.{SEED}", minimum=0),
    )


def _datasets(value: Any, check: _Checker) -> tuple[DatasetSpec, ...]:
    """One dataset block, or a non-empty list of them with distinct ids (an environment axis)."""
    if not isinstance(value, list):
        return (dataset_block(value, DATASET, check),)
    if not value:
        check.fail(DATASET, "must be a dataset block or a non-empty list of dataset blocks")
    blocks = tuple(dataset_block(item, f"{DATASET}[{i}]", check) for i, item in enumerate(value))
    ids = [block.id for block in blocks]
    for i, block in enumerate(blocks):
        if ids.index(block.id) != i:
            check.fail(f"{DATASET}[{i}].{ID}", f"repeats dataset '{block.id}' of the list")
    return blocks


def _named_section(
    value: Any,
    section: str,
    names: Sequence[str],
    keys_by_name: Mapping[str, Sequence[str]],
    check: _Checker,
) -> tuple[Mapping[str, Any], str]:
    """A section chosen by its ``name`` (scheduler, search algorithm): the mapping and the name,
    with the name and the keys allowed for it checked."""
    mapping = check.mapping(value, section)
    key = f"{section}.{NAME}"
    if NAME not in mapping:
        check.fail(key, f"is missing (required): one of {', '.join(names)}")
    name = mapping[NAME]
    if name not in names:
        check.fail(key, f"must be one of {', '.join(names)}; got {_show(name)}")
    check.keys(mapping, section, required=(NAME,), optional=keys_by_name[name])
    return mapping, name


def _scheduler(value: Any, runs: Sequence[RunSpec], check: _Checker) -> SchedulerSpec:
    sc, name = _named_section(value, SCHEDULER, SCHEDULER_NAMES, SCHEDULER_KEYS, check)
    if name == PBT and HYPERPARAM_MUTATIONS not in sc:
        check.fail(f"{SCHEDULER}.{HYPERPARAM_MUTATIONS}", "is missing (required by pbt)")
    reduction = check.number(sc.get(REDUCTION_FACTOR, 2), f"{SCHEDULER}.{REDUCTION_FACTOR}")
    if reduction <= 1:
        check.fail(f"{SCHEDULER}.{REDUCTION_FACTOR}", f"must be > 1; got {reduction}")
    fraction = check.number(sc.get(QUANTILE_FRACTION, 0.25), f"{SCHEDULER}.{QUANTILE_FRACTION}")
    if not 0 < fraction <= 0.5:
        check.fail(f"{SCHEDULER}.{QUANTILE_FRACTION}", f"must be in (0, 0.5]; got {fraction}")
    resample = check.number(
        sc.get(RESAMPLE_PROBABILITY, 0.25), f"{SCHEDULER}.{RESAMPLE_PROBABILITY}"
    )
    if not 0 <= resample <= 1:
        check.fail(f"{SCHEDULER}.{RESAMPLE_PROBABILITY}", f"must be in [0, 1]; got {resample}")
    mutations: dict[str, SearchDomain] = {}
    if name == PBT:
        base = f"{SCHEDULER}.{HYPERPARAM_MUTATIONS}"
        items = check.mapping(sc[HYPERPARAM_MUTATIONS], base)
        if not items:
            check.fail(base, "must name at least one `config` key to perturb")
        for config_key, item in items.items():
            domain_key = f"{base}.{config_key}"
            for index, run in enumerate(runs):
                if config_key not in run.config:
                    check.fail(
                        domain_key,
                        f"is not a key of `{RUNS}[{index}].{CONFIG}` (run '{run.name}'); pbt "
                        "perturbs keys that every run lists there",
                    )
                defaults = algorithm_defaults(run.algorithm, f"{RUNS}[{index}]", check)
                default = defaults.get(run.dict_key(config_key)) if defaults else None
                domain = _search_domain(item, domain_key, default, check, defaults is not None)
            if domain.kind == GRID_SEARCH:
                check.fail(
                    f"{domain_key}.{GRID_SEARCH}",
                    f"is not a mutation; use {', '.join(SEARCH_DOMAINS[1:])}",
                )
            mutations[config_key] = domain
    return SchedulerSpec(
        name=name,
        grace_period=check.integer(sc.get(GRACE_PERIOD, 1), f"{SCHEDULER}.{GRACE_PERIOD}", 1),
        reduction_factor=reduction,
        brackets=check.integer(sc.get(BRACKETS, 1), f"{SCHEDULER}.{BRACKETS}", 1),
        max_t=(
            check.integer(sc[MAX_T], f"{SCHEDULER}.{MAX_T}", 1)
            if sc.get(MAX_T) is not None
            else None
        ),
        perturbation_interval=check.integer(
            sc.get(PERTURBATION_INTERVAL, 1), f"{SCHEDULER}.{PERTURBATION_INTERVAL}", 1
        ),
        hyperparam_mutations=mutations,
        quantile_fraction=fraction,
        resample_probability=resample,
    )


def _search_alg(value: Any, runs: Sequence[RunSpec], check: _Checker) -> SearchAlgSpec:
    sa, name = _named_section(value, SEARCH_ALG, SEARCH_ALG_NAMES, SEARCH_ALG_KEYS, check)
    for index, run in enumerate(runs):
        where = f"{RUNS}[{index}].{SEARCH}"
        if not run.search:
            check.fail(where, f"is empty: `{SEARCH_ALG}` {name} needs ranges to search")
        for config_key, domain in run.search.items():
            if domain.kind == GRID_SEARCH:
                check.fail(
                    f"{where}.{config_key}.{GRID_SEARCH}",
                    f"cannot be used with `{SEARCH_ALG}` {name} (it proposes the values); use "
                    f"{', '.join(SEARCH_DOMAINS[1:])}",
                )
    return SearchAlgSpec(
        name=name,
        seed=(
            check.integer(sa[SEED], f"{SEARCH_ALG}.{SEED}", 0) if sa.get(SEED) is not None else None
        ),
        n_startup_trials=(
            check.integer(sa[N_STARTUP_TRIALS], f"{SEARCH_ALG}.{N_STARTUP_TRIALS}", 1)
            if sa.get(N_STARTUP_TRIALS) is not None
            else None
        ),
    )


def _is_result_metric(name: str) -> bool:
    """Whether ``name`` has the form of a result key of ``docs/metrics.md``."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == m.EVALUATION_PREFIX:
        return parts[1] in m.POLICIES and bool(parts[2])
    if len(parts) == 2 and parts[0] == m.LEARNER_PREFIX:
        return bool(parts[1])
    return name in TUNE_METRICS


def _tuning(
    data: dict[str, Any],
    runs: Sequence[RunSpec],
    evaluation: EvaluationSpec,
    checkpoint: CheckpointSpec,
    check: _Checker,
) -> tuple[str | None, str | None, SchedulerSpec | None, SearchAlgSpec | None]:
    """``metric``, ``mode``, ``scheduler`` and ``search_alg``, checked together."""
    scheduler = (
        _scheduler(data[SCHEDULER], runs, check) if data.get(SCHEDULER) is not None else None
    )
    search_alg = (
        _search_alg(data[SEARCH_ALG], runs, check) if data.get(SEARCH_ALG) is not None else None
    )
    metric = check.string(data[METRIC], METRIC) if data.get(METRIC) is not None else None
    mode = data.get(MODE)
    if mode is not None and mode not in MODES:
        check.fail(MODE, f"must be one of {', '.join(MODES)}; got {_show(mode)}")
    users = [f"`{k}`" for k, v in ((SCHEDULER, scheduler), (SEARCH_ALG, search_alg)) if v]
    if users:
        for name, value in ((METRIC, metric), (MODE, mode)):
            if value is None:
                example = "evaluation/thin/episode_return_mean" if name == METRIC else "max"
                check.fail(
                    name, f"is missing: {' and '.join(users)} need it (e.g. {name}: {example})"
                )
    if metric is not None:
        plain_only = all(algorithm_defaults(r.algorithm, ALGORITHM, check) is None for r in runs)
        if not plain_only and not _is_result_metric(metric):
            check.fail(
                METRIC,
                "must be a metric of docs/metrics.md: evaluation/<policy>/<name> (policy: "
                f"{', '.join(m.POLICIES)}), learner/<name>, {', '.join(TUNE_METRICS)}; "
                f"got {_show(metric)}",
            )
        fat_prefix = f"{EVALUATION_METRIC_PREFIX}{m.FAT}/"
        for index, run in enumerate(runs):
            rllib = trainable_kind(run.algorithm) == KIND_RLLIB
            if users and rllib and not (metric.startswith(fat_prefix) or metric in TUNE_METRICS):
                check.fail(
                    METRIC,
                    f"is not in the results of `{RUNS}[{index}]` ({run.algorithm}: RLlib's "
                    f"algorithms report their policy as {fat_prefix}<name>); got {_show(metric)}",
                )
        if metric.startswith(EVALUATION_METRIC_PREFIX) and evaluation.interval != 1 and users:
            check.fail(
                f"{EVALUATION}.{INTERVAL}",
                f"must be 1 when {' and '.join(users)} use(s) the evaluation metric `{metric}` "
                f"(Tune reads it from every result); got {evaluation.interval}",
            )
    if scheduler is not None:
        if scheduler.name in CHECKPOINTING_SCHEDULERS and checkpoint.frequency < 1:
            check.fail(
                f"{CHECKPOINT}.{FREQUENCY}",
                f"must be >= 1 with `{SCHEDULER}` {scheduler.name}: it resumes trials from "
                f"checkpoints (got {checkpoint.frequency})",
            )
        if scheduler.name == PBT and search_alg is not None:
            check.fail(
                SEARCH_ALG,
                f"cannot be combined with `{SCHEDULER}` pbt (pbt perturbs the configs itself); "
                "remove one",
            )
    return metric, mode, scheduler, search_alg


def validate_experiment(data: dict[str, Any], path: str | Path) -> ExperimentSpec:
    """Validate a raw experiment dict; ``path`` names the file in errors and the experiment.

    Each run's ``config`` is checked against its algorithm's default config
    (:func:`fttpo_ray.tuning.trainables.algorithm_defaults`; a plain trainable has none).
    """
    path = Path(path)
    check = _Checker(str(path))
    check.mapping(data, "")
    check.keys(
        data,
        "",
        required=(DATASET, EVALUATION, RUNS, SEEDS, STOP),
        optional=(
            CHECKPOINT,
            MAX_CONCURRENT,
            MAX_FAILURES,
            METRIC,
            MLFLOW,
            MODE,
            NUM_SAMPLES,
            RESOURCES,
            SCHEDULER,
            SEARCH_ALG,
        ),
    )

    datasets = _datasets(data[DATASET], check)

    ev = check.mapping(data[EVALUATION], EVALUATION)
    check.keys(ev, EVALUATION, required=(EPISODES,), optional=(EXPLORE, INTERVAL, SEED))
    evaluation = EvaluationSpec(
        episodes=check.integer(ev[EPISODES], f"{EVALUATION}.{EPISODES}", minimum=1),
        interval=check.integer(ev.get(INTERVAL, 1), f"{EVALUATION}.{INTERVAL}", minimum=1),
        seed=check.integer(ev.get(SEED, EVALUATION_SEED), f"{EVALUATION}.{SEED}", minimum=0),
        explore=check.boolean(ev.get(EXPLORE, True), f"{EVALUATION}.{EXPLORE}"),
    )

    st = check.mapping(data[STOP], STOP)
    check.keys(st, STOP, required=(ITERATIONS,), optional=(TIME_S,))
    iterations = check.integer(st[ITERATIONS], f"{STOP}.{ITERATIONS}", minimum=1)
    time_s = (
        check.number(st[TIME_S], f"{STOP}.{TIME_S}", positive=True)
        if st.get(TIME_S) is not None
        else None
    )

    seeds_raw = data[SEEDS]
    if not isinstance(seeds_raw, list) or not seeds_raw:
        check.fail(SEEDS, f"must be a non-empty list of integers; got {_show(seeds_raw)}")
    seeds = tuple(check.integer(s, f"{SEEDS}[{i}]", minimum=0) for i, s in enumerate(seeds_raw))
    if len(set(seeds)) != len(seeds):
        check.fail(SEEDS, f"has repeated seeds: {list(seeds)}")

    checkpoint = CheckpointSpec()
    if data.get(CHECKPOINT) is not None:
        ck = check.mapping(data[CHECKPOINT], CHECKPOINT)
        check.keys(ck, CHECKPOINT, required=(), optional=(AT_END, FREQUENCY, NUM_TO_KEEP))
        checkpoint = CheckpointSpec(
            frequency=check.integer(
                ck.get(FREQUENCY, DEFAULT_CHECKPOINT_FREQUENCY), f"{CHECKPOINT}.{FREQUENCY}", 0
            ),
            at_end=check.boolean(ck.get(AT_END, True), f"{CHECKPOINT}.{AT_END}"),
            num_to_keep=check.integer(
                ck.get(NUM_TO_KEEP, DEFAULT_NUM_TO_KEEP), f"{CHECKPOINT}.{NUM_TO_KEEP}", 1
            ),
        )

    log_checkpoint = True
    if data.get(MLFLOW) is not None:
        ml = check.mapping(data[MLFLOW], MLFLOW)
        check.keys(ml, MLFLOW, required=(), optional=(LOG_CHECKPOINT,))
        log_checkpoint = check.boolean(ml.get(LOG_CHECKPOINT, True), f"{MLFLOW}.{LOG_CHECKPOINT}")

    cpus_per_trial: float = DEFAULT_CPUS_PER_TRIAL
    if data.get(RESOURCES) is not None:
        rs = check.mapping(data[RESOURCES], RESOURCES)
        check.keys(rs, RESOURCES, required=(), optional=(CPUS_PER_TRIAL,))
        cpus_per_trial = check.number(
            rs.get(CPUS_PER_TRIAL, DEFAULT_CPUS_PER_TRIAL),
            f"{RESOURCES}.{CPUS_PER_TRIAL}",
            positive=True,
        )

    num_samples = check.integer(data.get(NUM_SAMPLES, 1), NUM_SAMPLES, minimum=1)
    max_concurrent = check.integer(data.get(MAX_CONCURRENT, 0), MAX_CONCURRENT, minimum=0)

    runs_raw = data[RUNS]
    if not isinstance(runs_raw, list) or not runs_raw:
        check.fail(RUNS, f"must be a non-empty list of runs; got {_show(runs_raw)}")
    runs = tuple(_run(item, i, check) for i, item in enumerate(runs_raw))
    names = [run.name for run in runs]
    for name in names:
        if names.count(name) > 1:
            check.fail(RUNS, f"has two runs named '{name}'; run names must be unique")

    metric, mode, scheduler, search_alg = _tuning(data, runs, evaluation, checkpoint, check)

    return ExperimentSpec(
        name=path.stem,
        path=path,
        dataset=datasets[0],
        evaluation=evaluation,
        runs=runs,
        seeds=seeds,
        iterations=iterations,
        time_s=time_s,
        checkpoint=checkpoint,
        num_samples=num_samples,
        cpus_per_trial=cpus_per_trial,
        max_concurrent=max_concurrent,
        max_failures=check.integer(data.get(MAX_FAILURES, DEFAULT_MAX_FAILURES), MAX_FAILURES, -1),
        log_checkpoint=log_checkpoint,
        raw=copy.deepcopy(data),
        datasets=datasets,
        metric=metric,
        mode=mode,
        scheduler=scheduler,
        search_alg=search_alg,
    )


def load_experiment(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    run: str | None = None,
) -> ExperimentSpec:
    """Read, override (``key=value`` strings, see :func:`apply_overrides`) and validate a YAML."""
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides, run=run, source=str(path))
    return validate_experiment(data, path)
