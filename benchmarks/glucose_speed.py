"""Speed of the glucose environment (docs/algorithm.md §4.1) on one core, and the share of the
basal-bolus controller's noisy boluses that its oracle prohibits.

Measured:

- **patient**: three-minute simulator steps per second (3 ODE minutes each, basal insulin, one
  60 g meal at the start) of simglucose's stock patient (pandas parameters) and of ours (the
  same ODE given plain floats), one patient per group;
- **env**: three-minute steps per second of whole episodes (reset, meals, CGM, observations)
  under the basal-bolus controller, without the per-step oracle label
  (``label_prohibited=False``) and with it;
- **oracle**: the cost of one call at the episodes' decisions: a deep copy of the patient,
  ``min_glucose`` of one bolus (fast: one ODE solve after the meal; exact: minute by minute),
  ``prohibited`` of one new bolus (the zero-bolus rollout already cached) and of one bolus on a
  fresh decision (two rollouts), ``max_safe_bolus`` (bisection), and the largest difference
  between the fast and the exact minimum;
- **behaviour** (``--behaviour-days``, 0 to skip): the basal-bolus controller's bolus times
  ``exp(σ z)``, ``z ~ N(0, 1)``, for each ``--sigmas``, over that many days per patient (all 30):
  the share of executed boluses the oracle prohibits (4-hour horizon, and 8 hours for
  comparison), with a one-sided 95 % Clopper–Pearson upper bound.

    nice .venv/bin/python benchmarks/glucose_speed.py
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import _common as c

sys.path.insert(0, str(c.REPO_ROOT))

PROBE_PATIENTS = ("adolescent#001", "adult#001", "child#001")


def patient_speed(steps: int, fast: bool) -> dict[str, float]:
    """Three-minute steps per second of one patient per group (and their mean)."""
    from fttpo_ray.envs.glucose import make_patient, simglucose_parts

    parts = simglucose_parts()
    rates = {}
    for name in PROBE_PATIENTS:
        patient = make_patient(name, fast=fast)
        basal = float(patient._params.u2ss * patient._params.BW / 6000)
        meal = parts.PatientAction(CHO=60, insulin=basal)
        rest = parts.PatientAction(CHO=0, insulin=basal)
        start = time.perf_counter()
        for minute in range(3 * steps):
            patient.step(meal if minute == 0 else rest)
        rates[name] = steps / (time.perf_counter() - start)
    rates["mean"] = sum(rates[n] for n in PROBE_PATIENTS) / len(PROBE_PATIENTS)
    return rates


def env_speed(episodes: int, label: bool) -> dict[str, float]:
    """Whole episodes under the basal-bolus controller: 3-minute steps and decisions per s."""
    from fttpo_ray.envs.glucose import GlucoseBolusEnv, basal_bolus_action

    env = GlucoseBolusEnv(label_prohibited=label)
    samples = decisions = 0
    start = time.perf_counter()
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(basal_bolus_action(obs))
            decisions += 1
            done = terminated or truncated
        samples += len(env.glucose_trace["glucose"]) - 1
    elapsed = time.perf_counter() - start
    return {
        "episodes": episodes,
        "steps_3min": samples,
        "decisions": decisions,
        "seconds": elapsed,
        "steps_3min_per_s": samples / elapsed,
        "decisions_per_s": decisions / elapsed,
    }


def oracle_cost(episodes: int) -> dict[str, Any]:
    """Milliseconds per oracle call at the decisions of ``episodes`` episodes (medians)."""
    import numpy as np

    from fttpo_ray.envs.glucose import GlucoseBolusEnv, basal_bolus_action

    env = GlucoseBolusEnv(label_prohibited=False)
    times: dict[str, list[float]] = {
        k: [] for k in ("deepcopy", "fast", "exact", "prohibited_cached", "prohibited", "max_safe")
    }
    worst = 0.0
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            action = basal_bolus_action(obs)
            bolus = float(env.bolus_of(action)[0])
            _, t = c.timed(lambda: copy.deepcopy(env._patient))
            times["deepcopy"].append(t)
            env._oracle_cache = {}
            _, t = c.timed(lambda action=action: env.prohibited(action))
            times["prohibited"].append(t)
            fast, t = c.timed(lambda bolus=bolus: env.min_glucose([bolus + 0.5]))
            times["fast"].append(t)
            exact, t = c.timed(lambda bolus=bolus: env.min_glucose([bolus + 0.5], exact=True))
            times["exact"].append(t)
            worst = max(worst, float(np.abs(fast - exact).max()))
            _, t = c.timed(lambda action=action: env.prohibited(action * np.float32(0.5)))
            times["prohibited_cached"].append(t)
            _, t = c.timed(env.max_safe_bolus)
            times["max_safe"].append(t)
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    out: dict[str, Any] = {f"{k}_ms": 1000.0 * c.median(v) for k, v in times.items()}
    out["decisions"] = len(times["fast"])
    out["max_abs_fast_minus_exact_mg_dl"] = worst
    return out


def behaviour_labels(days: int, sigmas: list[float], seed: int) -> list[dict[str, Any]]:
    """Prohibited share of the noisy basal-bolus controller's executed boluses, per σ."""
    import numpy as np
    from scipy.stats import beta

    from fttpo_ray.envs.glucose import (
        DEFAULT_MAX_BOLUS,
        PATIENT_NAMES,
        GlucoseBolusEnv,
        basal_bolus_action,
    )

    rows = []
    for sigma in sigmas:
        rng = np.random.default_rng(seed)
        short = GlucoseBolusEnv(label_prohibited=False)
        long = GlucoseBolusEnv(label_prohibited=False, oracle_horizon_minutes=480)
        counts = {"n": 0, "bad_4h": 0, "bad_8h": 0, "deaths": 0}
        for p, name in enumerate(PATIENT_NAMES):
            for day in range(days):
                episode_seed = seed + 1000 * p + day
                obs, _ = short.reset(seed=episode_seed, options={"patient": name})
                long.reset(seed=episode_seed, options={"patient": name})
                done = False
                while not done:
                    clean = float(short.bolus_of(basal_bolus_action(obs))[0])
                    bolus = min(clean * float(np.exp(sigma * rng.standard_normal())), 30.0)
                    action = np.array([2 * bolus / DEFAULT_MAX_BOLUS - 1], np.float32)
                    counts["bad_4h"] += int(short.prohibited(action)[0])
                    counts["bad_8h"] += int(long.prohibited(action)[0])
                    counts["n"] += 1
                    obs, _, terminated, truncated, _ = short.step(action)
                    long.step(action)
                    counts["deaths"] += int(terminated)
                    done = terminated or truncated
        n = counts["n"]
        row: dict[str, Any] = {"sigma": sigma, "patient_days": days * len(PATIENT_NAMES), **counts}
        for key in ("bad_4h", "bad_8h"):
            k = counts[key]
            row[f"{key}_share"] = k / n
            row[f"{key}_upper95"] = float(beta.ppf(0.95, k + 1, n - k)) if k < n else 1.0
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient-steps", type=int, default=600, help="fast patient, per group")
    parser.add_argument("--stock-steps", type=int, default=150, help="stock patient, per group")
    parser.add_argument("--episodes", type=int, default=6, help="env and oracle episodes")
    parser.add_argument("--behaviour-days", type=int, default=1, help="days per patient; 0: skip")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 0.6])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from fttpo_ray.envs.glucose import simglucose_parts

    simglucose_parts()  # imports and parameter tables outside the timings
    stock = patient_speed(args.stock_steps, fast=False)
    fast = patient_speed(args.patient_steps, fast=True)
    env_plain = env_speed(args.episodes, label=False)
    env_label = env_speed(args.episodes, label=True)
    oracle = oracle_cost(args.episodes)
    behaviour = behaviour_labels(args.behaviour_days, args.sigmas, args.seed)

    lines = [
        "## Patient: three-minute steps per second (one core)\n",
        "| patient | stock (pandas parameters) | ours (float parameters) | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name in (*PROBE_PATIENTS, "mean"):
        lines.append(
            f"| {name} | {stock[name]:.0f} | {fast[name]:.0f} | {fast[name] / stock[name]:.1f}x |"
        )
    lines += [
        "",
        f"## Environment: {args.episodes} one-day episodes, basal-bolus controller\n",
        "| oracle label per step | 3-minute steps/s | decisions/s |",
        "|---|---:|---:|",
        f"| no | {env_plain['steps_3min_per_s']:.0f} | {env_plain['decisions_per_s']:.1f} |",
        f"| yes | {env_label['steps_3min_per_s']:.0f} | {env_label['decisions_per_s']:.1f} |",
        "",
        f"## Oracle: median milliseconds per call over {oracle['decisions']} decisions\n",
        "| call | ms |",
        "|---|---:|",
        f"| deep copy of the patient | {oracle['deepcopy_ms']:.1f} |",
        f"| min_glucose, one bolus, fast (one ODE solve) | {oracle['fast_ms']:.1f} |",
        f"| min_glucose, one bolus, minute by minute | {oracle['exact_ms']:.1f} |",
        f"| prohibited, one bolus, zero-bolus rollout cached | "
        f"{oracle['prohibited_cached_ms']:.1f} |",
        f"| prohibited, one bolus, fresh decision | {oracle['prohibited_ms']:.1f} |",
        f"| max_safe_bolus (bisection to 0.05 U) | {oracle['max_safe_ms']:.1f} |",
        "",
        f"Largest |fast − minute-by-minute| minimum glucose: "
        f"{oracle['max_abs_fast_minus_exact_mg_dl']:.2g} mg/dL.",
    ]
    if behaviour:
        lines += [
            "",
            "## Behaviour policy: basal-bolus bolus × exp(σ z), share prohibited\n",
            f"All 30 patients × {args.behaviour_days} day(s), seed {args.seed}; executed boluses "
            "(capped at 30 U); the 95 % bound is one-sided Clopper–Pearson.\n",
            "| σ | boluses | prohibited (4 h) | 95 % upper | prohibited (8 h) | 95 % upper | "
            "deaths |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in behaviour:
            lines.append(
                f"| {row['sigma']:g} | {row['n']} | {100 * row['bad_4h_share']:.1f} % | "
                f"{100 * row['bad_4h_upper95']:.1f} % | {100 * row['bad_8h_share']:.1f} % | "
                f"{100 * row['bad_8h_upper95']:.1f} % | {row['deaths']} |"
            )
    payload = {
        "args": vars(args),
        "patient_stock": stock,
        "patient_fast": fast,
        "env_no_label": env_plain,
        "env_label": env_label,
        "oracle": oracle,
        "behaviour": behaviour,
    }
    c.write_results("glucose_speed", payload, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
