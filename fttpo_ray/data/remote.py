"""Minari's hosted datasets, on demand, and mixtures of datasets (Minari's ``combine_datasets``).

- :func:`download_dataset`: a dataset id that is not under the Minari root is fetched once with
  Minari's own ``minari.download_dataset`` (which honours ``MINARI_DATASETS_PATH`` and Minari's
  remote setting ``MINARI_REMOTE``). Without network the :class:`DatasetError` names the id, the
  root searched and how to fetch it on a connected machine (``minari download ID``) and copy it
  in. Ids in :data:`LOCAL_NAMESPACES` (made by fttpo-ray itself) are never looked up remotely.
- :func:`mixture_id` / :func:`ensure_mixture`: several ids (e.g. medium + expert =
  medium-expert, as D4RL and Minari define it) combined once into a local dataset under
  :data:`MIXTURE_NAMESPACE`, built atomically; the reference scores of the parts are kept when
  they agree (``combine_datasets`` drops them).
- :func:`resolve_dataset`: one id or a list of ids -> the id to learn from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Sequence

from fttpo_ray.data.minari_files import (
    META_DATASET_ID,
    META_REF_MAX_SCORE,
    META_REF_MIN_SCORE,
    MINARI_DATA_DIR,
    MINARI_METADATA_FILE,
    close_dataset_ids,
    dataset_exists,
    dataset_path,
    did_you_mean,
    local_dataset_ids,
    read_metadata,
)
from fttpo_ray.errors import DatasetError, first_line

logger = logging.getLogger(__name__)

#: Namespaces of datasets made by fttpo-ray (collected, or the HalfCheetah stand-ins): never
#: looked up on Minari's remote.
LOCAL_NAMESPACES = ("fttpo", "mixtures", "test")
#: Namespace under which mixtures are written (``mixtures/<common namespace>/<parts>-v0``).
MIXTURE_NAMESPACE = "mixtures"
#: Environment variable of Minari's remote (``hf://farama-minari`` when unset).
MINARI_REMOTE_VARIABLE = "MINARI_REMOTE"
#: Minari metadata key listing the parts of a combined dataset.
META_COMBINED_DATASETS = "combined_datasets"


def minari_root() -> str:
    """The Minari root that datasets are read from and downloaded to."""
    from minari.storage import get_dataset_path

    return str(get_dataset_path())


def is_local_namespace(dataset_id: str) -> bool:
    """Whether ``dataset_id`` belongs to a namespace that exists only locally."""
    return dataset_id.split("/", 1)[0] in LOCAL_NAMESPACES


def missing_dataset_error(dataset_id: str, reason: str | None = None) -> DatasetError:
    """The one-line error for a dataset that is neither local nor downloadable here."""
    because = f" and could not be downloaded ({reason})" if reason else ""
    if is_local_namespace(dataset_id):
        close = did_you_mean(close_dataset_ids(dataset_id, local_dataset_ids()))
        if close:
            return DatasetError(
                f"dataset '{dataset_id}' is not under the Minari root {minari_root()}; {close}"
            )
        return DatasetError(
            f"dataset '{dataset_id}' is not under the Minari root {minari_root()}; it is made by "
            f"fttpo-ray, not hosted by Minari: copy its folder to {dataset_path(dataset_id)}, "
            "point MINARI_DATASETS_PATH at a root that holds it, or create it with fttpo collect"
        )
    return DatasetError(
        f"dataset '{dataset_id}' is not under the Minari root {minari_root()}{because}; on a "
        f"connected machine run `minari download {dataset_id}` (or `fttpo download "
        f"{dataset_id}`) and copy its folder to {dataset_path(dataset_id)}, or point "
        "MINARI_DATASETS_PATH at a root that holds it"
    )


def download_dataset(dataset_id: str) -> str:
    """Make the Minari dataset ``dataset_id`` local (downloading it once) and return its path.

    A local dataset is returned as it is. Otherwise Minari's ``download_dataset`` fetches it
    into the Minari root (its own progress bars go to stderr). Raises :class:`DatasetError`
    (:func:`missing_dataset_error`) if that fails, e.g. without network.
    """
    dataset_path(dataset_id)  # a malformed id fails here, naming the expected form
    if dataset_exists(dataset_id):
        return str(dataset_path(dataset_id))
    if is_local_namespace(dataset_id):
        raise missing_dataset_error(dataset_id)
    import minari

    remote = os.environ.get(MINARI_REMOTE_VARIABLE, "Minari's default remote")
    logger.info("Downloading '%s' from %s into %s (once)", dataset_id, remote, minari_root())
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Minari prints; stdout is for results
            minari.download_dataset(dataset_id)
    except Exception as err:  # noqa: BLE001 - network, remote and version errors alike
        shutil.rmtree(dataset_path(dataset_id), ignore_errors=True)  # nothing half-written
        raise missing_dataset_error(
            dataset_id, f"{type(err).__name__}: {first_line(err)}"
        ) from None
    if not dataset_exists(dataset_id):
        raise missing_dataset_error(dataset_id, "the download left no dataset")
    logger.info("Downloaded '%s' to %s", dataset_id, dataset_path(dataset_id))
    return str(dataset_path(dataset_id))


def mixture_id(dataset_ids: Sequence[str]) -> str:
    """The local id of the mixture of ``dataset_ids`` (in the given order).

    ``mixtures/<common namespace>/<name-vN>_<name-vN>...-v0``, e.g.
    ``['fttpo/halfcheetah/medium-sac-v0', 'fttpo/halfcheetah/expert-sac-v0']`` ->
    ``mixtures/fttpo/halfcheetah/medium-sac-v0_expert-sac-v0-v0``.
    """
    if len(dataset_ids) < 2 or len(set(dataset_ids)) != len(dataset_ids):
        raise DatasetError(
            f"a mixture needs at least two different dataset ids; got {list(dataset_ids)}"
        )
    for dataset_id in dataset_ids:
        dataset_path(dataset_id)  # malformed ids fail here
    spaces = [d.rsplit("/", 1)[0] if "/" in d else "" for d in dataset_ids]
    names = [d.rsplit("/", 1)[-1] for d in dataset_ids]
    namespace = spaces[0] if len(set(spaces)) == 1 and spaces[0] else "mixed"
    return f"{MIXTURE_NAMESPACE}/{namespace}/{'_'.join(names)}-v0"


def ensure_mixture(dataset_ids: Sequence[str]) -> str:
    """The id of the mixture of ``dataset_ids``, combined once with ``minari.combine_datasets``.

    Missing parts are downloaded (:func:`download_dataset`). The mixture is built under a
    temporary id and renamed into place, so a failure leaves nothing behind; a mixture that
    exists is reused. Minari checks that the parts share their environment and spaces.
    """
    target = mixture_id(dataset_ids)
    if dataset_exists(target):
        return target
    for dataset_id in dataset_ids:
        download_dataset(dataset_id)
    import minari

    staging_id = f"{MIXTURE_NAMESPACE}/staging/tmp_{uuid.uuid4().hex}-v0"
    staging = dataset_path(staging_id)
    final = dataset_path(target)
    logger.info("Combining %s into '%s' (once)", ", ".join(dataset_ids), target)
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        parts = [minari.load_dataset(dataset_id) for dataset_id in dataset_ids]
        minari.combine_datasets(parts, new_dataset_id=staging_id)
        # Minari refuses to change a dataset's id through its API: rewrite the metadata file.
        metadata_file = staging / MINARI_DATA_DIR / MINARI_METADATA_FILE
        metadata = json.loads(metadata_file.read_text())
        metadata.update({META_DATASET_ID: target, META_COMBINED_DATASETS: list(dataset_ids)})
        references = {
            (read_metadata(d).get(META_REF_MIN_SCORE), read_metadata(d).get(META_REF_MAX_SCORE))
            for d in dataset_ids
        }
        if len(references) == 1 and None not in next(iter(references)):
            ref_min, ref_max = next(iter(references))
            metadata.update({META_REF_MIN_SCORE: ref_min, META_REF_MAX_SCORE: ref_max})
        metadata_file.write_text(json.dumps(metadata))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(final)
        except OSError:
            if not dataset_exists(target):  # not a concurrent writer's complete mixture
                raise
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - Minari's checks (env, spaces) and OS errors
        raise DatasetError(
            f"could not combine {list(dataset_ids)} into '{target}' "
            f"({type(err).__name__}: {first_line(err)}); the datasets must share their "
            "environment and spaces, and the Minari root must be writable"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Mixture '%s' ready at %s", target, final)
    return target


def resolve_dataset(dataset: str | Sequence[str]) -> str:
    """The local id to learn from: ``dataset`` itself (downloaded if needed and possible), or
    the mixture of a list of ids (:func:`ensure_mixture`; a one-element list is that id)."""
    if isinstance(dataset, str):
        if not dataset_exists(dataset) and not is_local_namespace(dataset):
            download_dataset(dataset)
        return dataset
    ids = list(dataset)
    if len(ids) == 1:
        return resolve_dataset(ids[0])
    return ensure_mixture(ids)
