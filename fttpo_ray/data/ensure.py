"""Datasets on demand: load a dataset if it exists, else collect it when we know how.

Used by sweeps and by ``FtTPOConfig.dataset(id)``: a YAML can name a dataset that does not exist
yet, and the first trial creates it with ``fttpo collect`` semantics (uniform-random behaviour
policy, reset seeds ``seed + i``, reference scores where a reference policy exists), or, for the
ids of :data:`KNOWN_DATASETS`, with their own recipe (the glucose datasets: the noisy basal-bolus
controller, collected as Ray tasks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fttpo_ray.data.collect import DatasetInfo, collect_dataset, dataset_info
from fttpo_ray.data.compat import check_compatible
from fttpo_ray.data.minari_files import (
    close_dataset_ids,
    dataset_exists,
    dataset_path,
    did_you_mean,
    local_dataset_ids,
)
from fttpo_ray.data.policies import BASAL_BOLUS, RANDOM
from fttpo_ray.data.remote import download_dataset, is_local_namespace
from fttpo_ray.envs import (
    GLUCOSE_ENV_ID,
    TREATMENT_ENV_ID,
    TREATMENT_ENV_IDS,
    TREATMENT_LETHAL_ENV_ID,
)
from fttpo_ray.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

#: Episodes of the paper's treatment dataset (50 x 24 = 1 200 transitions).
TREATMENT_EPISODES = 50
#: Episodes (one simulated day each) of the glucose datasets: 28 days of each of the 30 patients.
GLUCOSE_EPISODES = 840
#: Log-normal bolus noise sigma of the glucose datasets' basal-bolus behaviour policy.
GLUCOSE_MODERATE_NOISE = 0.3
GLUCOSE_WIDE_NOISE = 0.6


@dataclass(frozen=True)
class DatasetRecipe:
    """How to collect a known dataset id."""

    env_id: str
    episodes: int
    policy: str = RANDOM
    seed: int = 0
    #: Episodes per reference policy (Minari's ref_min/ref_max scores). The treatment simulator is
    #: very noisy (s.e. ~0.3 per 1 000 episodes), so its known datasets use 1 000.
    reference_episodes: int = 1000
    #: The basal-bolus policy's log-normal bolus noise sigma (``None`` for other policies).
    bolus_noise: float | None = None


#: Dataset ids that :func:`ensure_dataset` can create without being told the env.
KNOWN_DATASETS: dict[str, DatasetRecipe] = {
    "fttpo/treatment/random-v0": DatasetRecipe(TREATMENT_ENV_ID, TREATMENT_EPISODES),
    "fttpo/treatment-lethal/random-v0": DatasetRecipe(TREATMENT_LETHAL_ENV_ID, TREATMENT_EPISODES),
    "fttpo/glucose/basal-bolus-moderate-v0": DatasetRecipe(
        GLUCOSE_ENV_ID, GLUCOSE_EPISODES, BASAL_BOLUS, bolus_noise=GLUCOSE_MODERATE_NOISE
    ),
    "fttpo/glucose/basal-bolus-wide-v0": DatasetRecipe(
        GLUCOSE_ENV_ID, GLUCOSE_EPISODES, BASAL_BOLUS, bolus_noise=GLUCOSE_WIDE_NOISE
    ),
}


def ensure_dataset(
    dataset_id: str,
    env_id: str | None = None,
    episodes: int | None = None,
    seed: int = 0,
    ray_address: str | None = None,
) -> DatasetInfo:
    """Return the local dataset ``dataset_id``, collecting it first if it does not exist.

    An existing dataset is returned as it is (if ``env_id`` is given, its spaces are checked
    against it with :func:`check_compatible`). A missing one is collected when its recipe is
    known: an id of :data:`KNOWN_DATASETS` with its own recipe when the arguments do not change
    it (``env_id`` its env or ``None``, ``episodes`` ``None``, ``seed`` its seed); otherwise,
    if ``env_id`` is given, with the uniform-random policy from ``env_id``/``episodes``/``seed``
    (``episodes`` defaults to 50 for the treatment envs and is required otherwise; an id not in
    :data:`KNOWN_DATASETS` is announced with a warning: a new dataset). A
    missing id outside fttpo-ray's own namespaces is downloaded from Minari's remote
    (:func:`~fttpo_ray.data.remote.download_dataset`). Otherwise :class:`DatasetError` says how
    to create it.

    A missing id that looks like a typo of a local or known one (:func:`close_dataset_ids`) is
    never collected: :class:`DatasetError` asks "did you mean ...?" and names the
    ``fttpo collect`` command that creates a new dataset under that id on purpose.

    A glucose dataset is collected by Ray tasks on the cluster at ``ray_address`` (``ray.init``'s
    address), or on a local Ray when it is ``None`` and Ray is not initialised.
    """
    if dataset_exists(dataset_id):
        if env_id is not None:
            check_compatible(dataset_id, env_id)
        return dataset_info(dataset_id)
    dataset_path(dataset_id)  # a malformed id fails here, naming the expected form
    known = KNOWN_DATASETS.get(dataset_id)
    if (
        known is not None
        and env_id in (None, known.env_id)
        and episodes is None
        and seed == known.seed
    ):
        recipe = known
    elif env_id is not None:
        if episodes is None:
            if env_id not in TREATMENT_ENV_IDS:
                raise ConfigError(
                    f"dataset '{dataset_id}' does not exist and no episode count was given for "
                    f"'{env_id}'; set the dataset's `episodes` or collect it with fttpo collect"
                )
            episodes = TREATMENT_EPISODES
        recipe = DatasetRecipe(env_id, episodes, RANDOM, seed)
        if dataset_id not in KNOWN_DATASETS:
            _refuse_typo(dataset_id, recipe)
    elif dataset_id in KNOWN_DATASETS:
        recipe = KNOWN_DATASETS[dataset_id]
    elif not is_local_namespace(dataset_id):
        download_dataset(dataset_id)  # a Minari remote id, or a one-line error saying how
        return dataset_info(dataset_id)
    else:
        close = close_dataset_ids(dataset_id, {*local_dataset_ids(), *KNOWN_DATASETS})
        if close:
            raise DatasetError(
                f"dataset '{dataset_id}' does not exist; {did_you_mean(close)} (a new one is "
                f"made with `fttpo collect --env ENV --episodes N --dataset-id {dataset_id}`)"
            )
        raise DatasetError(
            f"dataset '{dataset_id}' does not exist and fttpo-ray does not know how to create "
            f"it; collect it with `fttpo collect --env ENV --episodes N --dataset-id {dataset_id}`"
        )
    if dataset_id in KNOWN_DATASETS:
        logger.info(
            "Dataset '%s' not found; collecting %d %s episodes of %s",
            dataset_id,
            recipe.episodes,
            recipe.policy,
            recipe.env_id,
        )
    else:
        logger.warning(
            "Dataset '%s' does not exist: collecting a NEW dataset of %d %s episodes of %s under "
            "this id in %s",
            dataset_id,
            recipe.episodes,
            recipe.policy,
            recipe.env_id,
            dataset_path(dataset_id),
        )
    try:
        return collect_dataset(
            env_id=recipe.env_id,
            policy=recipe.policy,
            episodes=recipe.episodes,
            dataset_id=dataset_id,
            seed=recipe.seed,
            reference_episodes=recipe.reference_episodes,
            bolus_noise=recipe.bolus_noise,
            ray_address=ray_address,
        )
    except DatasetError:
        if dataset_exists(dataset_id):  # another trial created it meanwhile
            return dataset_info(dataset_id)
        raise


def _refuse_typo(dataset_id: str, recipe: DatasetRecipe) -> None:
    """Raise :class:`DatasetError` if ``dataset_id`` (missing) looks like a typo of a local or
    known id of the same namespace and version, instead of collecting a new dataset under it."""
    typo = close_dataset_ids(dataset_id, {*local_dataset_ids(), *KNOWN_DATASETS}, same_version=True)
    if typo:
        raise DatasetError(
            f"dataset '{dataset_id}' does not exist; {did_you_mean(typo)} To create a new dataset "
            f"under this id on purpose, run `fttpo collect --env {recipe.env_id} --episodes "
            f"{recipe.episodes} --seed {recipe.seed} --dataset-id {dataset_id}` first"
        )
