"""Reports from MLflow: results table (markdown + CSV) and plots of one experiment.

The trials of a sweep are the trial runs tagged with its sweep run (by default the latest sweep
of the experiment), top-level runs since the dashboard layout of
:mod:`fttpo_ray.tuning.tracking`, nested under the sweep run in stores written before: both are
read. For each trial and each evaluated policy (``thin``, ``fat``) the *last*
evaluation and the *best* one (highest return; its violation rate and score are reported with
it) are taken from the metric histories; the table then gives their mean ± standard error over
the trials of a group (= over seeds). Groups are the environment, the dataset, the run, the
variant, the hyper-parameters of the algorithms' report vocabularies
(:func:`fttpo_ray.tuning.trainables.report_vocabulary`) and every swept key.

Trials that did not finish (stopped early by a scheduler, failed, interrupted: the
``fttpo.outcome`` tag) are never averaged with finished ones: the outcome is part of a row's key,
each row shows the iteration of its *last* evaluation and how many trials of its group finished
(``finished`` = ``k/N``). A sweep over several environments gets one table per environment in
``results.md``; the normalised score compares rows across environments.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fttpo_ray import metrics as m
from fttpo_ray.errors import ConfigError
from fttpo_ray.reporting import results as res
from fttpo_ray.reporting.columns import (
    CHECKPOINT_URI,
    FINISHED_COUNT,
    KEY,
    LABELS,
    LAST_ITERATION,
    LAST_VALUE_METRICS,
    OUTCOME,
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
    TIME_BELOW_54_LAST,
    TIME_IN_RANGE_LAST,
    VALUE,
    VALUE_COLUMNS,
    VIOLATION_AT_BEST,
    VIOLATION_LAST,
    ReportData,
)
from fttpo_ray.tuning.tracking import (
    ALGORITHM_PARAM,
    DATASET_ID_PARAM,
    ENV_PARAM,
    FAILED,
    FINISHED,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
    OUTCOME_FAILED,
    OUTCOME_FINISHED,
    OUTCOME_INTERRUPTED,
    OUTCOME_TAG,
    OUTCOMES,
    PARENT_RUN_ID_TAG,
    RUN_PARAM,
    SEARCHED_TAG,
    SEED_PARAM,
    SWEEP_RUN_ID_TAG,
    VARIANT_PARAM,
    find_experiment,
    open_tracking_store,
    resolve_tracking_uri,
    sweep_filters,
)
from fttpo_ray.tuning.trainables import report_vocabulary

if TYPE_CHECKING:
    from fttpo_ray.algorithms.vocabulary import ReportVocabulary
    from fttpo_ray.tuning.sweep import SweepOutcome

logger = logging.getLogger(__name__)

#: Where ``fttpo sweep`` writes the report of a sweep: ``<sweep dir>/report``, also the artifact
#: directory of the sweep's parent run.
SWEEP_REPORT_DIR = "report"
LATEST_SWEEP = "latest"
ALL_SWEEPS = "all"

#: Columns that identify a group before the swept keys.
BASE_GROUP_COLUMNS = (ENV_PARAM, DATASET_ID_PARAM, RUN_PARAM, VARIANT_PARAM)

#: Metric histories read per trial and policy.
HISTORY_NAMES = (
    m.EPISODE_RETURN_MEAN,
    m.VIOLATION_RATE,
    m.NORMALIZED_SCORE,
    m.PROHIBITED_MASS_MEAN,
    *LAST_VALUE_METRICS.values(),
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
    #: Markdown of the reference rows (``fttpo_ray.reporting.references``), where there are any.
    sections: list[str] = field(default_factory=list)


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
    queries = [f"{query} and {sweep}" for sweep in sweep_filters(chosen)] if chosen else [query]
    found = {}
    for text in queries:
        for run in client.search_runs([experiment_id], filter_string=text, max_results=50_000):
            found.setdefault(run.info.run_id, run)
    runs = list(found.values())
    if not runs:
        raise ConfigError(
            f"experiment '{experiment}' has no trial runs"
            + (f" under sweep {chosen}" if chosen else "")
            + "; check --experiment and --mlflow-uri"
        )
    rows, history_rows, searched = [], [], set()
    for run in runs:
        params = applicable_params(run.data.params)
        tags = run.data.tags
        row: dict[str, Any] = {
            RUN_ID: run.info.run_id,
            RUN_NAME: run.info.run_name,
            STATUS: run.info.status,
            OUTCOME: run.data.tags.get(OUTCOME_TAG) or _status_outcome(run.info.status),
            PARENT: tags.get(SWEEP_RUN_ID_TAG) or tags.get(PARENT_RUN_ID_TAG, ""),
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
    for column in (*vocabulary_keys(trials), *sorted(searched)):
        if column in trials and column not in groups and column != SEED_PARAM:
            groups.append(column)
    return ReportData(experiment, uri, trials, history, groups, chosen)


def applicable_params(params: dict[str, str]) -> dict[str, str]:
    """A trial's params without the report parameters that do not apply to its variant (a
    store written before they were left out has ``thin_q`` on Tsallis-AWAC runs): the tables
    show ``–`` there."""
    algorithm = params.get(ALGORITHM_PARAM)
    variant = params.get(VARIANT_PARAM)
    if algorithm is None or variant is None:
        return dict(params)
    vocabulary = report_vocabulary(algorithm)
    inapplicable = set(vocabulary.keys) - set(vocabulary.keys_for(variant))
    return {key: value for key, value in params.items() if key not in inapplicable}


def vocabularies(trials: pd.DataFrame) -> list[ReportVocabulary]:
    """The report vocabularies of the trials' algorithms (their ``algorithm`` param), each once,
    in the order the algorithms first appear."""
    if ALGORITHM_PARAM not in trials:
        return []
    found = [report_vocabulary(str(a)) for a in trials[ALGORITHM_PARAM].dropna().unique()]
    return list(dict.fromkeys(found))


def vocabulary_keys(trials: pd.DataFrame) -> list[str]:
    """The report parameters of the trials' algorithms, each once, in their vocabularies'
    order."""
    keys = [key for vocabulary in vocabularies(trials) for key in vocabulary.keys]
    return list(dict.fromkeys(keys))


def _status_outcome(status: str) -> str:
    """The outcome of a run without an ``fttpo.outcome`` tag (older sweeps), from its status."""
    if status == FINISHED:
        return OUTCOME_FINISHED
    if status == FAILED:
        return OUTCOME_FAILED
    return OUTCOME_INTERRUPTED


def trial_outcomes(data: ReportData) -> pd.DataFrame:
    """One row per (trial, policy): group columns, seed, outcome, last and best evaluation.

    A trial without any evaluation (one that failed or was interrupted before its first) has
    one row with policy ``–`` and no values, so that it is still counted.
    """
    rows = []
    by_run = {run_id: part for run_id, part in data.history.groupby(RUN_ID)}
    for trial in data.trials.to_dict("records"):
        part = by_run.get(trial[RUN_ID])
        if part is None:
            row = {c: trial.get(c) for c in data.group_columns}
            row.update(
                {
                    RUN_ID: trial[RUN_ID],
                    SEED_PARAM: trial.get(SEED_PARAM),
                    POLICY: res.MISSING,
                    OUTCOME: trial.get(OUTCOME),
                }
            )
            rows.append(row)
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
                    OUTCOME: trial.get(OUTCOME),
                    STEP: int(returns.index.max()),
                    RETURN_LAST: float(returns.iloc[-1]),
                    RETURN_BEST: float(returns.max()),
                    VIOLATION_LAST: _last(violations),
                    VIOLATION_AT_BEST: _at(violations, best_step),
                    SCORE_LAST: _last(scores),
                    SCORE_BEST: float(scores.max()) if not scores.empty else math.nan,
                    PROHIBITED_MASS_LAST: _last(mass),
                    **{
                        column: _last(_series(part, m.evaluation_key(policy, metric)))
                        for column, metric in LAST_VALUE_METRICS.items()
                    },
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
    groups = [*data.group_columns, POLICY, OUTCOME]
    summary = res.summarize(outcomes, groups, VALUE_COLUMNS)
    if not outcomes.empty:
        summary = _with_outcome_counts(summary, outcomes, groups)
    display = res.display_table(
        summary, groups, VALUE_COLUMNS, LABELS, extra_columns=(FINISHED_COUNT, LAST_ITERATION)
    )
    return outcomes, summary, display


def _with_outcome_counts(
    summary: pd.DataFrame, outcomes: pd.DataFrame, groups: list[str]
) -> pd.DataFrame:
    """``summary`` (one row per group and outcome, in ``groupby`` order) with the finished
    trials of each group (``k/N`` over its outcomes) and the iteration(s) of the rows' last
    evaluations, finished rows first within a group."""
    base = groups[:-1]

    def key_of(values: Any) -> tuple[str, ...]:
        return tuple(str(v) for v in values)

    totals: dict[tuple[str, ...], int] = {}
    finished: dict[tuple[str, ...], int] = {}
    for record in outcomes[[*base, OUTCOME]].itertuples(index=False):
        key = key_of(record[:-1])
        totals[key] = totals.get(key, 0) + 1
        finished[key] = finished.get(key, 0) + int(record[-1] == OUTCOME_FINISHED)
    counts, iterations, order = [], [], []
    first_seen: dict[tuple[str, ...], int] = {}
    for key, part in outcomes.groupby(groups, dropna=False, sort=True):
        group = key_of(key[:-1])
        counts.append(f"{finished[group]}/{totals[group]}")
        steps = pd.to_numeric(part[STEP], errors="coerce").dropna() if STEP in part else []
        if len(steps) == 0:
            iterations.append(res.MISSING)
        else:
            low, high = int(min(steps)), int(max(steps))
            iterations.append(str(low) if low == high else f"{low}-{high}")
        rank = OUTCOMES.index(key[-1]) if key[-1] in OUTCOMES else len(OUTCOMES)
        order.append((first_seen.setdefault(group, len(first_seen)), rank))
    summary = summary.copy()
    summary[FINISHED_COUNT] = counts
    summary[LAST_ITERATION] = iterations
    positions = sorted(range(len(order)), key=order.__getitem__)
    return summary.iloc[positions].reset_index(drop=True)


#: Values of the short table that ``fttpo sweep`` prints (the report has them all).
COMPACT_VALUES = (RETURN_LAST, VIOLATION_LAST, SCORE_LAST, TIME_IN_RANGE_LAST, TIME_BELOW_54_LAST)


def compact_table(display: pd.DataFrame, group_columns: list[str]) -> pd.DataFrame:
    """The printable table reduced to the group columns that vary (the run always kept), the
    policy, ``n`` and the last return, violation rate and normalised score."""
    keep = [
        c
        for c in group_columns
        if c in display and (c == RUN_PARAM or display[c].nunique(dropna=False) > 1)
    ]
    counts = [c for c in (OUTCOME, res.N_COLUMN, FINISHED_COUNT, LAST_ITERATION) if c in display]
    values = [LABELS[v] for v in COMPACT_VALUES if LABELS[v] in display]
    return display[[*keep, POLICY, *counts, *values]]


def write_report(
    experiment: str,
    out: str | Path,
    *,
    tracking_uri: str | None = None,
    sweep: str = LATEST_SWEEP,
    densities: bool = True,
) -> Report:
    """Write ``results.md``, ``results.csv``, ``trials.csv`` and the PNG plots into ``out``."""
    from fttpo_ray.reporting import plots
    from fttpo_ray.reporting.densities import plot_policy_densities
    from fttpo_ray.reporting.references import reference_section

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
    finished = outcomes[outcomes[OUTCOME] == OUTCOME_FINISHED] if not outcomes.empty else outcomes
    for vocabulary in vocabularies(data.trials):
        if vocabulary.heatmap is not None:
            report.files += plots.heatmaps(finished, vocabulary.heatmap, out)
    if densities:
        try:
            report.files += plot_policy_densities(data, out)
        except Exception as err:  # noqa: BLE001 - a density plot must not lose the report
            note = f"densities not plotted: {' '.join(str(err).split())[:200]}"
            logger.warning(note)
            report.notes.append(note)
    try:
        references = reference_section(data, out)
        report.files += references.files
        report.sections += references.lines
    except Exception as err:  # noqa: BLE001 - reference rows must not lose the report
        note = f"reference rows not computed: {' '.join(str(err).split())[:200]}"
        logger.warning(note)
        report.notes.append(note)
    (out / RESULTS_MD).write_text(_markdown(data, display, report), encoding="utf-8")
    report.files.insert(0, out / RESULTS_MD)
    logger.info("Report of '%s' written to %s", experiment, out)
    return report


def _tables_by_environment(display: pd.DataFrame) -> list[str]:
    """The results table, one section per environment when there are several."""
    if ENV_PARAM not in display or display[ENV_PARAM].nunique() < 2:
        return [res.markdown(display), ""]
    lines = []
    for env, part in display.groupby(ENV_PARAM, sort=False):
        lines += [f"## {env}", "", res.markdown(part.drop(columns=[ENV_PARAM])), ""]
    return lines


def _markdown(data: ReportData, display: pd.DataFrame, report: Report) -> str:
    n_trials = len(data.trials)
    lines = [
        f"# Results of `{data.experiment}`",
        "",
        f"- MLflow store: `{data.tracking_uri}`",
        f"- sweep (parent run): `{data.sweep or 'all sweeps'}`; {n_trials} trial runs",
        "- mean ± standard error over the trials of each row (one per seed); `n` = trials.",
        "- *last*: the final evaluation (at `iteration`); *best*: the evaluation with the "
        "highest return (the violation rate is the one of that evaluation).",
        "- `outcome`: trials that did not finish (`stopped_early` by the scheduler, `failed`, "
        "`interrupted`) have rows of their own, never averaged with finished ones; "
        "`finished` = finished trials of the row's group / all its trials.",
        "- `thin` = the sparse acting policy, `fat` = the full-support (proposal) policy; "
        "RLlib's algorithms act with a full-support policy, reported as `fat`; `certified` = "
        "the thin support cut to its certified doses (`safety_certificate`, docs/algorithm.md "
        "§5.1).",
        "",
        *_tables_by_environment(display),
        *report.sections,
    ]
    pngs = [f for f in report.files if f.suffix == ".png"]
    if pngs:
        lines += ["## Plots", ""]
        lines += [f"![{f.stem}]({f.name})" for f in pngs]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def write_sweep_report(outcome: SweepOutcome) -> Report:
    """The report of the sweep that ended with ``outcome`` (its trials only, no densities),
    written to ``<sweep dir>/report`` and logged as artifacts of the sweep's parent run; what
    ``fttpo sweep`` prints at its end is the report's :attr:`Report.compact` table."""
    out = outcome.sweep_dir / SWEEP_REPORT_DIR
    report = write_report(
        outcome.experiment,
        out,
        tracking_uri=outcome.tracking_uri,
        sweep=outcome.parent_run_id,
        densities=False,
    )
    client = open_tracking_store(outcome.tracking_uri, must_exist=True)
    client.log_artifacts(outcome.parent_run_id, str(report.out), SWEEP_REPORT_DIR)
    return report
