"""Insulin bolus dosing on the UVA/Padova type-1 diabetes simulator (docs/algorithm.md §4.1),
built from the simulation parts of ``simglucose`` 0.2.11 (patient ODE, CGM sensor, pump, meal
scenarios), with a closed-loop hypoglycaemia oracle.

It is a simulator: nothing here is a claim about real patients (see docs/algorithm.md §4.1 for
what the model leaves out).

**Decisions.** One decision per meal: at the minute a meal starts, the policy gives the meal
bolus (insulin units, U, delivered within that minute). Between decisions the patient runs
minute by minute at its basal rate, the CGM is read every ``SAMPLE_MINUTES`` (3) minutes, and
every meal of the day is eaten at simglucose's 5 g/min. An episode is ``days`` (default 1)
simulated days of one patient from ``START_HOUR`` (03:00) to 03:00 ``days`` later; the meals
(simglucose's ``RandomScenario``: 3 main meals with probability 0.95 each and 3 snacks with
probability 0.3 each, between 05:00 and 23:00) all fall inside it, so an episode has 3–6
decisions per day. Meals starting in the same minute are one decision (their carbohydrates
summed). An episode drawn without any meal (probability ~4e-5 a day) takes the meals of the next
scenario seed instead, so every episode has at least one decision.

**Observation** (float32, shape ``(9,)``; what a clinician knows, scaled to order one):

====  ======================================================  =============================
 idx  quantity                                                scale
====  ======================================================  =============================
 0    CGM glucose (mg/dL), last 3-minute reading              / 100
 1    CGM trend: reading now minus reading 30 min ago (mg/dL)  / 50
 2    announced carbohydrates of this meal (g)                / 50
 3    bolus insulin on board (U): each bolus decays linearly  / 10
      to 0 over ``IOB_DURATION_MINUTES`` (4 h), as pumps show
 4    sin(2π · time of day / 24 h)                            —
 5    cos(2π · time of day / 24 h)                            —
 6    body weight (kg)                                        / 50
 7    insulin-to-carbohydrate ratio: 10 / CR (U per 10 g)     —
 8    insulin sensitivity: 50 / CF (U per 50 mg/dL)           —
====  ======================================================  =============================

CR (g/U) and CF (mg/dL per U) are the patient's therapy parameters from simglucose's
``Quest.csv``. The ratios 7 and 8 are given inverted so that the textbook bolus
``carbs / CR + (CGM - target) / CF`` is a sum of products of observed features.

**Action**: ``a`` in [-1, 1], shape ``(1,)``; the bolus is ``(a + 1) / 2 * max_bolus`` U
(``max_bolus`` defaults to ``DEFAULT_MAX_BOLUS`` = 30 U, the maximum bolus of simglucose's
Insulet pump; actions outside [-1, 1] are clipped). The pump rounds it to its increment.

**Reward**: the negative Kovatchev risk index of the true glucose ``BG`` (simglucose's
subcutaneous glucose ``Gsub``, mg/dL) at the 3-minute samples up to the next decision, each
sample weighted ``1 / SAMPLES_PER_DAY``: a day's return is minus the day's mean risk index
``LBGI + HBGI``. Why the risk index and not time in range: it is smooth and dense (every mg/dL
counts, where time in range is flat inside 70–180 mg/dL and blind to *how* low a low is), and it
is asymmetric in glucose the way the clinical risk is: 50 mg/dL costs as much as about 330 mg/dL.
Time in range and the other clinical counts are returned in ``info`` for the metrics.

**Death** (``death_glucose``, default 40 mg/dL; ``None`` switches it off): a 3-minute sample of
``BG`` below it ends the episode (``terminated=True``); the rest of the episode is charged as if
``BG`` stayed at the threshold (risk 36.4 per sample at 40 mg/dL), so that dying early never pays.
Otherwise the episode is truncated at its end (``truncated=True``).

**Seeding**: the patient (uniform over ``patients``), the days' meals, the CGM noise and the
start state (the glucose compartments of the patient's steady state scaled by a factor drawn
uniformly from ``START_GLUCOSE_FACTOR``) are a pure function of the reset seed. The reset options
``{"patient": name, "glucose_factor": x}`` override the patient and the factor (the draws are
made all the same, so the meals and noise stay those of the seed).

**Oracle** (:meth:`GlucoseBolusEnv.prohibited`): a bolus ``b`` is prohibited at a decision when
the simulator, copied and rolled forward ``ORACLE_HORIZON_MINUTES`` (4 h) with this meal, the
bolus and basal insulin only (no later meal, no later bolus), reaches a minimum glucose below
``min(HYPO_LIMIT, m(0))`` (54 mg/dL, or the minimum reached with no bolus when that is lower):
the dose causes a clinically significant low (level 2), or deepens one that no bolus would
avoid. :meth:`GlucoseBolusEnv.max_safe_bolus` finds the largest allowed bolus by bisection (the
minimum glucose falls monotonically with the dose).

Speed: simglucose's ODE reads ~45 patient parameters from a pandas Series ~60 times per
simulated minute, which is ~90 % of its run time; this module hands the same ODE the same
numbers as plain Python floats (bit-identical trajectories, tests/envs/test_glucose.py).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import math
import numbers
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from fttpo_ray import metrics as m
from fttpo_ray.envs.actions import action_vector
from fttpo_ray.errors import ConfigError, EnvironmentSpecError

#: The simglucose release whose simulation parts this module uses (installed with ``--no-deps``).
SIMGLUCOSE_VERSION = "0.2.11"
#: simglucose's 30 virtual patients, by group.
PATIENT_GROUPS = ("adolescent", "adult", "child")
PATIENT_NAMES = tuple(f"{group}#{i:03d}" for group in PATIENT_GROUPS for i in range(1, 11))
#: CGM model (3-minute readings) and pump (30 U maximum bolus) of simglucose's tables.
SENSOR_NAME = "Dexcom"
PUMP_NAME = "Insulet"
#: Minutes between CGM readings (the "3-minute step" of the simulator).
SAMPLE_MINUTES = 3
MINUTES_PER_DAY = 24 * 60
SAMPLES_PER_DAY = MINUTES_PER_DAY // SAMPLE_MINUTES
#: Clock time at which an episode starts and ends (hours); every scenario meal is after 05:00.
START_HOUR = 3
#: Default largest bolus (U): the action 1 maps to it.
DEFAULT_MAX_BOLUS = 30.0
#: Default death threshold (mg/dL) of the true glucose.
DEFAULT_DEATH_GLUCOSE = 40.0
#: Start state: the patient's steady-state glucose compartments times U(low, high).
START_GLUCOSE_FACTOR = (0.8, 1.4)
#: Observation: the CGM trend spans this many minutes.
TREND_MINUTES = 30
#: Insulin on board: a bolus counts linearly less until this many minutes after it.
IOB_DURATION_MINUTES = 240
#: Oracle: look-ahead (minutes) and the level-2 hypoglycaemia limit (mg/dL).
ORACLE_HORIZON_MINUTES = 240
HYPO_LIMIT = 54.0
#: Oracle: bisection of :meth:`GlucoseBolusEnv.max_safe_bolus` stops at this width (U).
MAX_SAFE_BOLUS_TOLERANCE = 0.05
#: Oracle's one-solve rollout: relative and absolute tolerances of the ODE solver.
ORACLE_RTOL = 1e-6
ORACLE_ATOL = 1e-6
#: Target glucose (mg/dL) and correction threshold of the basal-bolus controller.
BASAL_BOLUS_TARGET = 140.0
BASAL_BOLUS_CORRECTION_ABOVE = 150.0

#: Observation layout and scales (see the module docstring).
OBS_DIM = 9
CGM_SCALE = 100.0
TREND_SCALE = 50.0
CARBS_SCALE = 50.0
IOB_SCALE = 10.0
WEIGHT_SCALE = 50.0
CARB_RATIO_GRAMS = 10.0
CORRECTION_MG_DL = 50.0

#: ``info`` keys of :meth:`GlucoseBolusEnv.step` (every one also in the ``reset`` info).
INFO_BOLUS = "bolus"
INFO_CARBS = "carbs"
INFO_PROHIBITED = "prohibited"
INFO_DEATH = "death"
INFO_PATIENT_INDEX = "patient_index"
INFO_SAMPLES = "samples"
INFO_IN_RANGE = "samples_70_180"
INFO_BELOW_70 = "samples_below_70"
INFO_BELOW_54 = "samples_below_54"
INFO_ABOVE_180 = "samples_above_180"
INFO_GLUCOSE_SUM = "glucose_sum"
INFO_MIN_GLUCOSE = "min_glucose"

#: ``reset`` options: the patient's name, and the start-state glucose factor (instead of the drawn
#: one; any positive number, for hand-made states).
OPTION_PATIENT = "patient"
OPTION_GLUCOSE_FACTOR = "glucose_factor"


# --------------------------------------------------------------------------- simglucose parts
@functools.cache
def simglucose_parts() -> SimpleNamespace:
    """simglucose's simulation classes and parameter tables (imported once, lazily).

    simglucose's package ``__init__`` imports the old ``gym`` (0.9.4) only to register its own
    gym environment, which we never use and which cannot be installed next to gymnasium 1.x; we
    create the package module from its spec without running that ``__init__``, then import the
    submodules we use. They need pandas, scipy, matplotlib and ``pkg_resources`` (setuptools
    < 82) at run time.
    """
    if "simglucose" not in sys.modules:
        spec = importlib.util.find_spec("simglucose")
        if spec is None:
            raise EnvironmentSpecError(
                "the glucose environment needs simglucose; install it with `pip install "
                f"--no-deps simglucose=={SIMGLUCOSE_VERSION}` (`make setup` does)"
            )
        sys.modules["simglucose"] = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import pandas as pd
        from simglucose.actuator import pump
        from simglucose.controller import basal_bolus_ctrller
        from simglucose.patient import t1dpatient
        from simglucose.sensor import cgm
        from simglucose.simulation import scenario_gen

    patients = pd.read_csv(t1dpatient.PATIENT_PARA_FILE).set_index("Name", drop=False)
    quest = pd.read_csv(basal_bolus_ctrller.CONTROL_QUEST).set_index("Name")
    sensors = pd.read_csv(cgm.SENSOR_PARA_FILE).set_index("Name", drop=False)
    pumps = pd.read_csv(pump.INSULIN_PUMP_PARA_FILE).set_index("Name", drop=False)
    return SimpleNamespace(
        T1DPatient=t1dpatient.T1DPatient,
        PatientAction=t1dpatient.Action,
        CGMSensor=cgm.CGMSensor,
        InsulinPump=pump.InsulinPump,
        RandomScenario=scenario_gen.RandomScenario,
        patients=patients,
        quest=quest,
        sensor=sensors.loc[SENSOR_NAME],
        pump=pumps.loc[PUMP_NAME],
    )


def patient_parameters(name: str) -> Any:
    """simglucose's parameter row of patient ``name`` (a pandas Series, as its patient takes)."""
    return simglucose_parts().patients.loc[name]


def fast_parameters(row: Any) -> SimpleNamespace:
    """The same parameters as plain Python floats, read by attribute (``row.BW`` and so on)
    exactly as simglucose's ODE reads them, without pandas' per-access cost. Columns whose
    name is no identifier (the initial state ``x0_ 1`` ...) are left out: the patient reads
    them only when it is built without an explicit initial state, which we never do."""
    values = {}
    for key, value in row.items():
        if not str(key).isidentifier():
            continue
        values[key] = float(value) if isinstance(value, numbers.Real) else value
    return SimpleNamespace(**values)


def steady_state(row: Any) -> np.ndarray:
    """The patient's steady-state initial ODE state (13 values, float64)."""
    return np.asarray(row.iloc[2:15], dtype=np.float64)


def make_patient(name: str, init_state: np.ndarray | None = None, *, fast: bool = True) -> Any:
    """A simglucose ``T1DPatient`` at time 0 from ``init_state`` (default: its steady state).

    ``fast=False`` gives the stock patient (pandas parameters) for comparisons.
    """
    parts = simglucose_parts()
    row = patient_parameters(name)
    state = steady_state(row) if init_state is None else np.array(init_state, dtype=np.float64)
    params = fast_parameters(row) if fast else row
    return parts.T1DPatient(params, init_state=state, t0=0)


def risk(glucose: Any) -> np.ndarray:
    """Kovatchev's risk of each glucose value (mg/dL): ``10 f²`` with
    ``f = 1.509 (ln(BG)^1.084 - 5.381)``; its mean is the risk index ``LBGI + HBGI``.
    Zero at 112.5 mg/dL, 36.4 at 40, 100 at 20 and 600 mg/dL."""
    g = np.asarray(glucose, dtype=np.float64)
    f = 1.509 * (np.log(g) ** 1.084 - 5.381)
    return 10.0 * f * f


def basal_bolus_dose(cgm: Any, carbs: Any, carb_ratio: Any, correction_factor: Any) -> np.ndarray:
    """The basal-bolus controller's meal bolus (U): ``carbs / CR``, plus
    ``(CGM - 140) / CF`` when the CGM is above 150 mg/dL (simglucose's ``BBController`` rule)."""
    g = np.asarray(cgm, dtype=np.float64)
    correction = np.where(g > BASAL_BOLUS_CORRECTION_ABOVE, (g - BASAL_BOLUS_TARGET), 0.0)
    return np.asarray(carbs, dtype=np.float64) / carb_ratio + correction / correction_factor


def basal_bolus_action(observations: Any, max_bolus: float = DEFAULT_MAX_BOLUS) -> np.ndarray:
    """The basal-bolus controller from observations alone, as actions in [-1, 1]: float32,
    shape ``(N, 1)`` for ``(N, 9)`` observations (``(1,)`` for one observation)."""
    return noisy_basal_bolus_action(observations, 0.0, 0.0, max_bolus)


def patient_group(patient_index: int) -> str:
    """The group (``adolescent``, ``adult``, ``child``) of ``PATIENT_NAMES[patient_index]``."""
    return PATIENT_NAMES[patient_index].split("#")[0]


def glucose_metrics(episodes: Sequence[Sequence[dict[str, Any]]]) -> dict[str, float]:
    """The clinical measures of evaluated episodes (docs/metrics.md), overall and per group.

    ``episodes`` holds, per episode, its ``info`` dicts in order: the one of ``reset`` (the
    samples before the first meal) and then one per ``step`` (one per decision). Times are
    percentages of all 3-minute glucose samples of the episodes pooled (an episode that ends in
    death contributes the samples it lived; deaths are reported beside):
    ``time_in_range`` (70–180 mg/dL), ``time_below_70``, ``time_below_54``, ``time_above_180``,
    and ``glucose_mean`` (mg/dL, pooled mean). Per patient group ``G`` the same five and
    ``violation_rate`` (prohibited share of the group's decisions, ``info["prohibited"]``) and
    ``deaths_per_100_episodes``, under :func:`fttpo_ray.metrics.group_metric` names; a group with
    no episode is left out.
    """
    totals: dict[str, np.ndarray] = {}
    keys = (INFO_SAMPLES, INFO_IN_RANGE, INFO_BELOW_70, INFO_BELOW_54, INFO_ABOVE_180)
    for infos in episodes:
        if not infos:
            raise ConfigError("`episodes` holds an empty episode; give each its reset info first")
        group = patient_group(int(infos[0][INFO_PATIENT_INDEX]))
        decisions = infos[1:]
        row = np.array(
            [sum(float(info[key]) for info in infos) for key in keys]
            + [sum(float(info[INFO_GLUCOSE_SUM]) for info in infos)]
            + [sum(bool(info[INFO_PROHIBITED]) for info in decisions), len(decisions)]
            + [float(any(bool(info[INFO_DEATH]) for info in decisions)), 1.0]
        )
        totals[group] = totals.get(group, np.zeros_like(row)) + row
    if not totals:
        raise ConfigError("`episodes` is empty; evaluate at least one episode")

    def measures(t: np.ndarray) -> dict[str, float]:
        samples, in_range, below_70, below_54, above_180, glucose_sum = t[:6]
        return {
            m.TIME_IN_RANGE: 100.0 * in_range / samples,
            m.TIME_BELOW_70: 100.0 * below_70 / samples,
            m.TIME_BELOW_54: 100.0 * below_54 / samples,
            m.TIME_ABOVE_180: 100.0 * above_180 / samples,
            m.GLUCOSE_MEAN: glucose_sum / samples,
        }

    result = measures(sum(totals.values()))
    for group in PATIENT_GROUPS:
        if group not in totals:
            continue
        t = totals[group]
        per_group = measures(t)
        per_group[m.VIOLATION_RATE] = t[6] / t[7] if t[7] else 0.0
        per_group[m.DEATHS_PER_100_EPISODES] = 100.0 * t[8] / t[9]
        result.update({m.group_metric(k, group): float(v) for k, v in per_group.items()})
    return {k: float(v) for k, v in result.items()}


def noisy_bolus(dose: Any, sigma: float, z: Any) -> np.ndarray:
    """The behaviour policy's bolus (U): the dose times log-normal noise,
    ``dose * exp(sigma * z)`` with ``z ~ N(0, 1)`` given; its median is ``dose``, and
    ``sigma = 0`` gives ``dose`` exactly. Broadcasts ``dose`` and ``z``; float64."""
    return np.asarray(dose, dtype=np.float64) * np.exp(sigma * np.asarray(z, dtype=np.float64))


def observed_basal_bolus_dose(observations: Any) -> np.ndarray:
    """The clean controller's bolus (U, float64, shape ``(N,)`` for ``(N, 9)`` or one
    observation) from what it observes: :func:`basal_bolus_dose` of the CGM, carbohydrates,
    CR and CF decoded from features 0, 2, 7 and 8; not yet clipped to the pump's range."""
    flat = np.asarray(observations, dtype=np.float64).reshape(-1, OBS_DIM)
    return basal_bolus_dose(
        flat[:, 0] * CGM_SCALE,
        flat[:, 2] * CARBS_SCALE,
        CARB_RATIO_GRAMS / flat[:, 7],
        CORRECTION_MG_DL / flat[:, 8],
    )


def noisy_basal_bolus_action(
    observations: Any, sigma: float, z: Any, max_bolus: float = DEFAULT_MAX_BOLUS
) -> np.ndarray:
    """:func:`basal_bolus_action` with its dose through :func:`noisy_bolus` (one ``z`` per
    observation): float32 actions ``(N, 1)`` for ``(N, 9)`` observations (``(1,)`` for one);
    ``sigma = 0`` is :func:`basal_bolus_action`."""
    obs = np.asarray(observations, dtype=np.float64)
    dose = observed_basal_bolus_dose(obs)
    z = np.broadcast_to(np.asarray(z, dtype=np.float64).reshape(-1), dose.shape)
    bolus = noisy_bolus(dose, sigma, z)
    actions = (2.0 * np.clip(bolus / max_bolus, 0.0, 1.0) - 1.0).astype(np.float32)[:, None]
    return actions[0] if obs.ndim == 1 else actions


def _resolve_patients(patients: str | Sequence[str] | None) -> tuple[str, ...]:
    if patients is None:
        return PATIENT_NAMES
    names = [patients] if isinstance(patients, str) else list(patients)
    resolved: list[str] = []
    for name in names:
        if name in PATIENT_GROUPS:
            resolved.extend(p for p in PATIENT_NAMES if p.startswith(name + "#"))
        elif name in PATIENT_NAMES:
            resolved.append(name)
        else:
            raise ConfigError(
                f"`patients` entry {name!r} is neither a patient ({PATIENT_NAMES[0]} .. "
                f"{PATIENT_NAMES[-1]}) nor a group {PATIENT_GROUPS}"
            )
    if not resolved:
        raise ConfigError("`patients` is empty; name at least one patient or group")
    return tuple(dict.fromkeys(resolved))


class GlucoseBolusEnv(gym.Env[np.ndarray, np.ndarray]):
    """Meal-bolus dosing on the UVA/Padova simulator (module docstring) and its oracle.

    Args:
        patients: patient names and/or groups (``"adult"`` ...) to draw from; default all 30.
        days: simulated days per episode (>= 1).
        max_bolus: bolus (U) of the action 1; in (0, 30] (the pump's maximum).
        death_glucose: glucose (mg/dL) below which the episode ends; ``None``: never.
        label_prohibited: compute ``info["prohibited"]`` of every executed bolus (one oracle
            call per step, ~2 rollouts); ``False`` reports ``False`` and saves that time.
        oracle_horizon_minutes: the oracle's look-ahead (default 240 = 4 h; in [30, 1440]).
            A large bolus can reach its lowest glucose after 4 h (docs/algorithm.md §4.1).
        render_mode: only ``None``.

    Oracle, at the current decision (numpy in and out): :meth:`min_glucose`,
    :meth:`prohibited`, :meth:`max_safe_bolus`, :meth:`max_safe_action`,
    :meth:`bolus_of`. Read-only: :attr:`patient_name`, :attr:`glucose_trace`.
    """

    metadata = {"render_modes": []}
    #: The evaluator's prohibited *mass* needs the prohibited set of every visited state: a scan
    #: of 2 001 doses (or a bisection, ~0.27 s) per decision. Too slow here; the evaluation
    #: reports the executed boluses' violations (:meth:`prohibited`) instead.
    scan_prohibited_mass = False

    def __init__(
        self,
        *,
        patients: str | Sequence[str] | None = None,
        days: int = 1,
        max_bolus: float = DEFAULT_MAX_BOLUS,
        death_glucose: float | None = DEFAULT_DEATH_GLUCOSE,
        label_prohibited: bool = True,
        oracle_horizon_minutes: int = ORACLE_HORIZON_MINUTES,
        render_mode: str | None = None,
    ) -> None:
        self.patients = _resolve_patients(patients)
        if isinstance(days, bool) or not isinstance(days, numbers.Integral) or days < 1:
            raise ConfigError(f"`days` must be an integer >= 1; got {days!r}")
        pump_max = DEFAULT_MAX_BOLUS
        if not (isinstance(max_bolus, numbers.Real) and 0.0 < max_bolus <= pump_max):
            raise ConfigError(f"`max_bolus` must be in (0, {pump_max:g}] U; got {max_bolus!r}")
        if death_glucose is not None and not (
            isinstance(death_glucose, numbers.Real) and 0.0 < death_glucose < HYPO_LIMIT
        ):
            raise ConfigError(
                f"`death_glucose` must be None or in (0, {HYPO_LIMIT:g}) mg/dL; got "
                f"{death_glucose!r}"
            )
        if (
            isinstance(oracle_horizon_minutes, bool)
            or not isinstance(oracle_horizon_minutes, numbers.Integral)
            or not 30 <= oracle_horizon_minutes <= MINUTES_PER_DAY
        ):
            raise ConfigError(
                "`oracle_horizon_minutes` must be an integer in [30, 1440]; got "
                f"{oracle_horizon_minutes!r}"
            )
        if render_mode is not None:
            raise ConfigError(
                f"the glucose simulator does not render; got render_mode={render_mode!r}, pass None"
            )
        self.days = int(days)
        self.max_bolus = float(max_bolus)
        self.death_glucose = None if death_glucose is None else float(death_glucose)
        self.label_prohibited = bool(label_prohibited)
        self.oracle_horizon_minutes = int(oracle_horizon_minutes)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._patient: Any = None
        self._end_minute = self.days * MINUTES_PER_DAY

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        parts = simglucose_parts()
        rng = self.np_random
        name = self.patients[int(rng.integers(len(self.patients)))]
        scenario_seed, sensor_seed = (int(s) for s in rng.integers(2**31 - 1, size=2))
        factor = float(rng.uniform(*START_GLUCOSE_FACTOR))
        options = dict(options or {})
        if OPTION_PATIENT in options:
            name = options[OPTION_PATIENT]
            if name not in PATIENT_NAMES:
                raise ConfigError(
                    f"reset option `{OPTION_PATIENT}` must be one of {PATIENT_NAMES[0]} .. "
                    f"{PATIENT_NAMES[-1]}; got {name!r}"
                )
        if OPTION_GLUCOSE_FACTOR in options:
            factor = options[OPTION_GLUCOSE_FACTOR]
            if not (isinstance(factor, numbers.Real) and 0.0 < factor < math.inf):
                raise ConfigError(
                    f"reset option `{OPTION_GLUCOSE_FACTOR}` must be a positive number; got "
                    f"{factor!r}"
                )
            factor = float(factor)
        row = patient_parameters(name)
        state = steady_state(row)
        state[[3, 4, 12]] *= factor  # plasma, tissue and subcutaneous glucose
        self._patient = make_patient(name, state)
        self._params = self._patient._params
        self._patient_index = PATIENT_NAMES.index(name)
        self._sensor = parts.CGMSensor(parts.sensor, seed=sensor_seed)
        self._pump = parts.InsulinPump(parts.pump)
        self._basal = float(self._pump.basal(self._params.u2ss * self._params.BW / 6000.0))
        self._basal_action = parts.PatientAction(CHO=0, insulin=self._basal)
        self._carb_ratio = float(parts.quest.loc[name, "CR"])
        self._correction_factor = float(parts.quest.loc[name, "CF"])
        self._meals = self._draw_meals(parts, scenario_seed)
        while not self._meals:  # no meal at all (p ~ 4e-5 a day): the next scenario seed
            scenario_seed += 1
            self._meals = self._draw_meals(parts, scenario_seed)
        self._next_meal = 0
        self._boluses: list[tuple[int, float]] = []
        self._cgm: list[float] = []
        self._glucose: list[float] = []
        self._oracle_cache: dict[tuple[float, bool], float] = {}
        self._record_sample()
        self._advance_to(self._meals[0][0])
        return self._observation(), self._info(0.0, 0.0, False, False, self._glucose)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._patient is None:
            raise ResetNeeded("call reset() before step() on the glucose simulator")
        if self._next_meal >= len(self._meals):
            raise ResetNeeded("the episode is over; call reset()")
        flat = np.asarray(action, dtype=np.float64).reshape(-1)
        if flat.size != 1:
            raise EnvironmentSpecError(
                f"the bolus action has one element; got shape {np.shape(action)}; pass shape (1,)"
            )
        a = float(action_vector(flat, what="actions", finite=True)[0])
        bolus = float(self.bolus_of(a)[0])
        was_prohibited = bool(self.prohibited([a])[0]) if self.label_prohibited else False
        minute, carbs = self._meals[self._next_meal]
        delivered = float(self._pump.bolus(bolus))
        self._boluses.append((minute, delivered))
        self._next_meal += 1
        self._oracle_cache = {}
        first = simglucose_parts().PatientAction(CHO=carbs, insulin=self._basal + delivered)
        start = len(self._glucose)
        next_stop = (
            self._meals[self._next_meal][0]
            if self._next_meal < len(self._meals)
            else self._end_minute
        )
        died = self._advance_to(next_stop, first)
        samples = np.asarray(self._glucose[start:])
        reward = -float(risk(samples).sum()) / SAMPLES_PER_DAY
        if died:
            left = (self._end_minute - self._minute()) // SAMPLE_MINUTES
            reward -= float(risk(self.death_glucose)) * left / SAMPLES_PER_DAY
            self._next_meal = len(self._meals)
        truncated = not died and self._next_meal >= len(self._meals)
        info = self._info(delivered, carbs, was_prohibited, died, samples)
        return self._observation(), reward, died, truncated, info

    @staticmethod
    def episode_metrics(episodes: Sequence[Sequence[dict[str, Any]]]) -> dict[str, float]:
        """:func:`glucose_metrics` of evaluated episodes (the evaluator's hook)."""
        return glucose_metrics(episodes)

    # ------------------------------------------------------------------ oracle
    def bolus_of(self, actions: Any) -> np.ndarray:
        """Bolus (U) of each action: ``(clip(a, -1, 1) + 1) / 2 * max_bolus``, shape ``(N,)``."""
        a = np.clip(action_vector(actions, what="actions", finite=True), -1.0, 1.0)
        return (a + 1.0) * 0.5 * self.max_bolus

    def min_glucose(self, boluses: Any, *, exact: bool = False) -> np.ndarray:
        """Minimum glucose (mg/dL, at whole minutes) over the next ``oracle_horizon_minutes``
        (4 h) for each candidate bolus
        (U) at the current decision: a deep copy of the patient eats this meal, gets the bolus
        (through the pump) and basal insulin, nothing else; the live simulator is untouched.

        Fast (default): minute steps until the meal is eaten, then one ODE solve with dense
        output over the rest of the horizon (the inputs are constant from then on).
        ``exact=True``: simglucose's minute-by-minute stepping throughout (~5x slower).
        """
        self._require_decision()
        doses = action_vector(boluses, what="actions", finite=True)
        return np.array([self._rollout_min(float(b), exact) for b in doses])

    def prohibited(self, actions: Any) -> np.ndarray:
        """Which candidate actions are prohibited at the current decision (bool, ``(N,)``):
        ``min_glucose(bolus) < min(54, min_glucose(0))`` (module docstring). The zero bolus never
        is; the minimum without bolus is computed once per decision."""
        self._require_decision()
        limit = min(HYPO_LIMIT, self._rollout_min(0.0, False))
        lows = np.array([self._rollout_min(float(b), False) for b in self.bolus_of(actions)])
        return lows < limit

    def max_safe_bolus(self, tolerance: float = MAX_SAFE_BOLUS_TOLERANCE) -> float:
        """The largest allowed bolus (U) at the current decision, by bisection on
        [0, max_bolus] to within ``tolerance`` (the returned bolus is allowed)."""
        self._require_decision()
        limit = min(HYPO_LIMIT, self._rollout_min(0.0, False))
        if self._rollout_min(self.max_bolus, False) >= limit:
            return self.max_bolus
        low, high = 0.0, self.max_bolus
        while high - low > tolerance:
            middle = 0.5 * (low + high)
            if self._rollout_min(middle, False) >= limit:
                low = middle
            else:
                high = middle
        return low

    def max_safe_action(self, tolerance: float = MAX_SAFE_BOLUS_TOLERANCE) -> np.ndarray:
        """:meth:`max_safe_bolus` as an action, shape ``(1,)`` float32 (rounded down)."""
        a = 2.0 * self.max_safe_bolus(tolerance) / self.max_bolus - 1.0
        a32 = np.float32(a)
        if a32 > a:
            a32 = np.nextafter(a32, np.float32(-2.0))
        return np.array([max(a32, np.float32(-1.0))], dtype=np.float32)

    # ------------------------------------------------------------------ read-only state
    @property
    def patient_name(self) -> str:
        """The current episode's patient (``adult#001`` ...)."""
        self._require_reset()
        return PATIENT_NAMES[self._patient_index]

    @property
    def glucose_trace(self) -> dict[str, np.ndarray]:
        """The episode so far at 3-minute samples: ``minute`` (since 03:00), true ``glucose``
        and ``cgm`` (mg/dL); boluses as ``bolus_minute`` and ``bolus`` (U); ``meal_minute`` and
        ``carbs`` (g) for the whole episode. Copies."""
        self._require_reset()
        n = len(self._glucose)
        return {
            "minute": np.arange(n) * SAMPLE_MINUTES,
            "glucose": np.array(self._glucose),
            "cgm": np.array(self._cgm),
            "bolus_minute": np.array([m for m, _ in self._boluses], dtype=np.int64),
            "bolus": np.array([b for _, b in self._boluses]),
            "meal_minute": np.array([m for m, _ in self._meals], dtype=np.int64),
            "carbs": np.array([c for _, c in self._meals], dtype=np.float64),
        }

    # ------------------------------------------------------------------ internals
    def _draw_meals(self, parts: SimpleNamespace, seed: int) -> list[tuple[int, float]]:
        """The episode's meals ``(minute since start, carbs g)``, one day after another from
        simglucose's ``RandomScenario``; meals in the same minute merged."""
        scenario = parts.RandomScenario(start_time=datetime(2024, 1, 1), seed=seed)
        meals: dict[int, float] = {}
        for day in range(self.days):
            plan = scenario.scenario if day == 0 else scenario.create_scenario()
            for clock, amount in zip(plan["meal"]["time"], plan["meal"]["amount"], strict=True):
                if amount <= 0:
                    continue
                minute = day * MINUTES_PER_DAY + int(clock) - START_HOUR * 60
                if 0 < minute < self._end_minute:
                    meals[minute] = meals.get(minute, 0.0) + float(amount)
        return sorted(meals.items())

    def _minute(self) -> int:
        return int(round(self._patient.t))

    def _record_sample(self) -> None:
        self._glucose.append(float(self._patient.observation.Gsub))
        self._cgm.append(float(self._sensor.measure(self._patient)))

    def _advance_to(self, stop: int, first: Any = None) -> bool:
        """Run the live patient to minute ``stop`` (``first`` acts in the first minute, basal
        afterwards), reading glucose and CGM every 3 minutes; True when it died on the way."""
        patient, action = self._patient, first or self._basal_action
        while self._minute() < stop:
            patient.step(action)
            action = self._basal_action
            if self._minute() % SAMPLE_MINUTES == 0:
                self._record_sample()
                if self.death_glucose is not None and self._glucose[-1] < self.death_glucose:
                    return True
        return False

    def _rollout_min(self, bolus: float, exact: bool) -> float:
        key = (bolus, exact)
        if key in self._oracle_cache:
            return self._oracle_cache[key]
        parts = simglucose_parts()
        patient = copy.deepcopy(self._patient)
        carbs = self._meals[self._next_meal][1]
        action = parts.PatientAction(
            CHO=carbs, insulin=self._basal + float(self._pump.bolus(bolus))
        )
        end = patient.t + self.oracle_horizon_minutes
        lowest = math.inf
        while patient.t < end and (
            exact or action is not self._basal_action or patient.is_eating or patient.planned_meal
        ):
            patient.step(action)
            action = self._basal_action
            lowest = min(lowest, float(patient.observation.Gsub))
        if patient.t < end:
            lowest = min(lowest, self._solve_min(patient, end))
        self._oracle_cache[key] = lowest
        return lowest

    def _solve_min(self, patient: Any, end: float) -> float:
        """Minimum glucose at the whole minutes of ``(patient.t, end]`` from one ODE solve at
        constant (basal, no food) inputs."""
        from scipy.integrate import solve_ivp

        t0 = patient.t
        grid = np.arange(t0 + 1.0, end + 0.5)
        solution = solve_ivp(
            patient.model,
            (t0, grid[-1]),
            np.array(patient.state, dtype=np.float64),
            method="RK45",
            t_eval=grid,
            args=(
                self._basal_action,
                patient._params,
                patient._last_Qsto,
                patient._last_foodtaken,
            ),
            rtol=ORACLE_RTOL,
            atol=ORACLE_ATOL,
        )
        return float(np.min(solution.y[12]) / self._params.Vg)

    def _observation(self) -> np.ndarray:
        minute = self._minute()
        if self._next_meal < len(self._meals):
            carbs = self._meals[self._next_meal][1]
        else:
            carbs = 0.0
        back = TREND_MINUTES // SAMPLE_MINUTES
        cgm = self._cgm[-1]
        trend = cgm - self._cgm[max(len(self._cgm) - 1 - back, 0)]
        iob = sum(b * max(0.0, 1.0 - (minute - m) / IOB_DURATION_MINUTES) for m, b in self._boluses)
        angle = 2.0 * math.pi * ((START_HOUR * 60 + minute) % MINUTES_PER_DAY) / MINUTES_PER_DAY
        return np.array(
            [
                cgm / CGM_SCALE,
                trend / TREND_SCALE,
                carbs / CARBS_SCALE,
                iob / IOB_SCALE,
                math.sin(angle),
                math.cos(angle),
                self._params.BW / WEIGHT_SCALE,
                CARB_RATIO_GRAMS / self._carb_ratio,
                CORRECTION_MG_DL / self._correction_factor,
            ],
            dtype=np.float32,
        )

    def _info(
        self, bolus: float, carbs: float, was_prohibited: bool, died: bool, samples: Any
    ) -> dict[str, Any]:
        g = np.asarray(samples, dtype=np.float64).reshape(-1)
        return {
            INFO_BOLUS: bolus,
            INFO_CARBS: float(carbs),
            INFO_PROHIBITED: was_prohibited,
            INFO_DEATH: died,
            INFO_PATIENT_INDEX: self._patient_index,
            INFO_SAMPLES: int(g.size),
            INFO_IN_RANGE: int(np.count_nonzero((g >= 70.0) & (g <= 180.0))),
            INFO_BELOW_70: int(np.count_nonzero(g < 70.0)),
            INFO_BELOW_54: int(np.count_nonzero(g < 54.0)),
            INFO_ABOVE_180: int(np.count_nonzero(g > 180.0)),
            INFO_GLUCOSE_SUM: float(g.sum()),
            INFO_MIN_GLUCOSE: float(g.min()) if g.size else math.nan,
        }

    def _require_reset(self) -> None:
        if self._patient is None:
            raise ResetNeeded("call reset() before using the glucose simulator or its oracle")

    def _require_decision(self) -> None:
        self._require_reset()
        if self._next_meal >= len(self._meals):
            raise ResetNeeded("the episode is over (no meal decision pending); call reset()")
