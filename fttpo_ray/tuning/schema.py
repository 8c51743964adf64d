"""The experiment YAML (``tune_configs/*.yaml``): loading and strict validation.

One file describes one experiment — one MLflow experiment named after the file. Its schema
(version 1; documented with examples in ``docs/tuning.md``)::

    checkpoint: {at_end: true, frequency: 1, num_to_keep: 2}       # optional
    dataset: {episodes: 50, env: fttpo/TreatmentSim-v0, id: fttpo/treatment/random-v0, seed: 0,
              held_out_fraction: 0.2, split_seed: 0}   # the split: every run trains on the same
    # or a list of such blocks: an environment axis (one Tune experiment per run and dataset)
    # `id` may list several ids (medium + expert): their mixture, combined once (docs/datasets.md)
    defaults:                # optional: config keys shared by every run of an algorithm
      FtTPO: {gamma: 0.9}
    evaluation: {episodes: 20, explore: true, interval: 1, seed: 1000000}
    max_concurrent: 0        # optional: trials at once (0 = as many as the CPUs allow)
    max_failures: 2          # optional: restarts of a failed trial (-1: without limit)
    metric: evaluation/thin/episode_return_mean   # what a scheduler / search_alg optimises
    mlflow: {log_checkpoint: true}                                  # optional
    mode: max                # with metric: max or min
    num_samples: 1           # optional: Tune's repeats of the search / configurations proposed
    resources: {cpus_per_trial: 1, reuse_actors: true}              # optional
    runs:                    # one Tune experiment per run, all in the same MLflow experiment
      - algorithm: FtTPO     # a Tune/RLlib trainable name: FtTPO, IQL, CQL, BC, MARWIL, ...
        config: {...}        # optional: what differs from `defaults` and the algorithm's config
        name: fttpo          # unique; [A-Za-z0-9_.-]
        search:              # optional: config keys swept, in Tune's vocabulary
          lr: {grid_search: [0.0001, 0.0003, 0.001]}
    scheduler: {grace_period: 1, name: asha, reduction_factor: 2}  # optional: asha, hyperband, pbt
    search_alg: {name: optuna, seed: 0}    # optional: Optuna's TPE over the runs' search ranges
    seeds: [0, 1]            # every search point runs once per seed
    stop: {iterations: 5}

The sections are pydantic models (strict: no coercion, unknown keys rejected); a run's config is
validated by a model built from its algorithm's default config (the key must be a field there
and the value must have the default's type; an integer is accepted for a float). Every error is
one :class:`~fttpo_ray.errors.ConfigError` line naming the file, the key path (such as
``runs[0].config.lr``), the bad value and what is valid. Numbers such as ``3e-4`` are read as
floats (YAML 1.2), not as strings as PyYAML's YAML 1.1 resolver would.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fttpo_ray import metrics as m
from fttpo_ray.algorithms.offline_data import DEFAULT_HELD_OUT_FRACTION, DEFAULT_SPLIT_SEED
from fttpo_ray.defaults import EVALUATION_SEED
from fttpo_ray.errors import ConfigError, DatasetError
from fttpo_ray.tuning.trainables import KIND_RLLIB, algorithm_defaults, trainable_kind

logger = logging.getLogger(__name__)

# ---- top-level keys ------------------------------------------------------------------------
CHECKPOINT = "checkpoint"
DATASET = "dataset"
DEFAULTS = "defaults"
EVALUATION = "evaluation"
METRIC = "metric"
MODE = "mode"
RUNS = "runs"
SCHEDULER = "scheduler"
SEARCH_ALG = "search_alg"
SEEDS = "seeds"

# ---- keys of the sections ------------------------------------------------------------------
FREQUENCY = "frequency"
ID = "id"
SEED = "seed"
EPISODES = "episodes"
FINAL_EPISODES = "final_episodes"
EXPLORE = "explore"
INTERVAL = "interval"
HELD_OUT_FRACTION = "held_out_fraction"
SPLIT_SEED = "split_seed"
PARTS = "parts"

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

# ---- plausibility (warnings, not errors) -----------------------------------------------------
#: A config key named ``lr`` or ending in ``_lr`` is a learning rate (RLlib's ``lr``, FtTPO's and
#: CQL's ``actor_lr``, ``critic_lr``, ...).
LEARNING_RATE_KEY = "lr"
#: Learning rates above this are accepted with a warning: almost surely a typo (``1e6`` for
#: ``1e-6``); Adam's steps are of the order of the learning rate.
MAX_PLAUSIBLE_LEARNING_RATE = 1.0

# ---- AlgorithmConfig fields that the YAML sets through its own sections ----------------------
#: ``config`` key -> the YAML key that sets it instead.
RESERVED_CONFIG_KEYS = {
    "seed": SEEDS,
    "env": f"{DATASET}.{ID}",
    "dataset_id": f"{DATASET}.{ID}",
    "input": f"{DATASET}.{ID}",
    HELD_OUT_FRACTION: f"{DATASET}.{HELD_OUT_FRACTION}",
    SPLIT_SEED: f"{DATASET}.{SPLIT_SEED}",
    "evaluation_interval": f"{EVALUATION}.{INTERVAL}",
    "evaluation_duration": f"{EVALUATION}.{EPISODES}",
    "evaluation_duration_unit": f"{EVALUATION}.{EPISODES}",
    "evaluation_seed": f"{EVALUATION}.{SEED}",
    "evaluation_explore": f"{EVALUATION}.{EXPLORE}",
    "evaluation_final_episodes": f"{EVALUATION}.{FINAL_EPISODES}",
    "evaluation_final_iteration": f"{EVALUATION}.{FINAL_EPISODES}",
    "custom_evaluation_function": EVALUATION,
}

RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")

DEFAULT_CHECKPOINT_FREQUENCY = 0
DEFAULT_NUM_TO_KEEP = 2
#: Restarts of a failed trial (Tune's ``FailureConfig.max_failures``; -1: no limit).
DEFAULT_MAX_FAILURES = 2
DEFAULT_CPUS_PER_TRIAL = 1

_SCALAR_TYPES = (bool, int, float, str)
#: pydantic's error type of the errors raised here (their message is the ``message`` context).
_OWN_ERROR = "fttpo_config"


# ---- one-line errors ---------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    kind = type(value).__name__
    return f"{text[:80]} ({kind})" if len(text) <= 80 else f"{text[:77]}... ({kind})"


def _error(message: str, key: str | None = None) -> PydanticCustomError:
    """An error of a validator: ``message`` about the value, or about its key ``key``."""
    context = {"message": message} if key is None else {"message": message, "key": key}
    return PydanticCustomError(_OWN_ERROR, "{message}", context)


def _path(loc: Sequence[Any], prefix: str = "") -> str:
    """``runs[0].config.lr`` from pydantic's location ``('runs', 0, 'config', 'lr')``."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else str(part)
    return text


#: pydantic's error types -> our message about the value (``got`` appended).
_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "finite_number": "must be finite",
}


def _message(error: Mapping[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == _OWN_ERROR:
        return ctx["message"]
    if kind == "missing":
        return "is missing (required)"
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]}; got {_show(value)}"
    for bound, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"must be {sign} {ctx[bound]}; got {value}"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}; got {_show(value)}"


def _config_error(
    err: ValidationError, source: str, prefix: str = "", *, single: str = "", skip: int = 0
) -> ConfigError:
    """The first error of ``err`` as one line: the file, the key path and the message
    (``single``: a top-level key that holds one block where a list is accepted, as
    ``dataset``: its errors name ``dataset.id``, not ``dataset[0].id``; ``skip``: leading
    parts of pydantic's location that ``prefix`` already names)."""
    first = err.errors()[0]
    loc = list(first["loc"])[skip:]
    if single and loc[:2] == [single, 0]:
        del loc[1]
    if first["type"] == _OWN_ERROR and "key" in (first.get("ctx") or {}):
        loc.append(first["ctx"]["key"])
    return ConfigError(f"{source}: `{_path(loc, prefix)}` {_message(first)}")


def _did_you_mean(name: str, candidates: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=2)
    return f" (did you mean {', '.join(f'`{c}`' for c in close)}?)" if close else ""


# ---- value types -------------------------------------------------------------------------------


def _non_empty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _error(f"must be a non-empty string; got {_show(value)}")
    return value


def _one_of(names: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in names:
            raise _error(f"must be one of {', '.join(names)}; got {_show(value)}")
        return value

    return check


def _interval(low: float, high: float, *, low_open: bool, high_open: bool) -> AfterValidator:
    """``low < / <= value < / <= high``, reported as ``must be in [low, high)``."""

    def check(value: float) -> float:
        if (value <= low if low_open else value < low) or (
            value >= high if high_open else value > high
        ):
            brackets = ("(" if low_open else "[", ")" if high_open else "]")
            raise _error(f"must be in {brackets[0]}{low:g}, {high:g}{brackets[1]}; got {value}")
        return value

    return AfterValidator(check)


def _non_empty_list(what: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise _error(f"must be a non-empty list of {what}; got {_show(value)}")
        return value

    return BeforeValidator(check)


NonEmptyStr = Annotated[str, BeforeValidator(_non_empty_string)]
Number = Annotated[float, Field(allow_inf_nan=False)]
PositiveNumber = Annotated[float, Field(allow_inf_nan=False, gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
Mode = Annotated[str, BeforeValidator(_one_of(MODES))]


class Section(BaseModel):
    """A YAML mapping: string keys, each a known key (the error lists them and suggests the
    closest), values of exactly the annotated types (no coercion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @classmethod
    def allowed_keys(cls, data: Mapping[str, Any]) -> Collection[str]:
        """The keys this mapping may hold (all its fields unless a subclass says otherwise)."""
        return cls.model_fields

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _error(f"must be a mapping; got {_show(data)}")
        for key in data:
            if not isinstance(key, str):
                raise _error(f"has a non-string key {_show(key)}")
        allowed = sorted(cls.allowed_keys(data))
        for key in data:
            if key not in allowed:
                raise _error(
                    f"is not a known key; allowed here: {', '.join(allowed)}"
                    f"{_did_you_mean(key, allowed)}",
                    key,
                )
        return cls.prepare(data)

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The mapping as the fields read it (a subclass may derive fields); its keys are known."""
        return data


# ---- the sections (also the validated spec the tuning modules read) ---------------------------


@dataclass(frozen=True)
class SearchDomain:
    """One swept key: a Tune domain ``kind`` (``grid_search``, ``choice``, ...) and its values
    (the listed values, or the ``[low, high]`` bounds)."""

    kind: str
    values: tuple[Any, ...]


class DatasetSpec(Section):
    """The dataset every run learns from (created on demand where the data layer can) and its
    split: the share of episodes held out from training and its seed, the same for every run."""

    id: str
    env: NonEmptyStr | None = None
    episodes: PositiveInt | None = None
    seed: NonNegativeInt = 0
    held_out_fraction: Annotated[float, _interval(0.0, 1.0, low_open=False, high_open=True)] = (
        DEFAULT_HELD_OUT_FRACTION
    )
    split_seed: NonNegativeInt = DEFAULT_SPLIT_SEED
    #: The ids combined into ``id`` when the YAML lists several (a mixture such as
    #: medium + expert; ``id`` is then :func:`fttpo_ray.data.remote.mixture_id` of them).
    parts: tuple[str, ...] = ()

    @classmethod
    def allowed_keys(cls, data: Mapping[str, Any]) -> Collection[str]:
        return [key for key in cls.model_fields if key != PARTS]

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Several ids: their mixture (Minari's combine_datasets), under a derived local id."""
        if not isinstance(data.get(ID), list):
            if ID in data:
                try:
                    _non_empty_string(data[ID])
                except PydanticCustomError as err:
                    raise _error(err.context["message"], ID) from None
            return data
        from fttpo_ray.data.remote import mixture_id

        parts = tuple(data[ID])
        for index, item in enumerate(parts):
            if not isinstance(item, str) or not item.strip():
                raise _error(f"must be a non-empty string; got {_show(item)}", f"{ID}[{index}]")
        if len(parts) < 2 or len(set(parts)) != len(parts):
            raise _error(f"must list at least two different ids; got {list(parts)}", ID)
        try:
            return {**data, ID: mixture_id(parts), PARTS: parts}
        except DatasetError as err:
            raise _error(str(err), ID) from None


class EvaluationSpec(Section):
    """Evaluation every ``interval`` iterations on ``episodes`` episodes seeded from ``seed``;
    with ``final_episodes``, the last iteration (``stop.iterations``) evaluates on that many
    (the result a report reads), the others on ``episodes`` (learning curves)."""

    episodes: PositiveInt
    interval: PositiveInt = 1
    seed: NonNegativeInt = EVALUATION_SEED
    explore: bool = True
    final_episodes: PositiveInt | None = None


class CheckpointSpec(Section):
    """Checkpoint every ``frequency`` iterations (0: never in between) and/or at the end."""

    frequency: NonNegativeInt = DEFAULT_CHECKPOINT_FREQUENCY
    at_end: bool = True
    num_to_keep: PositiveInt = DEFAULT_NUM_TO_KEEP


class _Named(Section):
    """A section chosen by its ``name`` (scheduler, search algorithm), whose keys depend on it."""

    NAMES: ClassVar[tuple[str, ...]] = ()
    KEYS: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def allowed_keys(cls, data: Mapping[str, Any]) -> Collection[str]:
        if NAME not in data:
            raise _error(f"is missing (required): one of {', '.join(cls.NAMES)}", NAME)
        if data[NAME] not in cls.NAMES:
            raise _error(f"must be one of {', '.join(cls.NAMES)}; got {_show(data[NAME])}", NAME)
        return (NAME, *cls.KEYS[data[NAME]])


class SchedulerSpec(_Named):
    """A Tune trial scheduler (:data:`SCHEDULER_NAMES`) in training iterations.

    ``max_t`` defaults to ``stop.iterations``; ``hyperparam_mutations`` (PBT) maps ``config``
    keys to the domain that a resampled value is drawn from.
    """

    NAMES: ClassVar[tuple[str, ...]] = SCHEDULER_NAMES
    KEYS: ClassVar[dict[str, tuple[str, ...]]] = SCHEDULER_KEYS

    name: str
    grace_period: PositiveInt = 1
    reduction_factor: Annotated[Number, AfterValidator(lambda v: _greater(v, 1))] = 2.0
    brackets: PositiveInt = 1
    max_t: PositiveInt | None = None
    perturbation_interval: PositiveInt = 1
    hyperparam_mutations: dict[str, Any] = {}
    quantile_fraction: Annotated[Number, _interval(0.0, 0.5, low_open=True, high_open=False)] = 0.25
    resample_probability: Annotated[
        Number, _interval(0.0, 1.0, low_open=False, high_open=False)
    ] = 0.25

    @model_validator(mode="after")
    def _pbt_mutations(self) -> SchedulerSpec:
        if self.name == PBT and not self.hyperparam_mutations:
            if HYPERPARAM_MUTATIONS not in self.model_fields_set:
                raise _error("is missing (required by pbt)", HYPERPARAM_MUTATIONS)
            raise _error("must name at least one `config` key to perturb", HYPERPARAM_MUTATIONS)
        return self


def _greater(value: float, low: float) -> float:
    if value <= low:
        raise _error(f"must be > {low}; got {value}")
    return value


class SearchAlgSpec(_Named):
    """A Tune search algorithm (:data:`SEARCH_ALG_NAMES`): Optuna's TPE sampler, seeded."""

    NAMES: ClassVar[tuple[str, ...]] = SEARCH_ALG_NAMES
    KEYS: ClassVar[dict[str, tuple[str, ...]]] = SEARCH_ALG_KEYS

    name: str
    seed: NonNegativeInt | None = None
    n_startup_trials: PositiveInt | None = None


class _Stop(Section):
    iterations: PositiveInt
    time_s: PositiveNumber | None = None


class _Mlflow(Section):
    log_checkpoint: bool = True


class _Resources(Section):
    cpus_per_trial: PositiveNumber = DEFAULT_CPUS_PER_TRIAL
    reuse_actors: bool = True


def _run_name(value: Any) -> str:
    name = _non_empty_string(value)
    if not RUN_NAME_PATTERN.match(name):
        raise _error(f"may use only letters, digits, '_', '.', '-'; got '{name}'")
    return name


class _Run(Section):
    algorithm: NonEmptyStr
    config: dict[str, Any] = {}
    name: Annotated[str, BeforeValidator(_run_name)]
    search: dict[str, Any] | None = None


def _dataset_blocks(value: Any) -> Any:
    if isinstance(value, list) and not value:
        raise _error("must be a dataset block or a non-empty list of dataset blocks")
    return value if isinstance(value, list) else [value]


def _distinct(values: list[int]) -> list[int]:
    if len(set(values)) != len(values):
        raise _error(f"has repeated seeds: {values}")
    return values


class _Experiment(Section):
    """The whole file, as written (runs not yet checked against their algorithms)."""

    checkpoint: CheckpointSpec | None = None
    dataset: Annotated[list[DatasetSpec], BeforeValidator(_dataset_blocks)]
    defaults: dict[str, dict[str, Any]] = {}
    evaluation: EvaluationSpec
    max_concurrent: NonNegativeInt = 0
    max_failures: Annotated[int, Field(ge=-1)] = DEFAULT_MAX_FAILURES
    metric: NonEmptyStr | None = None
    mlflow: _Mlflow | None = None
    mode: Mode | None = None
    num_samples: PositiveInt = 1
    resources: _Resources | None = None
    runs: Annotated[list[_Run], _non_empty_list("runs")]
    scheduler: SchedulerSpec | None = None
    search_alg: SearchAlgSpec | None = None
    seeds: Annotated[list[NonNegativeInt], _non_empty_list("integers"), AfterValidator(_distinct)]
    stop: _Stop


@dataclass(frozen=True)
class RunSpec:
    """One entry of ``runs``: an algorithm, its config (the ``defaults`` of its algorithm, then
    its own ``config``; the algorithm's default config for the rest) and the keys it sweeps."""

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
    reuse_actors: bool = True
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
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"{source}{_yaml_error(err)}") from None
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())
        raise ConfigError(f"{source}: invalid YAML: {detail}") from None


def _at(mark: Any) -> str:
    """``line L, column C`` of a PyYAML mark (counted from 1)."""
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_error(err: Any) -> str:
    """``, line L, column C: invalid YAML: <problem> (<context> at line L', column C')``: the
    position in the file the caller names, instead of PyYAML's ``"<unicode string>"``."""
    mark = err.problem_mark or err.context_mark
    where = f", {_at(mark)}" if mark is not None else ""
    problem = " ".join((err.problem or err.context or "syntax error").split())
    context = ""
    if err.problem and err.context:
        context_at = f" that starts at {_at(err.context_mark)}" if err.context_mark else ""
        context = f" ({' '.join(err.context.split())}{context_at})"
    return f"{where}: invalid YAML: {problem}{context}"


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
    run by default; any config field of its algorithm, checked when the YAML is validated); a
    dotted key (``stop.iterations=2``) sets a top-level section's key. Values are parsed as
    YAML (``1e-3`` is a float, ``true`` a bool, ``[1, 2]`` a list).
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
        config[key] = value
    return data


# ---- a run's config, checked against its algorithm's default config --------------------------


def _plain_value(value: Any) -> Any:
    if value is not None and not isinstance(value, (*_SCALAR_TYPES, list, dict)):
        raise _error(f"must be a plain value (number, string, list, mapping); got {_show(value)}")
    return value


def _not_settable(default: Any) -> AfterValidator:
    def check(value: Any) -> Any:
        raise _error(f"cannot be set from a YAML (its default is a {type(default).__name__})")

    return AfterValidator(check)


def _field_type(default: Any) -> Any:
    """The type a YAML value of a config field must have, from the field's default: bool, int,
    float (an int is accepted), str, list (a tuple default gets a tuple), mapping; any plain
    value when the default is None; ``None`` is always accepted."""
    if default is None:
        kind: Any = Annotated[Any, AfterValidator(_plain_value)]
    elif isinstance(default, (bool, int, float, str, dict)):
        kind = dict[str, Any] if isinstance(default, dict) else type(default)
    elif isinstance(default, (list, tuple)):
        kind = Annotated[list[Any], AfterValidator(type(default))]
    else:
        kind = Annotated[Any, _not_settable(default)]
    return kind | None


class _AlgorithmFields(BaseModel):
    """Base of the model of one algorithm's config fields (built by :func:`fields_model`)."""

    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())
    ALGORITHM: ClassVar[str] = ""
    #: YAML key -> the field's default, its ``to_dict()`` key, and its name in this model.
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    DICT_KEYS: ClassVar[dict[str, str]] = {}
    FIELD_NAMES: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _error(f"must be a mapping; got {_show(data)}")
        for key in data:
            if key in RESERVED_CONFIG_KEYS:
                raise _error(
                    f"is set by `{RESERVED_CONFIG_KEYS[key]}`; remove it from `{CONFIG}`", key
                )
            if key not in cls.DEFAULTS:
                hint = _did_you_mean(str(key), cls.DEFAULTS)
                raise _error(f"is not a config field of {cls.ALGORITHM}{hint}", key)
        return data


@cache
def fields_model(algorithm: str) -> type[_AlgorithmFields] | None:
    """A pydantic model of the config fields of ``algorithm``, typed by its default config
    (:func:`fttpo_ray.tuning.trainables.algorithm_defaults`; None for a plain trainable).

    A config property stored as ``_<name>`` in ``to_dict()`` (``model_config``,
    ``train_batch_size_per_learner``) is the YAML key ``<name>``.
    """
    defaults = algorithm_defaults(algorithm)
    if defaults is None:
        return None
    dict_keys = {key[1:]: key for key in defaults if key.startswith("_") and key[1:2] != "_"}
    dict_keys.update({key: key for key in defaults if not key.startswith("_")})
    names = {key: f"field_{i}" for i, key in enumerate(sorted(dict_keys))}
    fields = {
        names[key]: (_field_type(defaults[dict_key]), Field(None, alias=key))
        for key, dict_key in dict_keys.items()
    }
    model = create_model(f"{algorithm}Fields", __base__=_AlgorithmFields, **fields)
    model.ALGORITHM = algorithm
    model.DEFAULTS = {key: defaults[dict_key] for key, dict_key in dict_keys.items()}
    model.DICT_KEYS = dict_keys
    model.FIELD_NAMES = names
    return model


def _check_config(
    values: dict[str, Any],
    model: type[_AlgorithmFields] | None,
    where: str,
    source: str,
    *,
    skip: int = 0,
) -> dict[str, Any]:
    """``values`` (a run's config, keys in YAML order) checked by its algorithm's model
    (``where`` names the mapping in errors; with ``skip=1``, the one value checked)."""
    if model is None:
        for key, value in values.items():
            reserved = RESERVED_CONFIG_KEYS.get(key)
            if reserved:
                raise ConfigError(
                    f"{source}: `{where}.{key}` is set by `{reserved}`; remove it from `{CONFIG}`"
                )
            if value is not None and not isinstance(value, (*_SCALAR_TYPES, list, dict)):
                raise ConfigError(
                    f"{source}: `{where}.{key}` must be a plain value; got {_show(value)}"
                )
        return dict(values)
    try:
        checked = model.model_validate(values)
    except ValidationError as err:
        raise _config_error(err, source, where, skip=skip) from None
    result = {key: getattr(checked, model.FIELD_NAMES[key]) for key in values}
    if not skip:
        for key, value in result.items():
            _warn_implausible(key, value, f"{where}.{key}", source)
    return result


def _is_learning_rate(key: str) -> bool:
    return key == LEARNING_RATE_KEY or key.endswith(f"_{LEARNING_RATE_KEY}")


def _warn_implausible(key: str, value: Any, where: str, source: str) -> None:
    """Log a warning for a valid but implausible value: a learning rate above
    :data:`MAX_PLAUSIBLE_LEARNING_RATE`."""
    if (
        _is_learning_rate(key)
        and _number(value, integer=False)
        and math.isfinite(value)
        and value > MAX_PLAUSIBLE_LEARNING_RATE
    ):
        logger.warning(
            "%s: `%s` = %r is a learning rate above %r, almost surely a typo (typical values: "
            "1e-5 to 1e-2); training will likely diverge",
            source,
            where,
            value,
            MAX_PLAUSIBLE_LEARNING_RATE,
        )


def _number(value: Any, integer: bool) -> bool:
    return not isinstance(value, bool) and isinstance(value, int if integer else (int, float))


def _search_domain(
    value: Any, where: str, model: type[_AlgorithmFields] | None, key: str, source: str
) -> SearchDomain:
    """One entry of a run's ``search`` (or of PBT's mutations), its values checked like the
    config value of ``key``."""

    def fail(path: str, message: str) -> None:
        raise ConfigError(f"{source}: `{path}` {message}")

    if model is not None and key not in model.DEFAULTS:
        hint = _did_you_mean(key, model.DEFAULTS)
        fail(where, f"is not a config field of {model.ALGORITHM}{hint}")
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in SEARCH_DOMAINS:
        options = ", ".join(f"{d}: ..." for d in SEARCH_DOMAINS)
        fail(where, f"must be one of {{{options}}}; got {_show(value)}")
    kind, values = next(iter(value.items()))
    at = f"{where}.{kind}"
    if not isinstance(values, list) or not values:
        fail(at, f"must be a non-empty list; got {_show(values)}")
    if kind in LIST_DOMAINS:
        if model is None:
            return SearchDomain(kind, tuple(values))
        checked = [
            _check_config({key: v}, model, f"{at}[{i}]", source, skip=1)
            for i, v in enumerate(values)
        ]
        for index, item in enumerate(checked):
            _warn_implausible(key, item[key], f"{at}[{index}]", source)
        return SearchDomain(kind, tuple(item[key] for item in checked))
    if len(values) != 2:
        fail(at, f"must be [low, high]; got {_show(values)}")
    integer = kind == RANDINT
    for index, bound in enumerate(values):
        if not _number(bound, integer):
            kind_name = "an integer" if integer else "a number"
            fail(f"{at}[{index}]", f"must be {kind_name}; got {_show(bound)}")
    low, high = (int(v) if integer else float(v) for v in values)
    default = model.DEFAULTS.get(key) if model else None
    if default is not None:
        if integer and not _number(default, integer=True):
            fail(where, f"is not an integer key; use {UNIFORM} or {LOGUNIFORM}")
        if not integer and (isinstance(default, bool) or not isinstance(default, float)):
            fail(where, f"is not a float key; use {GRID_SEARCH}, {CHOICE} or {RANDINT}")
    if kind == LOGUNIFORM and low <= 0:
        fail(at, f"needs low > 0; got {low}")
    if not low < high:
        fail(at, f"needs low < high; got {values}")
    _warn_implausible(key, high, f"{at}[1]", source)
    return SearchDomain(kind, (low, high))


# ---- the experiment --------------------------------------------------------------------------


def _model(algorithm: str, where: str, source: str) -> type[_AlgorithmFields] | None:
    try:
        return fields_model(algorithm)
    except ConfigError as err:
        raise ConfigError(f"{source}: `{where}` {err}") from None


def _runs(exp: _Experiment, source: str) -> tuple[RunSpec, ...]:
    """Each run's config: its algorithm's ``defaults`` block, then its own ``config``."""
    models = {}
    for index, run in enumerate(exp.runs):
        models[run.algorithm] = _model(run.algorithm, f"{RUNS}[{index}].{ALGORITHM}", source)
    shared = {}
    for algorithm, values in exp.defaults.items():
        if algorithm not in models:
            raise ConfigError(
                f"{source}: `{DEFAULTS}.{algorithm}` is not the algorithm of any run; the runs' "
                f"algorithms are: {', '.join(sorted(models))}"
            )
        where = f"{DEFAULTS}.{algorithm}"
        shared[algorithm] = _check_config(values, models[algorithm], where, source)
    specs = []
    for index, run in enumerate(exp.runs):
        model = models[run.algorithm]
        where = f"{RUNS}[{index}]"
        config = {
            **shared.get(run.algorithm, {}),
            **_check_config(run.config, model, f"{where}.{CONFIG}", source),
        }
        for key in run.search or {}:
            if key in RESERVED_CONFIG_KEYS:
                raise ConfigError(
                    f"{source}: `{where}.{SEARCH}.{key}` is set by `{RESERVED_CONFIG_KEYS[key]}`, "
                    "not searched"
                )
        search = {
            key: _search_domain(item, f"{where}.{SEARCH}.{key}", model, key, source)
            for key, item in (run.search or {}).items()
        }
        dict_keys = {key: model.DICT_KEYS[key] for key in (*config, *search)} if model else {}
        specs.append(RunSpec(run.name, run.algorithm, config, search, dict_keys))
    names = [run.name for run in specs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"{source}: `{RUNS}` has two runs named '{name}'; run names must be unique"
            )
    return tuple(specs)


def _mutations(exp: _Experiment, runs: Sequence[RunSpec], source: str) -> dict[str, SearchDomain]:
    """PBT's ``hyperparam_mutations``: config fields of every run, drawn from a distribution."""
    base = f"{SCHEDULER}.{HYPERPARAM_MUTATIONS}"
    mutations: dict[str, SearchDomain] = {}
    for key, item in exp.scheduler.hyperparam_mutations.items():
        where = f"{base}.{key}"
        for index, run in enumerate(runs):
            model = fields_model(run.algorithm)
            if model is not None and key not in model.DEFAULTS:
                raise ConfigError(
                    f"{source}: `{where}` is not a config field of `{RUNS}[{index}]` "
                    f"({run.algorithm}){_did_you_mean(key, model.DEFAULTS)}"
                )
            domain = _search_domain(item, where, model, key, source)
        if domain.kind == GRID_SEARCH:
            raise ConfigError(
                f"{source}: `{where}.{GRID_SEARCH}` is not a mutation; use "
                f"{', '.join(SEARCH_DOMAINS[1:])}"
            )
        mutations[key] = domain
    return mutations


def _is_result_metric(name: str) -> bool:
    """Whether ``name`` has the form of a result key of ``docs/metrics.md``."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == m.EVALUATION_PREFIX:
        return parts[1] in m.POLICIES and bool(parts[2])
    if len(parts) == 2 and parts[0] == m.LEARNER_PREFIX:
        return bool(parts[1])
    return name in TUNE_METRICS


def _check_tuning(exp: _Experiment, runs: Sequence[RunSpec], source: str) -> None:
    """``metric``, ``mode``, ``scheduler`` and ``search_alg``, checked together."""

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{source}: `{key}` {message}")

    scheduler, search_alg, metric = exp.scheduler, exp.search_alg, exp.metric
    if search_alg is not None:
        for index, run in enumerate(runs):
            where = f"{RUNS}[{index}].{SEARCH}"
            if not run.search:
                fail(where, f"is empty: `{SEARCH_ALG}` {search_alg.name} needs ranges to search")
            for key, domain in run.search.items():
                if domain.kind == GRID_SEARCH:
                    fail(
                        f"{where}.{key}.{GRID_SEARCH}",
                        f"cannot be used with `{SEARCH_ALG}` {search_alg.name} (it proposes the "
                        f"values); use {', '.join(SEARCH_DOMAINS[1:])}",
                    )
    users = [f"`{k}`" for k, v in ((SCHEDULER, scheduler), (SEARCH_ALG, search_alg)) if v]
    if users:
        for name, value in ((METRIC, metric), (MODE, exp.mode)):
            if value is None:
                example = "evaluation/thin/episode_return_mean" if name == METRIC else "max"
                verb = "needs" if len(users) == 1 else "need"
                fail(name, f"is missing: {' and '.join(users)} {verb} it (e.g. {name}: {example})")
    if metric is not None:
        plain_only = all(fields_model(run.algorithm) is None for run in runs)
        if not plain_only and not _is_result_metric(metric):
            fail(
                METRIC,
                "must be a metric of docs/metrics.md: evaluation/<policy>/<name> (policy: "
                f"{', '.join(m.POLICIES)}), learner/<name>, {', '.join(TUNE_METRICS)}; "
                f"got {_show(metric)}",
            )
        fat_prefix = f"{EVALUATION_METRIC_PREFIX}{m.FAT}/"
        for index, run in enumerate(runs):
            rllib = trainable_kind(run.algorithm) == KIND_RLLIB
            if users and rllib and not (metric.startswith(fat_prefix) or metric in TUNE_METRICS):
                fail(
                    METRIC,
                    f"is not in the results of `{RUNS}[{index}]` ({run.algorithm}: RLlib's "
                    f"algorithms report their policy as {fat_prefix}<name>); got {_show(metric)}",
                )
        interval = exp.evaluation.interval
        if metric.startswith(EVALUATION_METRIC_PREFIX) and interval != 1 and users:
            fail(
                f"{EVALUATION}.{INTERVAL}",
                f"must be 1 when {' and '.join(users)} "
                f"{'uses' if len(users) == 1 else 'use'} the evaluation metric `{metric}` "
                f"(Tune reads it from every result); got {interval}",
            )
    if scheduler is not None:
        frequency = (exp.checkpoint or CheckpointSpec()).frequency
        if scheduler.name in CHECKPOINTING_SCHEDULERS and frequency < 1:
            fail(
                f"{CHECKPOINT}.{FREQUENCY}",
                f"must be >= 1 with `{SCHEDULER}` {scheduler.name}: it resumes trials from "
                f"checkpoints (got {frequency})",
            )
        if scheduler.name == PBT and search_alg is not None:
            fail(
                SEARCH_ALG,
                f"cannot be combined with `{SCHEDULER}` pbt (pbt perturbs the configs itself); "
                "remove one",
            )


def validate_experiment(data: dict[str, Any], path: str | Path) -> ExperimentSpec:
    """Validate a raw experiment dict; ``path`` names the file in errors and the experiment.

    Each run's config (its algorithm's ``defaults`` block, then its own ``config``) is checked
    against its algorithm's default config (:func:`fields_model`; a plain trainable has none).
    """
    path = Path(path)
    source = str(path)
    try:
        exp = _Experiment.model_validate(data)
    except ValidationError as err:
        single = "" if isinstance(data.get(DATASET), list) else DATASET
        raise _config_error(err, source, single=single) from None
    if isinstance(data[DATASET], list):
        ids = [block.id for block in exp.dataset]
        for index, block in enumerate(exp.dataset):
            if ids.index(block.id) != index:
                raise ConfigError(
                    f"{source}: `{DATASET}[{index}].{ID}` repeats dataset '{block.id}' of the list"
                )
    runs = _runs(exp, source)
    scheduler = exp.scheduler
    if scheduler is not None and scheduler.name == PBT:
        scheduler = scheduler.model_copy(
            update={HYPERPARAM_MUTATIONS: _mutations(exp, runs, source)}
        )
    _check_tuning(exp, runs, source)
    if exp.evaluation.final_episodes is not None and exp.stop.iterations % exp.evaluation.interval:
        raise ConfigError(
            f"{source}: `{EVALUATION}.{FINAL_EPISODES}` needs an evaluation at the last iteration: "
            f"`stop.iterations` ({exp.stop.iterations}) must be a multiple of "
            f"`{EVALUATION}.{INTERVAL}` ({exp.evaluation.interval})"
        )
    return ExperimentSpec(
        name=path.stem,
        path=path,
        dataset=exp.dataset[0],
        evaluation=exp.evaluation,
        runs=runs,
        seeds=tuple(exp.seeds),
        iterations=exp.stop.iterations,
        time_s=exp.stop.time_s,
        checkpoint=exp.checkpoint or CheckpointSpec(),
        num_samples=exp.num_samples,
        cpus_per_trial=(exp.resources or _Resources()).cpus_per_trial,
        reuse_actors=(exp.resources or _Resources()).reuse_actors,
        max_concurrent=exp.max_concurrent,
        max_failures=exp.max_failures,
        log_checkpoint=(exp.mlflow or _Mlflow()).log_checkpoint,
        raw=copy.deepcopy(data),
        datasets=tuple(exp.dataset),
        metric=exp.metric,
        mode=exp.mode,
        scheduler=scheduler,
        search_alg=exp.search_alg,
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
