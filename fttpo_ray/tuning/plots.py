"""Plots of a report: learning curves with standard-error bands, (thin_q, kl_weight) heat-maps,
and thin vs fat policy densities at a few treatment states (prohibited doses shaded)."""

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
from fttpo_ray.tuning.columns import (  # noqa: E402
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
from fttpo_ray.tuning.tracking import (  # noqa: E402
    FAT_Q_PARAM,
    KL_WEIGHT_PARAM,
    RUN_PARAM,
    THIN_Q_PARAM,
    VARIANT_PARAM,
)

logger = logging.getLogger(__name__)

DPI = 110
MAX_LEGEND_ENTRIES = 14
#: Legend columns per column of panels.
LEGEND_COLUMNS = 2
CURVE_METRICS = ((m.EPISODE_RETURN_MEAN, "return"), (m.VIOLATION_RATE, "violation rate"))
HEATMAP_X = KL_WEIGHT_PARAM
HEATMAP_Y = THIN_Q_PARAM
HEATMAP_PANEL = FAT_Q_PARAM
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


def heatmaps(outcomes: pd.DataFrame, group_columns: list[str], out: Path) -> list[Path]:
    """Heat-maps of the last return and violation rate over (thin_q, kl_weight), one figure per
    run and variant with a thin policy, one column per ``fat_q`` (means over seeds)."""
    needed = {HEATMAP_X, HEATMAP_Y, POLICY}
    if outcomes.empty or not needed.issubset(outcomes.columns):
        return []
    thin = outcomes[outcomes[POLICY] == m.THIN].copy()
    for column in (HEATMAP_X, HEATMAP_Y, HEATMAP_PANEL):
        if column in thin:
            thin[column] = pd.to_numeric(thin[column], errors="coerce")
    thin = thin.dropna(subset=[HEATMAP_X, HEATMAP_Y])
    outer = [c for c in (RUN_PARAM, VARIANT_PARAM) if c in thin]
    files = []
    for key, part in thin.groupby(outer, sort=True) if outer else [((), thin)]:
        if part[[HEATMAP_Y, HEATMAP_X]].drop_duplicates().shape[0] < 2:
            continue
        key = key if isinstance(key, tuple) else (key,)
        panels = sorted(part[HEATMAP_PANEL].dropna().unique()) if HEATMAP_PANEL in part else []
        panels = panels or [None]
        fig, axes = plt.subplots(
            2, len(panels), figsize=(3.6 * len(panels) + 1.2, 6.4), squeeze=False
        )
        for col, panel in enumerate(panels):
            sub = part if panel is None else part[part[HEATMAP_PANEL] == panel]
            for row, (value, title, cmap) in enumerate(
                (
                    (RETURN_LAST, LABELS[RETURN_LAST], "viridis"),
                    (VIOLATION_LAST, LABELS[VIOLATION_LAST], "magma_r"),
                )
            ):
                grid = sub.pivot_table(
                    index=HEATMAP_Y, columns=HEATMAP_X, values=value, aggfunc="mean"
                )
                ax = axes[row][col]
                image = ax.imshow(
                    grid.to_numpy(dtype=float), cmap=cmap, aspect="auto", origin="lower"
                )
                ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
                ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
                ax.set_xlabel(f"{HEATMAP_X} (τ)")
                ax.set_ylabel(HEATMAP_Y)
                heading = title if panel is None else f"{title}, {HEATMAP_PANEL}={panel:g}"
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
        fig.suptitle(f"thin policy, mean over seeds: {name}", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        path = out / f"{HEATMAP_PREFIX}_{_safe('_'.join(str(k) for k in key) or 'all')}.png"
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        files.append(path)
    return files


def _outline() -> list:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=1.5, foreground="black")]
