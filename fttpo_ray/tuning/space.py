"""From a validated experiment to what Tune runs: the trainable and its ``param_space``.

Three kinds of trainables are supported, by their registered Tune name:

* ``FtTPO`` — :class:`fttpo_ray.FtTPOConfig`; the dataset and its split are set with
  ``.dataset(id, held_out_fraction=..., split_seed=...)`` and resolved lazily in each trial.
* any other RLlib algorithm (``IQL``, ``CQL``, ``BC``, ``MARWIL``, ...) — learns from the
  training episodes of the dataset held in memory (uniform minibatches,
  :func:`fttpo_ray.algorithms.baselines.builtin_offline.configure_builtin_offline`; the split is
  the dataset block's, as FtTPO's), or from its flat Parquet export through Ray Data when it is
  larger than memory, and is evaluated with the same episodes and safety metrics as FtTPO
  (:func:`fttpo_ray.algorithms.rllib_evaluation.configure_evaluation`).
* any other Tune trainable (a function or class registered with
  :func:`ray.tune.register_trainable`) — receives the YAML's ``config`` plus ``seed``,
  ``dataset_id``, ``env``, the split and the evaluation settings as a plain dict.

An RLlib config is built in the driver (all YAML ``config`` keys applied with
``update_from_dict``, one CPU per trial: ``num_env_runners=0``, local learner), turned into a
dict with ``to_dict()``, and the swept keys are replaced by Tune domains; ``seed`` becomes a
``grid_search`` over the YAML's ``seeds`` — or, with a ``search_alg``, each configuration it
proposes runs once per seed (:class:`SeedRepeater`), since Tune's searchers take no grids.

The YAML's ``scheduler`` and ``search_alg`` become Tune objects here (:func:`tune_scheduler`,
:func:`tune_search_alg`), one per Tune experiment (they keep per-experiment state); they count
time in training iterations and optimise the YAML's ``metric`` in its ``mode``. A list of
dataset blocks is an environment axis: each run is planned once per dataset
(:func:`plan_run`), so that a scheduler or a search algorithm only ever compares trials on the
same environment (returns of different environments are on different scales).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Repeater
from ray.tune.search.repeater import TRIAL_INDEX

from fttpo_ray.algorithms.offline_data import (
    DEFAULT_HELD_OUT_FRACTION,
    DEFAULT_SPLIT_SEED,
    check_finite,
)
from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning.schema import (
    ASHA,
    CHOICE,
    GRID_SEARCH,
    HELD_OUT_FRACTION,
    HYPERBAND,
    LOGUNIFORM,
    OPTUNA,
    PBT,
    RANDINT,
    SPLIT_SEED,
    UNIFORM,
    DatasetSpec,
    ExperimentSpec,
    RunSpec,
    SearchDomain,
)
from fttpo_ray.tuning.trainables import (
    KIND_FTTPO,
    KIND_TRAINABLE,
    trainable_class,
    trainable_kind,
)

logger = logging.getLogger(__name__)

#: Config keys of the plain dict given to a non-RLlib trainable (besides the YAML's ``config``).
SEED_KEY = "seed"
DATASET_ID_KEY = "dataset_id"
ENV_KEY = "env"
EVALUATION_EPISODES_KEY = "evaluation_duration"
EVALUATION_INTERVAL_KEY = "evaluation_interval"
EVALUATION_SEED_KEY = "evaluation_seed"
EVALUATION_EXPLORE_KEY = "evaluation_explore"
#: Checkpoint every N iterations (a plain trainable saves its own checkpoints; 0: never).
CHECKPOINT_FREQUENCY_KEY = "checkpoint_frequency"
#: Tune's result key that schedulers count time in.
TRAINING_ITERATION = "training_iteration"

#: ``offline_data`` settings that the YAML may choose for RLlib's own offline algorithms (the
#: data layer's defaults otherwise: see :func:`fttpo_ray.data.rllib_offline_data_kwargs`).
OFFLINE_DATA_KEYS = frozenset(
    {
        "input_read_method",
        "materialize_data",
        "materialize_mapped_data",
        "map_batches_kwargs",
        "iter_batches_kwargs",
        "dataset_num_iters_per_learner",
    }
)

#: CPUs of the cluster kept free for the Ray Data tasks of RLlib's offline algorithms (they run
#: outside the trials' placement groups; see :func:`fttpo_ray.tuning.sweep.trial_concurrency`).
RAY_DATA_RESERVED_CPUS = 1


@dataclass(frozen=True)
class DatasetRef:
    """A resolved dataset: its id, the id of the environment it was collected on, and the split
    every run of the experiment trains on (the YAML's ``dataset`` block)."""

    id: str
    env_id: str | None
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION
    split_seed: int = DEFAULT_SPLIT_SEED


@dataclass(frozen=True)
class RunPlan:
    """What Tune needs for one run of the YAML on one dataset."""

    run: RunSpec
    kind: str
    trainable: Any
    param_space: dict[str, Any]
    algorithm_config: Any | None
    dataset: DatasetRef | None = None
    #: Tune's experiment name: the run's name, with the dataset's label on an environment axis.
    name: str = ""


# ---- the dataset -------------------------------------------------------------------------------


def dataset_label(dataset_id: str) -> str:
    """A file-name-safe label of a dataset id (``fttpo/treatment/random-v0`` ->
    ``fttpo_treatment_random-v0``), for the Tune experiment directories of an environment axis."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in dataset_id)


def dataset_ref(ds: DatasetSpec, env_id: str | None = None) -> DatasetRef:
    """The dataset block ``ds`` as runs see it (``env_id``: the environment read from the
    data, default the block's ``env``)."""
    return DatasetRef(
        id=ds.id,
        env_id=env_id or ds.env,
        held_out_fraction=ds.held_out_fraction,
        split_seed=ds.split_seed,
    )


def prepare_dataset(
    spec: ExperimentSpec, ds: DatasetSpec | None = None, *, address: str | None = None
) -> DatasetRef:
    """Make sure a dataset of the YAML (the first by default) exists (created on demand where
    possible; a glucose dataset by Ray tasks on the cluster at ``address``, else a local Ray),
    holds only finite numbers, and read its env."""
    from fttpo_ray.data import ensure_dataset, ensure_mixture, load_transitions

    ds = ds or spec.dataset
    if ds.parts:
        ensure_mixture(ds.parts)  # combined once (parts downloaded where needed)
    ensure_dataset(ds.id, env_id=ds.env, episodes=ds.episodes, seed=ds.seed, ray_address=address)
    transitions = load_transitions(ds.id)
    # A NaN or inf would fail every trial while it is built: say so once, before Ray starts.
    check_finite(transitions.as_dict(), ds.id)
    env_id = ds.env or transitions.env_id
    logger.info("Dataset '%s' ready (environment %s)", ds.id, env_id)
    return dataset_ref(ds, env_id)


def needs_dataset(spec: ExperimentSpec) -> bool:
    """Whether any run is an RLlib algorithm (those read the dataset; plain trainables may not)."""
    return any(trainable_kind(run.algorithm) != KIND_TRAINABLE for run in spec.runs)


# ---- configs and param spaces --------------------------------------------------------------------


def tune_domain(domain: SearchDomain) -> Any:
    """The Tune search-space object of a YAML search entry."""
    from ray import tune

    values = list(domain.values)
    if domain.kind == GRID_SEARCH:
        return tune.grid_search(values)
    if domain.kind == CHOICE:
        return tune.choice(values)
    if domain.kind == UNIFORM:
        return tune.uniform(*values)
    if domain.kind == LOGUNIFORM:
        return tune.loguniform(*values)
    if domain.kind == RANDINT:
        return tune.randint(*values)
    raise ConfigError(f"unknown search domain '{domain.kind}'")


def algorithm_config(
    spec: ExperimentSpec,
    run: RunSpec,
    dataset: DatasetRef,
    *,
    seed: int,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """The RLlib ``AlgorithmConfig`` of ``run`` with fixed values (``config`` + ``overrides``)."""
    from fttpo_ray.algorithms.rllib_evaluation import configure_evaluation

    kind = trainable_kind(run.algorithm)
    if kind == KIND_TRAINABLE:
        raise ConfigError(f"'{run.algorithm}' is not an RLlib algorithm; it has no AlgorithmConfig")
    config = trainable_class(run.algorithm).get_default_config()
    values = {**run.config, **(overrides or {})}
    config.update_from_dict({run.dict_key(key): value for key, value in values.items()})
    if "num_env_runners" not in run.config:
        config.env_runners(num_env_runners=0)
    if config.num_learners == 0:
        config.learners(num_cpus_per_learner=spec.cpus_per_trial)
    config.resources(num_cpus_for_main_process=spec.cpus_per_trial)
    config.debugging(seed=seed)
    split = {HELD_OUT_FRACTION: dataset.held_out_fraction, SPLIT_SEED: dataset.split_seed}
    if kind == KIND_FTTPO:
        config.dataset(dataset.id, **split)
        if dataset.env_id:
            config.environment(env=dataset.env_id)
    else:
        from fttpo_ray.algorithms.baselines.builtin_offline import configure_builtin_offline

        chosen = {key: value for key, value in run.config.items() if key in OFFLINE_DATA_KEYS}
        configure_builtin_offline(config, dataset.id, **split, **chosen)
    ev = spec.evaluation
    return configure_evaluation(
        config,
        episodes=ev.episodes,
        seed=ev.seed,
        explore=ev.explore,
        interval=ev.interval,
        dataset_id=dataset.id,
        final_episodes=ev.final_episodes,
        final_iteration=None if ev.final_episodes is None else spec.iterations,
    )


def plain_config(
    spec: ExperimentSpec, run: RunSpec, dataset: DatasetRef, *, seed: int
) -> dict[str, Any]:
    """The plain dict config of a non-RLlib trainable (YAML ``config`` + context keys)."""
    ev = spec.evaluation
    return {
        **run.config,
        SEED_KEY: seed,
        DATASET_ID_KEY: dataset.id,
        ENV_KEY: dataset.env_id,
        HELD_OUT_FRACTION: dataset.held_out_fraction,
        SPLIT_SEED: dataset.split_seed,
        EVALUATION_EPISODES_KEY: ev.episodes,
        EVALUATION_INTERVAL_KEY: ev.interval,
        EVALUATION_SEED_KEY: ev.seed,
        EVALUATION_EXPLORE_KEY: ev.explore,
        CHECKPOINT_FREQUENCY_KEY: spec.checkpoint.frequency,
    }


def plan_run(spec: ExperimentSpec, run: RunSpec, dataset: DatasetRef) -> RunPlan:
    """Trainable and ``param_space`` of one run on one dataset (search keys as Tune domains,
    seeds as a grid, or the first seed with a ``search_alg``, whose :class:`SeedRepeater` sets
    each trial's)."""
    from ray import tune

    kind = trainable_kind(run.algorithm)
    first_seed = spec.seeds[0]
    if kind == KIND_TRAINABLE:
        config = None
        space = plain_config(spec, run, dataset, seed=first_seed)
        trainable = tune.with_resources(
            trainable_class(run.algorithm), {"cpu": spec.cpus_per_trial}
        )
    else:
        config = algorithm_config(spec, run, dataset, seed=first_seed)
        space = config.to_dict()
        trainable = run.algorithm
    for key, domain in run.search.items():
        space[run.dict_key(key)] = tune_domain(domain)
    space[SEED_KEY] = first_seed if spec.search_alg else tune.grid_search(list(spec.seeds))
    several = len(spec.datasets) > 1
    return RunPlan(
        run=run,
        kind=kind,
        trainable=trainable,
        param_space=space,
        algorithm_config=config,
        dataset=dataset,
        name=f"{run.name}.{dataset_label(dataset.id)}" if several else run.name,
    )


# ---- schedulers and search algorithms ------------------------------------------------------------


def tune_scheduler(spec: ExperimentSpec, run: RunSpec, iterations: int) -> Any:
    """The Tune scheduler of the YAML's ``scheduler`` for one Tune experiment (None: FIFO).

    Time is counted in training iterations; ``max_t`` defaults to ``iterations``; PBT's
    mutations are given under the config keys of ``run`` (its ``to_dict()`` names).
    """
    sc = spec.scheduler
    if sc is None:
        return None
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, PopulationBasedTraining

    max_t = sc.max_t or iterations
    if sc.name == ASHA:
        return ASHAScheduler(
            time_attr=TRAINING_ITERATION,
            max_t=max_t,
            grace_period=min(sc.grace_period, max_t),
            reduction_factor=sc.reduction_factor,
            brackets=sc.brackets,
        )
    if sc.name == HYPERBAND:
        return HyperBandScheduler(
            time_attr=TRAINING_ITERATION, max_t=max_t, reduction_factor=sc.reduction_factor
        )
    if sc.name == PBT:
        return PopulationBasedTraining(
            time_attr=TRAINING_ITERATION,
            perturbation_interval=sc.perturbation_interval,
            hyperparam_mutations={
                run.dict_key(key): tune_domain(domain)
                for key, domain in sc.hyperparam_mutations.items()
            },
            quantile_fraction=sc.quantile_fraction,
            resample_probability=sc.resample_probability,
        )
    raise ConfigError(f"unknown scheduler '{sc.name}'")


def tune_search_alg(spec: ExperimentSpec) -> Any:
    """The Tune searcher of the YAML's ``search_alg`` (None: Tune's grid/random generation),
    wrapped so that every proposed configuration runs once per seed (:class:`SeedRepeater`)."""
    sa = spec.search_alg
    if sa is None:
        return None
    if sa.name != OPTUNA:
        raise ConfigError(f"unknown search algorithm '{sa.name}'")
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # Optuna logs every study and told trial at INFO on its own stderr handler; the sweep's
    # progress lines already report each trial.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {} if sa.n_startup_trials is None else {"n_startup_trials": sa.n_startup_trials}
    sampler = optuna.samplers.TPESampler(seed=sa.seed, **options)
    return SeedRepeater(OptunaSearch(sampler=sampler), spec.seeds)


def tune_num_samples(spec: ExperimentSpec) -> int:
    """Tune's ``num_samples``: the YAML's, times the seeds with a ``search_alg`` (each proposed
    configuration is one trial per seed)."""
    return spec.num_samples * (len(spec.seeds) if spec.search_alg else 1)


class SeedRepeater(Repeater):
    """Tune's :class:`~ray.tune.search.Repeater` that runs each configuration its searcher
    proposes once per seed: the ``i``-th repeat gets ``seed = seeds[i]`` (instead of Tune's
    ``__trial_index__`` key, which an RLlib config does not know); the searcher learns the mean
    of the repeats' final metric."""

    def __init__(self, searcher: Any, seeds: tuple[int, ...]) -> None:
        super().__init__(searcher, repeat=len(seeds), set_index=True)
        self.seeds = tuple(seeds)

    def suggest(self, trial_id: str) -> Any:
        config = super().suggest(trial_id)
        if isinstance(config, dict) and TRIAL_INDEX in config:
            config[SEED_KEY] = self.seeds[config.pop(TRIAL_INDEX)]
        return config
