"""Reports from MLflow: results table (markdown + CSV) and plots of one experiment.

The trials of a sweep are the nested runs under its parent run (by default the latest sweep of
the experiment). For each trial and each evaluated policy (``thin``, ``fat``) the *last*
evaluation and the *best* one (highest return; its violation rate and score are reported with
it) are taken from the metric histories; the table then gives their mean ± standard error over
the trials of a group (= over seeds). Groups are the run, the variant, the environment, the
dataset and every swept key (``fat_q``, ``thin_q``, ``kl_weight`` where the algorithm has them).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fttpo_ray import metrics as m
from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning import results as res
from fttpo_ray.tuning.columns import (
    CHECKPOINT_URI,
    KEY,
    LABELS,
    PARENT,
    POLICY,
    PROHIBITED_MASS_LAST,
    RETURN_BEST,
    RETURN_LAST,
    RUN_ID,
    RUN_NAME,
    SCORE_BEST,
    SCORE_LAST,
    STATUS,
    STEP,
    VALUE,
    VALUE_COLUMNS,
    VIOLATION_AT_BEST,
    VIOLATION_LAST,
    ReportData,
)
from fttpo_ray.tuning.tracking import (
    ALWAYS_LOGGED_FIELDS,
    DATASET_ID_PARAM,
    ENV_PARAM,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
    PARENT_RUN_ID_TAG,
    RUN_PARAM,
    SEARCHED_TAG,
    SEED_PARAM,
    VARIANT_PARAM,
    find_experiment,
    open_tracking_store,
    resolve_tracking_uri,
)

logger = logging.getLogger(__name__)

LATEST_SWEEP = "latest"
ALL_SWEEPS = "all"

#: Columns that identify a group before the swept keys.
BASE_GROUP_COLUMNS = (RUN_PARAM, VARIANT_PARAM, ENV_PARAM, DATASET_ID_PARAM)

#: Metric histories read per trial and policy.
HISTORY_NAMES = (
    m.EPISODE_RETURN_MEAN,
    m.VIOLATION_RATE,
    m.NORMALIZED_SCORE,
    m.PROHIBITED_MASS_MEAN,
)

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
TRIALS_CSV = "trials.csv"
LEARNING_CURVES_PNG = "learning_curves.png"


@dataclass
class Report:
    """What :func:`write_report` produced."""

    out: Path
    table: pd.DataFrame
    summary: pd.DataFrame
    #: The short table printed at the end of a sweep (see :func:`compact_table`).
    compact: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _sweep_runs(client: Any, experiment_id: str) -> list[Any]:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = '{KIND_SWEEP}'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )


def load_report_data(
    experiment: str, *, tracking_uri: str | None = None, sweep: str = LATEST_SWEEP
) -> ReportData:
    """Read the trial runs of ``experiment`` (``sweep``: latest, all or a parent run id)."""
    uri = resolve_tracking_uri(tracking_uri)
    client = open_tracking_store(uri, must_exist=True)
    experiment_id = find_experiment(client, experiment)
    query = f"tags.`{KIND_TAG}` = '{KIND_TRIAL}'"
    chosen = ""
    if sweep == LATEST_SWEEP:
        sweeps = _sweep_runs(client, experiment_id)
        if not sweeps:
            raise ConfigError(
                f"experiment '{experiment}' has no sweep runs; run `fttpo sweep` first"
            )
        chosen = sweeps[0].info.run_id
    elif sweep != ALL_SWEEPS:
        chosen = sweep
    if chosen:
        query += f" and tags.`{PARENT_RUN_ID_TAG}` = '{chosen}'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=50_000)
    if not runs:
        raise ConfigError(
            f"experiment '{experiment}' has no trial runs"
            + (f" under sweep {chosen}" if chosen else "")
            + "; check --experiment and --mlflow-uri"
        )
    rows, history_rows, searched = [], [], set()
    for run in runs:
        params = dict(run.data.params)
        row: dict[str, Any] = {
            RUN_ID: run.info.run_id,
            RUN_NAME: run.info.run_name,
            STATUS: run.info.status,
            PARENT: run.data.tags.get(PARENT_RUN_ID_TAG, ""),
            CHECKPOINT_URI: run.info.artifact_uri,
            **params,
        }
        rows.append(row)
        searched.update(k for k in run.data.tags.get(SEARCHED_TAG, "").split(",") if k)
        for policy in m.POLICIES:
            for name in HISTORY_NAMES:
                key = m.evaluation_key(policy, name)
                if key not in run.data.metrics:
                    continue
                for point in client.get_metric_history(run.info.run_id, key):
                    history_rows.append((run.info.run_id, key, int(point.step), float(point.value)))
    trials = pd.DataFrame(rows)
    history = pd.DataFrame(history_rows, columns=[RUN_ID, KEY, STEP, VALUE])
    history = history.drop_duplicates([RUN_ID, KEY, STEP], keep="last")
    groups = [c for c in BASE_GROUP_COLUMNS if c in trials]
    for column in (*ALWAYS_LOGGED_FIELDS, *sorted(searched)):
        if column in trials and column not in groups and column != SEED_PARAM:
            groups.append(column)
    return ReportData(experiment, uri, trials, history, groups, chosen)


def trial_outcomes(data: ReportData) -> pd.DataFrame:
    """One row per (trial, policy): group columns, seed, last and best evaluation."""
    rows = []
    by_run = {run_id: part for run_id, part in data.history.groupby(RUN_ID)}
    for trial in data.trials.to_dict("records"):
        part = by_run.get(trial[RUN_ID])
        if part is None:
            continue
        for policy in m.POLICIES:
            returns = _series(part, m.evaluation_key(policy, m.EPISODE_RETURN_MEAN))
            if returns.empty:
                continue
            violations = _series(part, m.evaluation_key(policy, m.VIOLATION_RATE))
            scores = _series(part, m.evaluation_key(policy, m.NORMALIZED_SCORE))
            mass = _series(part, m.evaluation_key(policy, m.PROHIBITED_MASS_MEAN))
            best_step = int(returns.idxmax())
            row = {c: trial.get(c) for c in data.group_columns}
            row.update(
                {
                    RUN_ID: trial[RUN_ID],
                    SEED_PARAM: trial.get(SEED_PARAM),
                    POLICY: policy,
                    STEP: int(returns.index.max()),
                    RETURN_LAST: float(returns.iloc[-1]),
                    RETURN_BEST: float(returns.max()),
                    VIOLATION_LAST: _last(violations),
                    VIOLATION_AT_BEST: _at(violations, best_step),
                    SCORE_LAST: _last(scores),
                    SCORE_BEST: float(scores.max()) if not scores.empty else math.nan,
                    PROHIBITED_MASS_LAST: _last(mass),
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


def _series(part: pd.DataFrame, key: str) -> pd.Series:
    rows = part[part[KEY] == key].sort_values(STEP)
    return pd.Series(rows[VALUE].to_numpy(), index=rows[STEP].to_numpy(), dtype=float)


def _last(series: pd.Series) -> float:
    return float(series.iloc[-1]) if not series.empty else math.nan


def _at(series: pd.Series, step: int) -> float:
    return float(series.loc[step]) if step in series.index else math.nan


def summary_tables(data: ReportData) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(outcomes, summary, display)``: per-trial rows, numeric summary, printable table."""
    outcomes = trial_outcomes(data)
    groups = [*data.group_columns, POLICY]
    summary = res.summarize(outcomes, groups, VALUE_COLUMNS)
    display = res.display_table(summary, groups, VALUE_COLUMNS, LABELS)
    return outcomes, summary, display


#: Values of the short table that ``fttpo sweep`` prints (the report has them all).
COMPACT_VALUES = (RETURN_LAST, VIOLATION_LAST, SCORE_LAST)


def compact_table(display: pd.DataFrame, group_columns: list[str]) -> pd.DataFrame:
    """The printable table reduced to the group columns that vary (the run always kept), the
    policy, ``n`` and the last return, violation rate and normalised score."""
    keep = [
        c
        for c in group_columns
        if c in display and (c == RUN_PARAM or display[c].nunique(dropna=False) > 1)
    ]
    values = [LABELS[v] for v in COMPACT_VALUES if LABELS[v] in display]
    return display[[*keep, POLICY, res.N_COLUMN, *values]]


def write_report(
    experiment: str,
    out: str | Path,
    *,
    tracking_uri: str | None = None,
    sweep: str = LATEST_SWEEP,
    densities: bool = True,
) -> Report:
    """Write ``results.md``, ``results.csv``, ``trials.csv`` and the PNG plots into ``out``."""
    from fttpo_ray.tuning import plots
    from fttpo_ray.tuning.densities import plot_policy_densities

    out = Path(out).expanduser().resolve()
    data = load_report_data(experiment, tracking_uri=tracking_uri, sweep=sweep)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create report directory '{out}' ({err.strerror}); use --out"
        ) from None
    outcomes, summary, display = summary_tables(data)
    report = Report(
        out=out,
        table=display,
        summary=summary,
        compact=compact_table(display, data.group_columns),
    )

    summary.to_csv(out / RESULTS_CSV, index=False)
    outcomes.to_csv(out / TRIALS_CSV, index=False)
    report.files += [out / RESULTS_CSV, out / TRIALS_CSV]

    curves = plots.learning_curves(data, out / LEARNING_CURVES_PNG)
    if curves:
        report.files.append(curves)
    report.files += plots.heatmaps(outcomes, data.group_columns, out)
    if densities:
        try:
            report.files += plot_policy_densities(data, out)
        except Exception as err:  # noqa: BLE001 - a density plot must not lose the report
            note = f"densities not plotted: {' '.join(str(err).split())[:200]}"
            logger.warning(note)
            report.notes.append(note)
    (out / RESULTS_MD).write_text(_markdown(data, display, report), encoding="utf-8")
    report.files.insert(0, out / RESULTS_MD)
    logger.info("Report of '%s' written to %s", experiment, out)
    return report


def _markdown(data: ReportData, display: pd.DataFrame, report: Report) -> str:
    n_trials = len(data.trials)
    lines = [
        f"# Results of `{data.experiment}`",
        "",
        f"- MLflow store: `{data.tracking_uri}`",
        f"- sweep (parent run): `{data.sweep or 'all sweeps'}`; {n_trials} trial runs",
        "- mean ± standard error over the trials of each row (one per seed); `n` = trials.",
        "- *last*: the final evaluation; *best*: the evaluation with the highest return "
        "(the violation rate is the one of that evaluation).",
        "- `thin` = the sparse acting policy, `fat` = the full-support (proposal) policy; "
        "RLlib's algorithms act with a full-support policy, reported as `fat`.",
        "",
        res.markdown(display),
        "",
    ]
    pngs = [f for f in report.files if f.suffix == ".png"]
    if pngs:
        lines += ["## Plots", ""]
        lines += [f"![{f.stem}]({f.name})" for f in pngs]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)
