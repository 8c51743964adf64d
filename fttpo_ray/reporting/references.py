"""Reference rows and the return/violation frontier of a report (``fttpo report``).

For every environment of the report's trials that has an oracle (``prohibited``) and a 1-D
action, the reference rows of its kind: the glucose environment gets its own
(:func:`glucose_section`, below); every other one (the treatment simulators) gets
no treatment, uniform random, the myopic oracle and the best constant dose
(:mod:`fttpo_ray.evaluation.reference`, docs/algorithm.md §5), rolled out on the evaluation
episodes ``EVALUATION_SEED + i`` — as many as the trials' last evaluation had (the default
evaluation seed; a sweep with another ``evaluation.seed`` is compared on other episodes; trials
that log no episode count get no reference rows) — and
the frontier PNG (:mod:`fttpo_ray.reporting.frontier`): every constant dose of the grid, the
references and each group's policies (return mean ± s.e. over seeds of the last evaluation,
violations pooled over seeds with the 95 % Clopper–Pearson bound). The certified policy of runs
with a safety certificate appears per ``certificate_alpha``.

On the glucose environment (:mod:`fttpo_ray.evaluation.glucose_reference`): no bolus, the clean
basal-bolus controller, the behaviour policy of each dataset of the trials (its noise σ read
from the dataset's metadata; no row where a dataset does not record it) and the best
state-independent U-per-gram rule (chosen on selection episodes), on the same evaluation
episodes, with time in range and the other glucose percentages; and a frontier of **time in
range** (what a clinician reads first; x axis, higher is better) against the prohibited-bolus
rate with its 95 % upper bound (y axis), as the treatment frontier draws return against
violations: the references, the ratio grid (on its selection episodes) and each group's
learned policies (time in range mean ± s.e. over seeds).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import pandas as pd

from fttpo_ray import metrics as m
from fttpo_ray.data.collect import META_BOLUS_NOISE
from fttpo_ray.data.minari_files import read_metadata
from fttpo_ray.defaults import EVALUATION_SEED
from fttpo_ray.errors import DatasetError
from fttpo_ray.evaluation.glucose_reference import (
    BASAL_BOLUS,
    BEST_RATIO,
    SELECTION_EPISODES,
    GlucoseReference,
    behaviour_name,
    glucose_references,
    is_glucose_env,
)
from fttpo_ray.evaluation.reference import (
    MYOPIC_ORACLE,
    NO_TREATMENT,
    UNIFORM_RANDOM,
    constant_dose_reference,
    reference_policies,
)
from fttpo_ray.evaluation.safety import clopper_pearson_upper
from fttpo_ray.reporting import results as res
from fttpo_ray.reporting.columns import RUN_ID, ReportData
from fttpo_ray.reporting.frontier import (
    CERTIFIED,
    CONSTANT,
    LEARNED,
    RATIO,
    REFERENCE,
    FrontierPoint,
    frontier_plot,
)
from fttpo_ray.tuning.tracking import (
    DATASET_ID_PARAM,
    ENV_PARAM,
    SEED_PARAM,
    open_tracking_store,
)

logger = logging.getLogger(__name__)

FRONTIER_PREFIX = "frontier"
#: The user's cache directory variable (XDG), and fttpo-ray's directory in it.
XDG_CACHE_HOME = "XDG_CACHE_HOME"
CACHE_SUBDIR = "fttpo-ray"
#: Columns of the reference table.
REFERENCE_COLUMNS = ("policy", "return", "violation rate", "95% UB", "deaths / 100 episodes")
#: Columns of the glucose reference table: the glucose percentages (of 3-minute samples) and
#: mean glucose (mg/dL) by metric name, between the return and the violations.
GLUCOSE_PERCENT_COLUMNS = (
    ("time in range", m.TIME_IN_RANGE),
    ("<70", m.TIME_BELOW_70),
    ("<54", m.TIME_BELOW_54),
    (">180", m.TIME_ABOVE_180),
)
GLUCOSE_MEAN_COLUMN = "mean glucose"
GLUCOSE_COLUMNS = (
    "policy",
    "return",
    *(c for c, _ in GLUCOSE_PERCENT_COLUMNS),
    GLUCOSE_MEAN_COLUMN,
    *REFERENCE_COLUMNS[2:],
)


@dataclass
class ReferenceSection:
    """Markdown lines and files of the reference rows and frontiers of a report."""

    lines: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _has_oracle(env_id: str) -> bool:
    try:
        env = gym.make(env_id)
    except Exception:  # noqa: BLE001 - an env that cannot be made here has no reference rows
        return False
    try:
        return hasattr(env.unwrapped, "prohibited") and env.action_space.shape == (1,)
    finally:
        env.close()


def _final_metrics(data: ReportData) -> dict[str, dict[str, float]]:
    """Each trial's latest logged metrics (its last evaluation), by run id."""
    client = open_tracking_store(data.tracking_uri, must_exist=True)
    return {run_id: dict(client.get_run(run_id).data.metrics) for run_id in data.trials[RUN_ID]}


def _reference_row(name: str, r: dict[str, float]) -> dict[str, str]:
    return {
        "policy": name,
        "return": res.format_mean_sem(r[m.EPISODE_RETURN_MEAN], r[m.EPISODE_RETURN_SEM]),
        "violation rate": f"{r[m.VIOLATION_RATE]:.4f}",
        "95% UB": f"{r[m.VIOLATION_RATE_UB95]:.4f}",
        "deaths / 100 episodes": f"{r[m.DEATHS_PER_100_EPISODES]:g}",
    }


def _learned_points(
    trials: pd.DataFrame,
    finals: dict[str, dict[str, float]],
    group_columns: list[str],
    value: str = m.EPISODE_RETURN_MEAN,
) -> list[FrontierPoint]:
    """Each group's policies: ``value`` (mean ± s.e. over seeds) and violations pooled over
    seeds, from the trials' last evaluations (trials that did not log ``value`` left out)."""
    varying = [
        c
        for c in group_columns
        if c in trials and c != SEED_PARAM and trials[c].nunique(dropna=False) > 1
    ]
    points = []
    for key, part in trials.groupby(varying or [ENV_PARAM], dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c}={v}" for c, v in zip(varying, key, strict=False))
        for policy in m.POLICIES:
            rows = [
                finals[r]
                for r in part[RUN_ID]
                if m.evaluation_key(policy, m.ACTIONS) in finals[r]
                and m.evaluation_key(policy, value) in finals[r]
            ]
            if not rows:
                continue
            returns = [r[m.evaluation_key(policy, value)] for r in rows]
            violations = int(sum(r[m.evaluation_key(policy, m.VIOLATIONS)] for r in rows))
            actions = int(sum(r[m.evaluation_key(policy, m.ACTIONS)] for r in rows))
            se = res.sem(returns)
            points.append(
                FrontierPoint(
                    label=f"{policy} {label}".strip(),
                    kind=CERTIFIED if policy == m.CERTIFIED else LEARNED,
                    episode_return=float(sum(returns) / len(returns)),
                    return_sem=se if math.isfinite(se) else 0.0,
                    violation_rate=violations / max(actions, 1),
                    violation_ub95=clopper_pearson_upper(violations, actions),
                )
            )
    return points


def reference_cache_dir() -> Path:
    """Where reports keep rolled-out glucose reference rows: ``$XDG_CACHE_HOME/fttpo-ray``
    (default ``~/.cache/fttpo-ray``)."""
    return Path(os.environ.get(XDG_CACHE_HOME) or Path.home() / ".cache") / CACHE_SUBDIR


def reference_section(data: ReportData, out: Path) -> ReferenceSection:
    """Reference tables and frontier PNGs for the report's treatment-like environments."""
    section = ReferenceSection()
    if ENV_PARAM not in data.trials:
        return section
    envs = [e for e in data.trials[ENV_PARAM].dropna().unique() if _has_oracle(str(e))]
    if not envs:
        return section
    finals = _final_metrics(data)
    for env_id in envs:
        trials = data.trials[data.trials[ENV_PARAM] == env_id]
        counts = [
            finals[r][key]
            for r in trials[RUN_ID]
            for key in (m.evaluation_key(p, m.EPISODES) for p in m.POLICIES)
            if key in finals[r]
        ]
        if not counts:  # no evaluation logged its episode count: nothing to pair with
            continue
        episodes = int(max(counts))
        if is_glucose_env(env_id):
            reference = glucose_references(
                env_id,
                episodes=episodes,
                seed=EVALUATION_SEED,
                selection_episodes=min(SELECTION_EPISODES, episodes),
                sigmas=_behaviour_sigmas(trials),
                cache_dir=reference_cache_dir(),
            )
            learned = _learned_points(trials, finals, data.group_columns, value=m.TIME_IN_RANGE)
            glucose = glucose_section(env_id, reference, learned, out)
            section.lines += glucose.lines
            section.files += glucose.files
            continue
        refs = reference_policies(env_id, episodes=episodes, seed=EVALUATION_SEED)
        const = constant_dose_reference(env_id, episodes=episodes, seed=EVALUATION_SEED)
        best = f"best constant dose (a = {const.best_dose:g})"
        rows = [
            _reference_row(n, refs[n])
            for n in (NO_TREATMENT, UNIFORM_RANDOM, MYOPIC_ORACLE)
            if n in refs
        ]
        rows.append(_reference_row(best, const.best))
        points = [
            FrontierPoint(
                f"{d:g}",
                CONSTANT,
                r[m.EPISODE_RETURN_MEAN],
                r[m.EPISODE_RETURN_SEM],
                r[m.VIOLATION_RATE],
                r[m.VIOLATION_RATE_UB95],
                annotate=round(d * 10) == d * 10,
            )
            for d, r in sorted(const.evaluation.items())
        ]
        for name in (NO_TREATMENT, MYOPIC_ORACLE):
            if name in refs:
                r = refs[name]
                points.append(
                    FrontierPoint(
                        name,
                        REFERENCE,
                        r[m.EPISODE_RETURN_MEAN],
                        r[m.EPISODE_RETURN_SEM],
                        r[m.VIOLATION_RATE],
                        r[m.VIOLATION_RATE_UB95],
                    )
                )
        points += _learned_points(trials, finals, data.group_columns)
        safe_name = "".join(ch if ch.isalnum() else "-" for ch in env_id).strip("-")
        png = frontier_plot(
            points,
            out / f"{FRONTIER_PREFIX}_{safe_name}.png",
            title=f"{env_id}: return vs violation rate ({episodes} episodes)",
        )
        section.files.append(png)
        section.lines += [
            f"## Reference rows: `{env_id}`",
            "",
            f"On {episodes} evaluation episodes (episode i resets with {EVALUATION_SEED} + i). "
            "The best constant dose is chosen on separate selection episodes (2 000 000 + i) "
            "from a 41-dose grid; the frontier shows every dose of the grid.",
            "",
            res.markdown(pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS))),
            "",
        ]
    return section


def _behaviour_sigmas(trials: pd.DataFrame) -> list[float]:
    """The behaviour noise σ of each dataset of ``trials`` that records one (sorted, unique)."""
    if DATASET_ID_PARAM not in trials:
        return []
    sigmas = set()
    for dataset_id in trials[DATASET_ID_PARAM].dropna().unique():
        try:
            sigma = read_metadata(str(dataset_id)).get(META_BOLUS_NOISE)
        except DatasetError:
            logger.info("No behaviour row for dataset %s: not found here", dataset_id)
            continue
        if sigma is not None:
            sigmas.add(float(sigma))
    return sorted(sigmas)


def _percent(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return res.MISSING
    return f"{value:.{digits}f}"


def glucose_row(name: str, r: dict[str, float]) -> dict[str, str]:
    """A row of :data:`GLUCOSE_COLUMNS` from evaluation metrics ``r`` (missing ones as "–")."""
    row = {
        "policy": name,
        "return": res.format_mean_sem(r[m.EPISODE_RETURN_MEAN], r[m.EPISODE_RETURN_SEM]),
    }
    for column, key in GLUCOSE_PERCENT_COLUMNS:
        row[column] = _percent(r.get(key))
    row[GLUCOSE_MEAN_COLUMN] = _percent(r.get(m.GLUCOSE_MEAN), 0)
    row.update(
        {
            "violation rate": _percent(r.get(m.VIOLATION_RATE), 4),
            "95% UB": _percent(r.get(m.VIOLATION_RATE_UB95), 4),
            "deaths / 100 episodes": f"{r.get(m.DEATHS_PER_100_EPISODES, math.nan):g}",
        }
    )
    return row


def _glucose_point(
    label: str, kind: str, r: dict[str, float], annotate: bool = True
) -> FrontierPoint:
    return FrontierPoint(
        label,
        kind,
        r.get(m.TIME_IN_RANGE, math.nan),
        0.0,
        r.get(m.VIOLATION_RATE, math.nan),
        r.get(m.VIOLATION_RATE_UB95, math.nan),
        annotate=annotate,
    )


def glucose_section(
    env_id: str, reference: GlucoseReference, learned: list[FrontierPoint], out: Path
) -> ReferenceSection:
    """The glucose reference table and its time-in-range/violation frontier PNG.

    ``reference``: :func:`~fttpo_ray.evaluation.glucose_reference.glucose_references`;
    ``learned``: each group's policies with time in range as their value (``_learned_points``
    with ``value=TIME_IN_RANGE``).
    """
    names = {BEST_RATIO: f"{BEST_RATIO} ({reference.best_ratio:g} U/g)"}
    rows = [glucose_row(names.get(n, n), r) for n, r in reference.rows.items()]
    short = {  # the frontier's point labels
        BASAL_BOLUS: "basal-bolus",
        BEST_RATIO: f"best rule {reference.best_ratio:g} U/g",
        **{behaviour_name(s): f"behaviour σ={s:g}" for s in reference.sigmas},
    }
    points = [
        _glucose_point(f"{ratio:g}", RATIO, r, annotate=round(ratio * 20) == ratio * 20)
        for ratio, r in sorted(reference.selection.items())
    ]
    points += [
        _glucose_point(short.get(n, n), REFERENCE, r)
        for n, r in reference.rows.items()
        if math.isfinite(r.get(m.TIME_IN_RANGE, math.nan))
    ]
    points += learned
    safe_name = "".join(ch if ch.isalnum() else "-" for ch in env_id).strip("-")
    png = frontier_plot(
        points,
        out / f"{FRONTIER_PREFIX}_{safe_name}.png",
        title=(
            f"{env_id}: time in range vs prohibited boluses ({reference.episodes} episodes; "
            f"U/g grid on {reference.selection_episodes} selection episodes)"
        ),
        value_label="time in range 70–180 mg/dL (% of 3-min samples; learned: mean ± s.e.)",
        violation_label="prohibited-bolus rate (bar: one-sided 95 % upper bound)",
    )
    grid = ", ".join(f"{r:g}" for r in reference.ratios)
    return ReferenceSection(
        lines=[
            f"## Reference rows: `{env_id}`",
            "",
            f"On {reference.episodes} evaluation episodes (patient-days; episode i resets with "
            f"{reference.seed} + i). Glucose columns are % of 3-minute samples (mean glucose in "
            "mg/dL); the violation rate is that of the executed boluses. The best "
            "state-independent rule (bolus = r × carbs for every patient, no correction) is "
            f"chosen by return on {reference.selection_episodes} separate selection episodes "
            f"({reference.selection_seed} + i) from the ratios {grid} U/g; the frontier shows "
            "the whole grid on those selection episodes.",
            "",
            res.markdown(pd.DataFrame(rows, columns=list(GLUCOSE_COLUMNS))),
            "",
        ],
        files=[png],
    )
