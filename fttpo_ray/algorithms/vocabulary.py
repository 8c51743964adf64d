"""How reports name an algorithm's runs: the report vocabulary an algorithm declares.

The tuning and reporting layers are generic: they read an algorithm's vocabulary (looked up by
its registered name, :func:`fttpo_ray.tuning.trainables.report_vocabulary`) instead of spelling
its hyper-parameters. An algorithm that declares none (RLlib's own, a plain Tune trainable) has
:data:`NO_VOCABULARY`: its runs are told apart by the run, the algorithm and the swept keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReportParameter:
    """A hyper-parameter that identifies a run in tables and plots.

    ``key`` is the config attribute; it is also the trial's MLflow param and the table's column.
    ``label`` is its display name on plot axes.
    """

    key: str
    label: str


@dataclass(frozen=True)
class Heatmap:
    """A report's heat-map: one policy's last results over (``rows``, ``columns``), one panel
    per value of ``panels`` (``None``: one panel), one figure per run and variant."""

    rows: ReportParameter
    columns: ReportParameter
    panels: ReportParameter | None
    #: The evaluated policy drawn (a name of :data:`fttpo_ray.metrics.POLICIES`).
    policy: str


@dataclass(frozen=True)
class ReportVocabulary:
    """What identifies an algorithm's runs in reports."""

    #: Logged as MLflow params whenever the config has them, and grouped by in tables.
    parameters: tuple[ReportParameter, ...] = ()
    #: The config attribute whose value labels a trial's variant (``None``: the algorithm's
    #: name, lower case, is the label).
    variant_key: str | None = None
    heatmap: Heatmap | None = None
    #: The keys of :attr:`parameters` that mean something for a run of a variant (the value of
    #: :attr:`variant_key`): the others are neither logged nor shown for its runs (tables show
    #: ``–``). ``None``: every parameter applies to every variant.
    variant_parameters: Callable[[str], tuple[str, ...]] | None = None
    #: Sections of the algorithm's results (``<section>/<name>``) logged to MLflow in full,
    #: besides the evaluation and learner metrics of :mod:`fttpo_ray.metrics`.
    metric_sections: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """The config keys of :attr:`parameters`, in order."""
        return tuple(parameter.key for parameter in self.parameters)

    def keys_for(self, variant: str) -> tuple[str, ...]:
        """The config keys of :attr:`parameters` that apply to a run of ``variant``, in order."""
        if self.variant_parameters is None:
            return self.keys
        applicable = set(self.variant_parameters(variant))
        return tuple(key for key in self.keys if key in applicable)


#: The vocabulary of an algorithm that declares none.
NO_VOCABULARY = ReportVocabulary()
