"""The return/violation frontier (docs/algorithm.md §5.1): one point per policy, return on the x
axis (± standard error) and violation rate on the y axis with its one-sided 95 %
Clopper–Pearson upper bound as the error bar, so which policies dominate which is visible at a
glance. Used by ``fttpo report`` and ``benchmarks/treatment_safe.py``. The x axis may show
another value of the policies (the glucose report shows time in range: ``value_label``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend

#: Kinds of frontier points and how they are drawn: (marker, colour, size).
CONSTANT = "constant dose"
#: The glucose environment's state-independent rules (one U-per-gram ratio each).
RATIO = "U/g ratio"
REFERENCE = "reference"
LEARNED = "learned"
CERTIFIED = "certified"
STYLES = {
    CONSTANT: ("o", "0.55", 18),
    RATIO: ("o", "0.55", 18),
    REFERENCE: ("s", "black", 40),
    LEARNED: ("D", "tab:blue", 40),
    CERTIFIED: ("*", "tab:red", 90),
}
#: Kinds drawn as a grid: joined by a line in the order given, only their better half in focus.
GRID_KINDS = (CONSTANT, RATIO)
DPI = 110
#: Default axis labels.
RETURN_LABEL = "return (mean ± s.e.)"
VIOLATION_LABEL = "violation rate (bar: one-sided 95 % upper bound)"


@dataclass(frozen=True)
class FrontierPoint:
    """One policy: return ± s.e., violation rate and its 95 % upper bound."""

    label: str
    kind: str
    episode_return: float
    return_sem: float
    violation_rate: float
    violation_ub95: float
    #: Drawn next to the point (e.g. the dose of a constant, the alpha of a certified policy).
    annotate: bool = True


def frontier_plot(
    points: Sequence[FrontierPoint],
    path: Path,
    *,
    title: str = "",
    value_label: str = RETURN_LABEL,
    violation_label: str = VIOLATION_LABEL,
) -> Path:
    """Draw ``points`` into the PNG ``path`` (constant doses joined by a line, in dose order as
    given) and return the path. The x range covers every non-constant point and the better half
    of the constant doses; worse doses are left out of view (and counted in a note).

    ``episode_return`` is drawn on the x axis, labelled ``value_label``; grid points of kind
    :data:`RATIO` are drawn as constant doses are."""
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    constants = [p for p in points if p.kind in GRID_KINDS]
    if constants:
        ax.plot(
            [p.episode_return for p in constants],
            [p.violation_rate for p in constants],
            color="0.8",
            lw=1,
            zorder=1,
        )
    seen: set[str] = set()
    for p in points:
        marker, colour, size = STYLES[p.kind]
        ax.errorbar(
            p.episode_return,
            p.violation_rate,
            xerr=p.return_sem,
            yerr=[[0.0], [max(p.violation_ub95 - p.violation_rate, 0.0)]],
            fmt="none",
            ecolor=colour,
            elinewidth=0.8,
            alpha=0.7,
            zorder=2,
        )
        ax.scatter(
            p.episode_return,
            p.violation_rate,
            marker=marker,
            s=size,
            color=colour,
            label=p.kind if p.kind not in seen else None,
            zorder=3,
        )
        seen.add(p.kind)
        if p.annotate:
            ax.annotate(
                p.label,
                (p.episode_return, p.violation_rate),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=colour,
            )
    focus = [p.episode_return for p in points if p.kind not in GRID_KINDS]
    if constants:  # the better half of the grid; much worse doses fall off the left edge
        returns = sorted(p.episode_return for p in constants)
        focus += returns[len(returns) // 2 :]
    low, high = min(focus), max(focus)
    span = max(high - low, 1e-6)
    ax.set_xlim(low - 0.15 * span, high + 0.15 * span)
    hidden = sum(p.episode_return < low - 0.15 * span for p in points)
    if hidden:
        ax.text(
            0.01,
            0.01,
            f"{hidden} {constants[0].kind}(s) with lower {value_label.split(' (')[0]} off the "
            "left edge",
            transform=ax.transAxes,
            fontsize=7,
            color="0.4",
        )
    ax.set_xlabel(value_label)
    ax.set_ylabel(violation_label)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_ylim(bottom=0.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
