"""Reference rows and the return/violation frontier of a report (``fttpo report``).

For every environment of the report's trials that has the treatment oracle and a 1-D action:
no treatment, uniform random, the myopic oracle and the best constant dose
(:mod:`fttpo_ray.evaluation.reference`, docs/algorithm.md §5), rolled out on the evaluation
episodes ``EVALUATION_SEED + i`` — as many as the trials' last evaluation had (the default
evaluation seed; a sweep with another ``evaluation.seed`` is compared on other episodes; trials
that log no episode count get no reference rows) — and
the frontier PNG (:mod:`fttpo_ray.reporting.frontier`): every constant dose of the grid, the
references and each group's policies (return mean ± s.e. over seeds of the last evaluation,
violations pooled over seeds with the 95 % Clopper–Pearson bound). The certified policy of runs
with a safety certificate appears per ``certificate_alpha``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import pandas as pd

from fttpo_ray import metrics as m
from fttpo_ray.defaults import EVALUATION_SEED
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
    REFERENCE,
    FrontierPoint,
    frontier_plot,
)
from fttpo_ray.tuning.tracking import ENV_PARAM, SEED_PARAM, open_tracking_store

logger = logging.getLogger(__name__)

FRONTIER_PREFIX = "frontier"
#: Columns of the reference table.
REFERENCE_COLUMNS = ("policy", "return", "violation rate", "95% UB", "deaths / 100 episodes")


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
    trials: pd.DataFrame, finals: dict[str, dict[str, float]], group_columns: list[str]
) -> list[FrontierPoint]:
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
                finals[r] for r in part[RUN_ID] if m.evaluation_key(policy, m.ACTIONS) in finals[r]
            ]
            if not rows:
                continue
            returns = [r[m.evaluation_key(policy, m.EPISODE_RETURN_MEAN)] for r in rows]
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
