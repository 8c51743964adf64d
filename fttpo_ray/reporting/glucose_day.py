"""A day of glucose per policy, for a few patients: the picture a clinician reads at a glance
(docs/algorithm.md §4.1).

For each patient, every policy lives the same simulated day of the glucose environment
(``fttpo/GlucoseBolus-v0``) from 03:00 to 03:00: one episode per policy reset with the same seed
and the patient as reset option, so the meals, the sensor noise and the start state are the same
(common random numbers; checked: the meals must be identical across policies). Policies act as
in the evaluator (:func:`fttpo_ray.evaluation.evaluate_policies`): the deterministic action by
default, clipped to [-1, 1] and mapped onto the environment's action box. The oracle's labels
are not computed (``label_prohibited=False``): a picture does not need them.

:func:`glucose_days` runs the days and returns them as data (:class:`DayTraces`);
:func:`plot_glucose_days` draws them; :func:`day_of_glucose` does both. One row per patient: the
true glucose of each policy (one colour per policy) over the shaded target range 70–180 mg/dL
with the level-2 hypoglycaemia line at 54 mg/dL, the meals (grams) along the bottom of the
glucose panel, and below it, on the same clock, each policy's boluses (U) as stems.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fttpo_ray.data.envs import make_env  # noqa: E402
from fttpo_ray.envs import GLUCOSE_ENV_ID  # noqa: E402
from fttpo_ray.envs.glucose import (  # noqa: E402
    HYPO_LIMIT,
    MINUTES_PER_DAY,
    OPTION_PATIENT,
    PATIENT_GROUPS,
    PATIENT_NAMES,
    START_HOUR,
)
from fttpo_ray.errors import ConfigError, EnvironmentSpecError  # noqa: E402
from fttpo_ray.evaluation.rollout import EvalPolicy  # noqa: E402

logger = logging.getLogger(__name__)

#: The target range (mg/dL) shaded in every glucose panel.
TARGET_RANGE = (70.0, 180.0)
#: Keys of ``env.unwrapped.glucose_trace`` read here.
TRACE_MINUTE = "minute"
TRACE_GLUCOSE = "glucose"
TRACE_CGM = "cgm"
TRACE_BOLUS_MINUTE = "bolus_minute"
TRACE_BOLUS = "bolus"
TRACE_MEAL_MINUTE = "meal_minute"
TRACE_CARBS = "carbs"
#: make kwarg of the glucose environment switched off here (no oracle labels needed).
LABEL_PROHIBITED = "label_prohibited"

DPI = 110
#: Figure width (inches) and height per patient row (glucose and bolus panels together).
FIGURE_WIDTH = 11.0
ROW_HEIGHT = 3.6
#: Glucose panel : bolus panel height.
PANEL_RATIO = (3.0, 1.0)
#: Vertical gap between patient rows (fraction of a row's height).
ROW_GAP = 0.18
#: Glucose axis (mg/dL): bottom, and the least top (higher when a trace goes higher).
GLUCOSE_BOTTOM = 0.0
GLUCOSE_TOP_MIN = 300.0
#: Policy colours, in order (tab10 without its green and red, which mark the target range and
#: the 54 mg/dL line), then repeated.
POLICY_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:cyan",
    "tab:olive",
    "tab:gray",
)
MEAL_COLOUR = "black"
#: Hours between clock ticks.
TICK_HOURS = 3
#: Horizontal spread (minutes) between the bolus stems of neighbouring policies at one meal.
STEM_SPREAD_MINUTES = 7.0


@dataclass(frozen=True)
class PolicyDay:
    """One policy's day for one patient, from the environment's ``glucose_trace``.

    ``minute``: 3-minute samples since 03:00; ``glucose`` (true) and ``cgm`` in mg/dL;
    ``bolus_minute``/``bolus``: the delivered boluses (U); ``died``: the episode ended early
    (glucose below the environment's death threshold), so the arrays stop there.
    """

    policy: str
    minute: np.ndarray
    glucose: np.ndarray
    cgm: np.ndarray
    bolus_minute: np.ndarray
    bolus: np.ndarray
    died: bool

    def percent_of_time(self, low: float, high: float) -> float:
        """Percent of the 3-minute samples with ``low <= glucose <= high`` (mg/dL)."""
        g = self.glucose
        return 100.0 * float(np.mean((g >= low) & (g <= high))) if g.size else math.nan


@dataclass(frozen=True)
class PatientDay:
    """One patient's day: its meals (identical for every policy) and each policy's day, in the
    order the policies were given."""

    patient: str
    meal_minute: np.ndarray
    carbs: np.ndarray
    days: tuple[PolicyDay, ...]

    def day(self, policy: str) -> PolicyDay:
        """The day of the policy named ``policy``."""
        for d in self.days:
            if d.policy == policy:
                return d
        raise KeyError(policy)


@dataclass(frozen=True)
class DayTraces:
    """The days of :func:`glucose_days`: one :class:`PatientDay` per patient, in order."""

    env_id: str
    seed: int
    explore: bool
    patients: tuple[PatientDay, ...]

    @property
    def policies(self) -> tuple[str, ...]:
        """The policy names, in the order given."""
        return tuple(d.policy for d in self.patients[0].days)


def _valid_patients_text() -> str:
    groups = []
    for group in PATIENT_GROUPS:
        names = [p for p in PATIENT_NAMES if p.startswith(group + "#")]
        groups.append(f"{names[0]}..{names[-1]}")
    return ", ".join(groups)


def _check_inputs(policies: Sequence[EvalPolicy], patients: Sequence[str] | str) -> tuple[str, ...]:
    if not policies:
        raise ConfigError("`policies` is empty; give at least one EvalPolicy to draw")
    for policy in policies:
        if not isinstance(policy, EvalPolicy):
            raise ConfigError(
                f"`policies` entries must be EvalPolicy objects; got {type(policy).__name__}"
            )
    names = [p.name for p in policies]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"`policies` names must be distinct; repeated: {duplicates}")
    chosen = (patients,) if isinstance(patients, str) else tuple(patients)
    if not chosen:
        raise ConfigError(
            f"`patients` is empty; name at least one patient of {_valid_patients_text()}"
        )
    for name in chosen:
        if name not in PATIENT_NAMES:
            raise ConfigError(
                f"`patients` entry {name!r} is not a patient; valid: {_valid_patients_text()}"
            )
    return tuple(dict.fromkeys(chosen))


def _run_day(
    env: Any, policy: EvalPolicy, patient: str, seed: int, explore: bool
) -> tuple[PolicyDay, dict[str, np.ndarray]]:
    """One episode of ``policy`` on ``patient`` from ``reset(seed)``, as the evaluator acts."""
    space = env.action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    obs, _ = env.reset(seed=seed, options={OPTION_PATIENT: patient})
    trace = env.unwrapped.glucose_trace
    done = len(trace[TRACE_MEAL_MINUTE]) == 0
    died = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while not done:
            obs_t = torch.as_tensor(np.asarray(obs)[None], dtype=torch.float32)
            with torch.no_grad():
                dist = policy.distribution(obs_t)
                action = dist.sample() if explore else policy.deterministic(dist)
            normalised = action.double().numpy().reshape(-1).clip(-1.0, 1.0)
            env_action = (low + (normalised + 1.0) * 0.5 * (high - low)).astype(np.float32)
            obs, _, terminated, truncated, _ = env.step(env_action)
            died = bool(terminated)
            done = terminated or truncated
    trace = env.unwrapped.glucose_trace
    day = PolicyDay(
        policy=policy.name,
        minute=trace[TRACE_MINUTE],
        glucose=trace[TRACE_GLUCOSE],
        cgm=trace[TRACE_CGM],
        bolus_minute=trace[TRACE_BOLUS_MINUTE],
        bolus=trace[TRACE_BOLUS],
        died=died,
    )
    return day, trace


def glucose_days(
    policies: Sequence[EvalPolicy],
    env_id: str,
    *,
    patients: Sequence[str],
    seed: int,
    env_config: dict[str, Any] | None = None,
    explore: bool = False,
) -> DayTraces:
    """One day per policy and patient, every policy on the same reset ``seed`` (module
    docstring). Raises :class:`ConfigError` for bad ``policies``/``patients`` and
    :class:`EnvironmentSpecError` for an environment without a ``glucose_trace`` or whose meals
    differ between policies on the same seed."""
    chosen = _check_inputs(policies, patients)
    config = dict(env_config or {})
    if env_id == GLUCOSE_ENV_ID:
        config[LABEL_PROHIBITED] = False
    env = make_env(env_id, **config)
    try:
        if not hasattr(type(env.unwrapped), "glucose_trace"):
            raise EnvironmentSpecError(
                f"environment '{env_id}' has no glucose_trace; a day of glucose needs the "
                "glucose environment (fttpo/GlucoseBolus-v0)"
            )
        rows = []
        for patient in chosen:
            days, meals = [], None
            for policy in policies:
                day, trace = _run_day(env, policy, patient, seed, explore)
                these = (trace[TRACE_MEAL_MINUTE], trace[TRACE_CARBS])
                if meals is None:
                    meals = these
                elif not (
                    np.array_equal(meals[0], these[0]) and np.array_equal(meals[1], these[1])
                ):
                    raise EnvironmentSpecError(
                        f"environment '{env_id}' gave policy {policy.name!r} other meals than "
                        f"{days[0].policy!r} for patient {patient} on seed {seed}; the meals "
                        "must be a function of the reset seed"
                    )
                days.append(day)
                logger.info(
                    "day of glucose: %s, %s: %.0f %% in range, %d boluses",
                    patient,
                    policy.name,
                    day.percent_of_time(*TARGET_RANGE),
                    day.bolus.size,
                )
            rows.append(PatientDay(patient, meals[0], meals[1], tuple(days)))
    finally:
        env.close()
    return DayTraces(env_id=env_id, seed=int(seed), explore=bool(explore), patients=tuple(rows))


def _hours(minutes: np.ndarray) -> np.ndarray:
    return START_HOUR + np.asarray(minutes, dtype=np.float64) / 60.0


def _clock(hour: float) -> str:
    return f"{int(hour) % 24:02d}:00"


def _clock_minute(minute: int) -> str:
    total = START_HOUR * 60 + minute
    return f"{total // 60 % 24:02d}:{total % 60:02d}"


def _draw_patient(
    ax_g: Any, ax_b: Any, row: PatientDay, colours: list[Any], days_shown: float
) -> None:
    low, high = TARGET_RANGE
    ax_g.axhspan(low, high, color="tab:green", alpha=0.12, lw=0)
    ax_g.axhline(HYPO_LIMIT, color="tab:red", ls="--", lw=0.9)
    top = GLUCOSE_TOP_MIN
    summary = []
    for day, colour in zip(row.days, colours, strict=True):
        ax_g.plot(_hours(day.minute), day.glucose, color=colour, lw=1.5)
        if day.glucose.size:
            top = max(top, float(day.glucose.max()) * 1.08)
        if day.died:
            ax_g.plot(_hours(day.minute[-1:]), day.glucose[-1:], "x", color=colour, ms=9, mew=2)
        text = (
            f"{day.policy}: {day.percent_of_time(low, high):.0f} % in 70–180, "
            f"{100.0 * float(np.mean(day.glucose < low)):.0f} % below 70, "
            f"mean {float(np.mean(day.glucose)):.0f} mg/dL"
        )
        if day.died:
            text += f", died at {_clock_minute(int(day.minute[-1]))} (x)"
        summary.append((text, colour))
    ax_g.set_ylim(GLUCOSE_BOTTOM, top)
    ax_g.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], prune="lower"))
    for j, (text, colour) in enumerate(summary):
        ax_g.text(
            0.995,
            0.97 - 0.085 * j,
            text,
            transform=ax_g.transAxes,
            ha="right",
            va="top",
            fontsize=7.5,
            color=colour,
            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1},
        )
    meal_y = GLUCOSE_BOTTOM + 0.015 * (top - GLUCOSE_BOTTOM)
    for minute, grams in zip(row.meal_minute, row.carbs, strict=True):
        x = float(_hours(minute))
        ax_g.axvline(x, color="0.6", lw=0.6, ls=":")
        ax_g.plot([x], [meal_y], marker="^", color=MEAL_COLOUR, ms=6, clip_on=False)
        ax_g.annotate(
            f"{grams:.0f} g",
            (x, meal_y),
            xytext=(4, 2),
            textcoords="offset points",
            fontsize=7.5,
            color=MEAL_COLOUR,
        )
    ax_g.set_ylabel("glucose (mg/dL)")
    ax_g.set_title(row.patient, fontsize=10, loc="left")
    ax_g.grid(axis="y", alpha=0.25)

    n = len(row.days)
    largest = 0.0
    for j, (day, colour) in enumerate(zip(row.days, colours, strict=True)):
        shift = (j - (n - 1) / 2.0) * STEM_SPREAD_MINUTES
        x = _hours(day.bolus_minute + shift)
        given = day.bolus > 0
        if given.any():
            ax_b.vlines(x[given], 0.0, day.bolus[given], color=colour, lw=1.6)
            ax_b.plot(x[given], day.bolus[given], "o", color=colour, ms=3.5)
            largest = max(largest, float(day.bolus.max()))
    for minute in row.meal_minute:
        ax_b.axvline(float(_hours(minute)), color="0.6", lw=0.6, ls=":")
    ax_b.set_ylim(0.0, max(1.0, largest * 1.2))
    ax_b.yaxis.set_major_locator(MaxNLocator(nbins=3))
    ax_b.set_ylabel("bolus (U)")
    ax_b.grid(axis="y", alpha=0.25)
    ticks = np.arange(START_HOUR, START_HOUR + 24 * days_shown + 0.5, TICK_HOURS)
    ax_b.set_xticks(ticks)
    ax_b.set_xticklabels([_clock(t) for t in ticks], fontsize=8)
    ax_b.set_xlim(START_HOUR, START_HOUR + 24 * days_shown)
    ax_b.set_xlabel("clock time", fontsize=8)


def plot_glucose_days(traces: DayTraces, path: Path | str, *, title: str = "") -> Path:
    """Draw ``traces`` into the PNG ``path`` (module docstring) and return the path.

    The PNG is written to a temporary file next to ``path`` and renamed onto it, so ``path``
    is either the whole picture or untouched."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"`path` must name a .png file; got {str(path)!r}")
    policies = traces.policies
    colours = [POLICY_COLOURS[i % len(POLICY_COLOURS)] for i in range(len(policies))]
    last_minute = max(
        [int(d.minute[-1]) for row in traces.patients for d in row.days if d.minute.size]
        + [MINUTES_PER_DAY]
    )
    days_shown = math.ceil(last_minute / MINUTES_PER_DAY)
    rows = len(traces.patients)
    fig = plt.figure(figsize=(FIGURE_WIDTH, ROW_HEIGHT * rows + 1.0))
    outer = fig.add_gridspec(rows, 1, hspace=ROW_GAP)
    try:
        for i, row in enumerate(traces.patients):
            pair = outer[i, 0].subgridspec(2, 1, height_ratios=PANEL_RATIO, hspace=0.0)
            ax_g = fig.add_subplot(pair[0, 0])
            ax_b = fig.add_subplot(pair[1, 0], sharex=ax_g)
            ax_g.tick_params(labelbottom=False)
            _draw_patient(ax_g, ax_b, row, colours, days_shown)
        handles = [
            Line2D([], [], color=c, lw=2, label=name)
            for name, c in zip(policies, colours, strict=True)
        ] + [
            Patch(color="tab:green", alpha=0.25, label="target 70–180 mg/dL"),
            Line2D([], [], color="tab:red", ls="--", lw=1, label="54 mg/dL (level-2 low)"),
            Line2D([], [], color=MEAL_COLOUR, marker="^", lw=0, label="meal (g carbohydrate)"),
        ]
        mode = "sampled actions" if traces.explore else "deterministic actions"
        fig.suptitle(
            title or f"A day of glucose per policy (seed {traces.seed}, {mode})", fontsize=11
        )
        fig.legend(
            handles=handles,
            loc="upper center",
            ncol=min(len(handles), 4),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.5, 1.0 - 0.45 / fig.get_figheight()),
        )
        top = 1.0 - (0.7 + 0.22 * math.ceil(len(handles) / 4)) / fig.get_figheight()
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.35 / fig.get_figheight(), top=top)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=DPI, format="png")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        plt.close(fig)
    return path


def day_of_glucose(
    policies: Sequence[EvalPolicy],
    env_id: str,
    *,
    patients: Sequence[str],
    seed: int,
    path: Path | str,
    env_config: dict[str, Any] | None = None,
    explore: bool = False,
) -> Path:
    """A day of glucose per policy for each of ``patients`` (one row each), all on reset
    ``seed``, drawn into the PNG ``path`` (module docstring); returns the path.
    :func:`glucose_days` and :func:`plot_glucose_days` give the data and the drawing apart."""
    if Path(path).suffix.lower() != ".png":
        raise ConfigError(f"`path` must name a .png file; got {str(path)!r}")
    traces = glucose_days(
        policies, env_id, patients=patients, seed=seed, env_config=env_config, explore=explore
    )
    return plot_glucose_days(traces, path)
