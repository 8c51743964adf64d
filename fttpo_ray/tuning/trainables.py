"""Trainables by their registered Tune name: the class, its kind, its default config and its
report vocabulary.

A leaf of the tuning modules (it imports no other tuning module): :mod:`.schema` checks a YAML's
``config`` keys against :func:`algorithm_defaults`, :mod:`.space` builds what Tune runs.
``FtTPO`` is registered with Tune and RLlib by the package's import (:mod:`fttpo_ray.registry`),
which Python runs before any module of the package, this one included.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fttpo_ray.algorithms.vocabulary import NO_VOCABULARY, ReportVocabulary
from fttpo_ray.errors import ConfigError

#: Kinds of trainables: FtTPO, another RLlib algorithm, or any other Tune trainable.
KIND_FTTPO = "fttpo"
KIND_RLLIB = "rllib"
KIND_TRAINABLE = "trainable"

#: Algorithm names in the hint of the "unknown algorithm" error.
KNOWN_ALGORITHMS_HINT = "FtTPO, IQL, CQL, BC, MARWIL"


def trainable_class(name: str) -> Any:
    """The Tune trainable class registered as ``name`` (FtTPO and RLlib's algorithms included)."""
    from ray.tune.error import TuneError
    from ray.tune.registry import get_trainable_cls

    try:
        return get_trainable_cls(name)
    except TuneError:
        raise ConfigError(
            f"unknown algorithm '{name}'; use a registered Tune/RLlib algorithm such as "
            f"{KNOWN_ALGORITHMS_HINT} (names are case-sensitive), or register your trainable "
            "with ray.tune.register_trainable before running"
        ) from None


def trainable_kind(name: str) -> str:
    """:data:`KIND_FTTPO`, :data:`KIND_RLLIB` or :data:`KIND_TRAINABLE`."""
    from ray.rllib.algorithms.algorithm import Algorithm

    from fttpo_ray.algorithms.fttpo.fttpo import FtTPO

    cls = trainable_class(name)
    if isinstance(cls, type) and issubclass(cls, FtTPO):
        return KIND_FTTPO
    if isinstance(cls, type) and issubclass(cls, Algorithm):
        return KIND_RLLIB
    return KIND_TRAINABLE


#: Report vocabularies declared for trainables by name (:func:`register_report_vocabulary`).
_DECLARED_VOCABULARIES: dict[str, ReportVocabulary] = {}


def register_report_vocabulary(name: str, vocabulary: ReportVocabulary) -> None:
    """Declare the report vocabulary of the trainable registered as ``name`` (a trainable that
    is not FtTPO but reports like it; FtTPO and its subclasses need no declaration)."""
    _DECLARED_VOCABULARIES[name] = vocabulary


def report_vocabulary(name: str) -> ReportVocabulary:
    """The report vocabulary of the trainable registered as ``name``: the one declared for it
    with :func:`register_report_vocabulary`, else FtTPO's
    (:mod:`fttpo_ray.algorithms.fttpo.vocabulary`) for FtTPO and its subclasses, else
    :data:`~fttpo_ray.algorithms.vocabulary.NO_VOCABULARY` (RLlib's algorithms, other
    trainables, and a name not registered in this process: a trainable that only the sweep's
    process registered, met again in a report).
    """
    if name in _DECLARED_VOCABULARIES:
        return _DECLARED_VOCABULARIES[name]
    try:
        kind = trainable_kind(name)
    except ConfigError:
        return NO_VOCABULARY
    if kind != KIND_FTTPO:
        return NO_VOCABULARY
    from fttpo_ray.algorithms.fttpo.vocabulary import VOCABULARY

    return VOCABULARY


@cache
def _default_config_dict(name: str) -> dict[str, Any] | None:
    if trainable_kind(name) == KIND_TRAINABLE:
        return None
    return trainable_class(name).get_default_config().to_dict()


def algorithm_defaults(name: str) -> dict[str, Any] | None:
    """Default config of the algorithm ``name`` as a dict (``None`` for a plain trainable);
    an unknown name is a :class:`ConfigError`."""
    return _default_config_dict(name)
