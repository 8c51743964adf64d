"""FtTPO's report vocabulary: the hyper-parameters that identify an FtTPO run in tables and
plots, the config attribute naming its variant, and the heat-map a report draws of it.

Declared once, here; the generic tuning and reporting layers look it up by the algorithm's
registered name (:func:`fttpo_ray.tuning.trainables.report_vocabulary`) and never spell these
names themselves.
"""

from __future__ import annotations

from fttpo_ray import metrics as m
from fttpo_ray.algorithms.fttpo.selection import SELECTED, SELECTION
from fttpo_ray.algorithms.vocabulary import Heatmap, ReportParameter, ReportVocabulary
from fttpo_ray.errors import ConfigError
from fttpo_ray.rl_module.variants import variant_spec

#: q of the full-support (proposal) policy.
FAT_Q = ReportParameter("fat_q", "fat_q")
#: q of the sparse acting policy.
THIN_Q = ReportParameter("thin_q", "thin_q")
#: τ, the weight of the KL term in the policy-improvement objective.
KL_WEIGHT = ReportParameter("kl_weight", "kl_weight (τ)")

#: The hyper-parameters that identify an FtTPO run in tables (with their display names).
REPORT_PARAMETERS = (FAT_Q, THIN_Q, KL_WEIGHT)
#: The config attribute naming the variant (fttpo, rar, reverse_kl, fat_only).
VARIANT_KEY = "variant"
#: The thin policy's last results over (thin_q, kl_weight), one panel per fat_q.
HEATMAP = Heatmap(rows=THIN_Q, columns=KL_WEIGHT, panels=FAT_Q, policy=m.THIN)


def variant_parameters(variant: str) -> tuple[str, ...]:
    """The report parameters of a variant: ``thin_q`` only where it has a thin policy (not
    Tsallis-AWAC, ``fat_only``); every one for a variant this version does not know (a store
    written by another version)."""
    keys = tuple(parameter.key for parameter in REPORT_PARAMETERS)
    try:
        spec = variant_spec(variant)
    except ConfigError:
        return keys
    return tuple(key for key in keys if spec.has_thin or key != THIN_Q.key)


VOCABULARY = ReportVocabulary(
    parameters=REPORT_PARAMETERS,
    variant_key=VARIANT_KEY,
    heatmap=HEATMAP,
    variant_parameters=variant_parameters,
    # Offline model selection on held-out episodes (docs/algorithm.md §2.2): the criteria of
    # every iteration and the iteration selected so far.
    metric_sections=(SELECTION, SELECTED),
)
