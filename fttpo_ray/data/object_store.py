"""A dataset's transition table shared through Ray's object store, for sweeps on a cluster.

The sweep driver loads each dataset once (:func:`share_transitions`): the table is put in the
object store once, and a small actor pinned to the driver's node, named after the Ray job and
the dataset id, holds the reference. A trial of that job on any node (:func:`shared_transitions`)
asks the actor for the reference and reads the table from the object store, so no node needs the
dataset on its own disk (its Minari root may be empty). The fetched table is handed to
:func:`~fttpo_ray.data.transitions.provide_transitions`, so every later ``load_transitions(id)``
of that process (the in-memory sampler, the reference scores) returns it.

Outside such a job (``fttpo train``, a notebook, a trial of a sweep that shared nothing) there is
no holder and the dataset is read from disk as before. Datasets are immutable by id: the table
is put once per sweep and never changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fttpo_ray.data.transitions import Transitions, load_transitions, provide_transitions

logger = logging.getLogger(__name__)

#: Ray namespace of the holder actors (a trial's own namespace may differ from its driver's).
NAMESPACE = "fttpo"
HOLDER_PREFIX = "fttpo-transitions"


def holder_name(dataset_id: str, job_id: str) -> str:
    """Name of the actor that holds the table of ``dataset_id`` for the Ray job ``job_id``."""
    return f"{HOLDER_PREFIX}:{job_id}:{dataset_id}"


class TransitionsHolder:
    """Holds the object reference of one table (inside a list, so Ray passes it unresolved)."""

    def __init__(self, references: list[Any]) -> None:
        self._references = references

    def references(self) -> list[Any]:
        return self._references


def share_transitions(dataset_ids: Iterable[str]) -> list[Any]:
    """Put each dataset's table in the object store once (driver side); the holder actors.

    Call after ``ray.init`` in the process that runs the trials' Tuner; keep the returned handles
    for as long as trials may start (the holders end with the driver's job).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    context = ray.get_runtime_context()
    holder_cls = ray.remote(num_cpus=0, max_restarts=0)(TransitionsHolder)
    handles = []
    for dataset_id in dict.fromkeys(dataset_ids):
        transitions = load_transitions(dataset_id)
        reference = ray.put(transitions)
        handle = holder_cls.options(
            name=holder_name(dataset_id, context.get_job_id()),
            namespace=NAMESPACE,
            scheduling_strategy=NodeAffinitySchedulingStrategy(context.get_node_id(), soft=False),
        ).remote([reference])
        ray.get(handle.references.remote())
        handles.append(handle)
        logger.info(
            "Dataset '%s' (%d transitions) shared through Ray's object store",
            dataset_id,
            len(transitions),
        )
    return handles


def shared_transitions(dataset_id: str) -> Transitions | None:
    """The table the driver of this Ray job shared for ``dataset_id`` (``None`` if none).

    The table is also handed to :func:`provide_transitions` for the rest of the process.
    """
    import ray

    if not ray.is_initialized():
        return None
    name = holder_name(dataset_id, ray.get_runtime_context().get_job_id())
    try:
        holder = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
    (reference,) = ray.get(holder.references.remote())
    transitions = ray.get(reference)
    provide_transitions(transitions)
    logger.info("Dataset '%s' read from Ray's object store", dataset_id)
    return transitions


def release_transitions(handles: Iterable[Any]) -> None:
    """End the holder actors of :func:`share_transitions` (the tables leave the object store)."""
    import ray

    if ray.is_initialized():
        for handle in handles:
            ray.kill(handle)
