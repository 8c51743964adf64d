"""Results tables: mean ± standard error over seeds, per group of trials.

The standard error is the sample standard deviation over seeds (``ddof=1``) divided by
``sqrt(n)``; it is undefined (shown as ``–``) for a single seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

N_COLUMN = "n"
MEAN_SUFFIX = "_mean"
SEM_SUFFIX = "_sem"
MISSING = "–"


def sem(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of the mean (NaN for fewer than two finite values)."""
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    if array.size < 2:
        return math.nan
    return float(array.std(ddof=1) / math.sqrt(array.size))


def summarize(
    frame: pd.DataFrame, group_columns: Sequence[str], value_columns: Sequence[str]
) -> pd.DataFrame:
    """One row per group: ``n`` (trials = seeds) and ``<value>_mean`` / ``<value>_sem``."""
    groups = list(group_columns)
    values = [c for c in value_columns if c in frame.columns]
    if frame.empty:
        columns = (
            groups + [N_COLUMN] + [f"{v}{s}" for v in values for s in (MEAN_SUFFIX, SEM_SUFFIX)]
        )
        return pd.DataFrame(columns=columns)
    rows = []
    for key, part in frame.groupby(groups, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(groups, key, strict=True))
        row[N_COLUMN] = int(len(part))
        for value in values:
            numbers = pd.to_numeric(part[value], errors="coerce").to_numpy(dtype=float)
            finite = numbers[np.isfinite(numbers)]
            row[f"{value}{MEAN_SUFFIX}"] = float(finite.mean()) if finite.size else math.nan
            row[f"{value}{SEM_SUFFIX}"] = sem(finite)
        rows.append(row)
    return pd.DataFrame(rows)


def format_mean_sem(mean: float, error: float, digits: int = 3) -> str:
    """``"-3.21 ± 0.40"``; ``"-3.21"`` without an error; ``"–"`` without a mean."""
    if mean is None or not np.isfinite(mean):
        return MISSING
    text = f"{mean:.{digits}g}"
    if error is not None and np.isfinite(error):
        text += f" ± {error:.2g}"
    return text


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return str(value).replace("|", "\\|")


#: Group values longer than this that read as numbers are shown to :data:`GROUP_DIGITS`
#: significant digits (values a random search drew); the summary keeps them in full.
LONG_NUMBER = 8
GROUP_DIGITS = 4


def _group_cell(value: object) -> str:
    text = _cell(value)
    if len(text) > LONG_NUMBER:
        try:
            return f"{float(text):.{GROUP_DIGITS}g}"
        except ValueError:
            return text
    return text


def display_table(
    summary: pd.DataFrame,
    group_columns: Sequence[str],
    value_columns: Sequence[str],
    labels: dict[str, str] | None = None,
    extra_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """The summary with one ``mean ± s.e.`` text column per value (for printing); the
    ``extra_columns`` of the summary (counts, labels) are shown as they are after ``n``."""
    labels = labels or {}
    table = pd.DataFrame()
    for column in group_columns:
        table[column] = summary[column].map(_group_cell) if column in summary else []
    table[N_COLUMN] = summary[N_COLUMN] if N_COLUMN in summary else []
    for column in extra_columns:
        if column in summary:
            table[column] = summary[column].map(_cell)
    for value in value_columns:
        mean_col, sem_col = f"{value}{MEAN_SUFFIX}", f"{value}{SEM_SUFFIX}"
        if mean_col not in summary:
            continue
        if summary[mean_col].isna().all():
            continue
        table[labels.get(value, value)] = [
            format_mean_sem(mu, se)
            for mu, se in zip(summary[mean_col], summary[sem_col], strict=True)
        ]
    return table


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of a text frame (no extra dependency)."""
    headers = [str(c) for c in table.columns]
    rows = [[_cell(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines)
