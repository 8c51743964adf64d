"""Plots of a report: learning curves with standard-error bands and the heat-maps that an
algorithm's report vocabulary declares (:class:`~fttpo_ray.algorithms.vocabulary.Heatmap`)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fttpo_ray import metrics as m  # noqa: E402
from fttpo_ray.algorithms.vocabulary import Heatmap  # noqa: E402
from fttpo_ray.reporting.columns import (  # noqa: E402
    KEY,
    LABELS,
    POLICY,
    RETURN_LAST,
    RUN_ID,
    STEP,
    VALUE,
    VIOLATION_LAST,
    ReportData,
)
from fttpo_ray.tuning.tracking import RUN_PARAM, VARIANT_PARAM  # noqa: E402

logger = logging.getLogger(__name__)

DPI = 110
MAX_LEGEND_ENTRIES = 14
#: Legend columns per column of panels.
LEGEND_COLUMNS = 2
CURVE_METRICS = ((m.EPISODE_RETURN_MEAN, "return"), (m.VIOLATION_RATE, "violation rate"))
HEATMAP_PREFIX = "heatmap"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


def _label(row: dict[str, Any], columns: list[str]) -> str:
    parts = []
    for column in columns:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        parts.append(str(value) if column in (RUN_PARAM, VARIANT_PARAM) else f"{column}={value}")
    return " ".join(parts) or "all"


def learning_curves(data: ReportData, path: Path) -> Path | None:
    """Return and violation rate per evaluation (mean ± s.e. over seeds), one line per group;
    one column of panels per policy."""
    if data.history.empty:
        return None
    frame = data.history.merge(data.trials[[RUN_ID, *data.group_columns]], on=RUN_ID, how="left")
    varying = [c for c in data.group_columns if data.trials[c].nunique(dropna=True) > 1]
    label_columns = varying or data.group_columns[:2]
    policies = [
        p for p in m.POLICIES if frame[KEY].eq(m.evaluation_key(p, m.EPISODE_RETURN_MEAN)).any()
    ]
    fig, axes = plt.subplots(
        len(CURVE_METRICS),
        len(policies),
        figsize=(5.4 * len(policies) + 0.6, 7.0),
        squeeze=False,
        sharex=True,
    )
    groups = frame.groupby(data.group_columns, dropna=False, sort=True)
    colours = plt.get_cmap("tab20" if groups.ngroups > 10 else "tab10")
    handles: dict[str, Any] = {}
    for index, (key, part) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        label = _label(dict(zip(data.group_columns, key, strict=True)), label_columns)
        colour = colours(index % colours.N)
        for col, policy in enumerate(policies):
            for row, (name, _) in enumerate(CURVE_METRICS):
                points = part[part[KEY] == m.evaluation_key(policy, name)]
                if points.empty:
                    continue
                stats = points.groupby(STEP)[VALUE].agg(["mean", "std", "count"])
                error = (stats["std"] / np.sqrt(stats["count"])).fillna(0.0)
                ax = axes[row][col]
                (line,) = ax.plot(stats.index, stats["mean"], color=colour, lw=1.5, label=label)
                ax.fill_between(
                    stats.index,
                    stats["mean"] - error,
                    stats["mean"] + error,
                    color=colour,
                    alpha=0.2,
                )
                handles.setdefault(label, line)
    for col, policy in enumerate(policies):
        for row, (_, title) in enumerate(CURVE_METRICS):
            ax = axes[row][col]
            ax.set_title(f"{policy} policy: {title}", fontsize=10)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.set_ylabel(title)
            if row == len(CURVE_METRICS) - 1:
                ax.set_xlabel("training iteration")
    columns = LEGEND_COLUMNS * len(policies)
    legend_rows = math.ceil(min(len(handles), MAX_LEGEND_ENTRIES) / columns)
    bottom = (0.25 + 0.22 * legend_rows) / fig.get_figheight()
    if len(handles) <= MAX_LEGEND_ENTRIES:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="lower center",
            ncol=columns,
            fontsize=8,
            frameon=False,
        )
    else:
        fig.text(0.5, 0.01, f"{len(handles)} groups (see results.csv)", ha="center", fontsize=8)
    fig.suptitle(f"{data.experiment}: mean ± s.e. over seeds", fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 0.96))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def heatmaps(outcomes: pd.DataFrame, heatmap: Heatmap, out: Path) -> list[Path]:
    """Heat-maps of the last return and violation rate of ``heatmap.policy`` over
    (``heatmap.rows``, ``heatmap.columns``), one figure per run and variant that has the
    policy, one column of panels per value of ``heatmap.panels`` (means over seeds)."""
    x, y = heatmap.columns.key, heatmap.rows.key
    panel_key = heatmap.panels.key if heatmap.panels is not None else None
    needed = {x, y, POLICY}
    if outcomes.empty or not needed.issubset(outcomes.columns):
        return []
    drawn = outcomes[outcomes[POLICY] == heatmap.policy].copy()
    for column in (x, y, panel_key):
        if column in drawn:
            drawn[column] = pd.to_numeric(drawn[column], errors="coerce")
    drawn = drawn.dropna(subset=[x, y])
    outer = [c for c in (RUN_PARAM, VARIANT_PARAM) if c in drawn]
    files = []
    for key, part in drawn.groupby(outer, sort=True) if outer else [((), drawn)]:
        if part[[y, x]].drop_duplicates().shape[0] < 2:
            continue
        key = key if isinstance(key, tuple) else (key,)
        panels = sorted(part[panel_key].dropna().unique()) if panel_key in part else []
        panels = panels or [None]
        fig, axes = plt.subplots(
            2, len(panels), figsize=(3.6 * len(panels) + 1.2, 6.4), squeeze=False
        )
        for col, panel in enumerate(panels):
            sub = part if panel is None else part[part[panel_key] == panel]
            for row, (value, title, cmap) in enumerate(
                (
                    (RETURN_LAST, LABELS[RETURN_LAST], "viridis"),
                    (VIOLATION_LAST, LABELS[VIOLATION_LAST], "magma_r"),
                )
            ):
                grid = sub.pivot_table(index=y, columns=x, values=value, aggfunc="mean")
                ax = axes[row][col]
                image = ax.imshow(
                    grid.to_numpy(dtype=float), cmap=cmap, aspect="auto", origin="lower"
                )
                ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
                ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
                ax.set_xlabel(heatmap.columns.label)
                ax.set_ylabel(heatmap.rows.label)
                heading = title if panel is None else f"{title}, {heatmap.panels.label}={panel:g}"
                ax.set_title(heading, fontsize=9)
                for (i, j), cell in np.ndenumerate(grid.to_numpy(dtype=float)):
                    if np.isfinite(cell):
                        ax.text(
                            j,
                            i,
                            f"{cell:.3g}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="w",
                            path_effects=_outline(),
                        )
                fig.colorbar(image, ax=ax, shrink=0.8)
        name = " ".join(str(k) for k in key)
        fig.suptitle(f"{heatmap.policy} policy, mean over seeds: {name}", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        path = out / f"{HEATMAP_PREFIX}_{_safe('_'.join(str(k) for k in key) or 'all')}.png"
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        files.append(path)
    return files


def _outline() -> list:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=1.5, foreground="black")]
