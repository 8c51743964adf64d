"""What a report is made of: the column names of its tables and :class:`ReportData`.

A leaf of the report modules: :mod:`.report` reads MLflow into a :class:`ReportData` and
tabulates it; :mod:`.plots` and :mod:`.densities` draw from it. All three import the names from
here, none imports another's.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fttpo_ray import metrics as m

#: Columns of the trial table (one row per trial run) besides its params.
RUN_ID = "run_id"
RUN_NAME = "run_name"
STATUS = "status"
PARENT = "parent_run_id"
CHECKPOINT_URI = "artifact_uri"
#: Columns of the metric histories (long format: one row per run, metric key and step).
KEY = "key"
STEP = "step"
VALUE = "value"
#: The evaluated policy (``thin`` or ``fat``) of a per-trial outcome row.
POLICY = "policy"
#: How a trial ended (``finished``, ``stopped_early``, ``failed``, ``interrupted``: the
#: ``fttpo.outcome`` tag); the results table never averages trials of different outcomes.
OUTCOME = "outcome"
#: Per summary row: finished trials of its group (all outcomes) as ``k/N``.
FINISHED_COUNT = "finished"
#: The iteration of the *last* evaluation (per trial; per summary row ``10`` or ``2-4``).
LAST_ITERATION = "iteration"

#: Per-trial outcome columns (values of the results table).
RETURN_LAST = "return_last"
RETURN_BEST = "return_best"
VIOLATION_LAST = "violation_rate_last"
VIOLATION_AT_BEST = "violation_rate_at_best"
SCORE_LAST = "normalized_score_last"
SCORE_BEST = "normalized_score_best"
PROHIBITED_MASS_LAST = "prohibited_mass_last"
#: The glucose simulator's clinical measures of the last evaluation (docs/metrics.md).
TIME_IN_RANGE_LAST = "time_in_range_last"
TIME_BELOW_70_LAST = "time_below_70_last"
TIME_BELOW_54_LAST = "time_below_54_last"
DEATHS_LAST = "deaths_per_100_episodes_last"
#: Per-trial outcome column -> the evaluation metric whose last value it is.
LAST_VALUE_METRICS = {
    TIME_IN_RANGE_LAST: m.TIME_IN_RANGE,
    TIME_BELOW_70_LAST: m.TIME_BELOW_70,
    TIME_BELOW_54_LAST: m.TIME_BELOW_54,
    DEATHS_LAST: m.DEATHS_PER_100_EPISODES,
}
VALUE_COLUMNS = (
    RETURN_LAST,
    RETURN_BEST,
    VIOLATION_LAST,
    VIOLATION_AT_BEST,
    SCORE_LAST,
    SCORE_BEST,
    PROHIBITED_MASS_LAST,
    *LAST_VALUE_METRICS,
)
#: Headings of the value columns in the printed tables and the plots.
LABELS = {
    RETURN_LAST: "return (last)",
    RETURN_BEST: "return (best)",
    VIOLATION_LAST: "violation rate (last)",
    VIOLATION_AT_BEST: "violation rate (at best)",
    SCORE_LAST: "norm. score (last)",
    SCORE_BEST: "norm. score (best)",
    PROHIBITED_MASS_LAST: "prohibited mass (last)",
    TIME_IN_RANGE_LAST: "time in range % (last)",
    TIME_BELOW_70_LAST: "<70 % (last)",
    TIME_BELOW_54_LAST: "<54 % (last)",
    DEATHS_LAST: "deaths / 100 episodes (last)",
}


@dataclass
class ReportData:
    """Trial runs of an experiment (one row each) and their metric histories (long format)."""

    experiment: str
    tracking_uri: str
    trials: pd.DataFrame
    history: pd.DataFrame
    group_columns: list[str]
    sweep: str = ""
