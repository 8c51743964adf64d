"""The glucose experiment (``tune_configs/glucose.yaml``, docs/algorithm.md §4.1): the results
table, the time-in-range / prohibited-bolus frontier and a day of glucose, from a finished sweep.

``record`` reads the sweep's trials from its MLflow store and appends one JSON record per
(trial, policy) with the final evaluation (the last iteration, ``evaluation.final_episodes``
patient-days, episodes ``EVALUATION_SEED + i``; every metric, from the trial's ``result.json``)
to ``benchmarks/results/glucose_runs.jsonl``.
``report`` rolls out the reference rows on the same patient-days (no bolus, the clean
basal-bolus controller, the behaviour policy, the best U-per-gram rule chosen on separate
selection days; cached in ``benchmarks/results/glucose_references.json``) and writes
``benchmarks/results/glucose.{md,json}``, ``glucose_frontier.png`` and ``glucose_day.png`` (a
day of three patients under the learned policies of seed 0, from their checkpoints)::

    fttpo sweep tune_configs/glucose.yaml            # in an empty directory: ./mlflow.db
    .venv/bin/python benchmarks/glucose.py record --mlflow-uri sqlite:///$PWD/mlflow.db
    .venv/bin/python benchmarks/glucose.py report --mlflow-uri sqlite:///$PWD/mlflow.db
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

import _common as c
import torch

RUNS_FILE = c.RESULTS_DIR / "glucose_runs.jsonl"
REFERENCES_FILE = c.RESULTS_DIR / "glucose_references.json"
RESULTS_NAME = "glucose"
FRONTIER_PNG = c.RESULTS_DIR / "glucose_frontier.png"
FRONTIER_ZOOM_PNG = c.RESULTS_DIR / "glucose_frontier_zoom.png"
#: The zoomed frontier starts at this time in range (%).
ZOOM_FROM = 70.0
DAY_PNG = c.RESULTS_DIR / "glucose_day.png"
EXPERIMENT = "glucose"
#: The behaviour policy of the sweep's dataset (fttpo/glucose/basal-bolus-wide-v0).
BEHAVIOUR_SIGMA = 0.6
#: Patients of the day plot (one per group) and its reset seed (an evaluation day).
DAY_PATIENTS = ("adult#001", "adolescent#001", "child#001")
DAY_SEED = 1_000_000
#: Learned policies drawn in the day plot: (run, variant, policy).
DAY_POLICIES = (("fttpo", "fttpo", "thin"), ("fttpo", "fttpo", "certified"), ("bc", "bc", "fat"))


def record(uri: str, experiment: str) -> None:
    """One record per (trial, policy) of ``experiment``'s finished trials, at their last step."""
    from mlflow.tracking import MlflowClient

    from fttpo_ray import metrics as m
    from fttpo_ray.tuning import tracking as tr

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment '{experiment}' in {uri}")
    done = {(r["trial_run_id"], r["policy"]) for r in c.read_records(RUNS_FILE)}
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    written = 0
    for run in runs:
        tags = run.data.tags
        if tags.get(tr.KIND_TAG) != tr.KIND_TRIAL or run.info.status != "FINISHED":
            continue
        final = last_evaluation(Path(tags.get(tr.TRIAL_DIR_TAG, "")))
        for policy in m.POLICIES:
            values = final.get(policy)
            if not values or (run.info.run_id, policy) in done:
                continue
            c.append_record(
                RUNS_FILE,
                {
                    "trial_run_id": run.info.run_id,
                    "run": tags.get(tr.RUN_TAG),
                    "variant": tags.get(tr.VARIANT_TAG),
                    "seed": int(tags.get(tr.SEED_TAG, -1)),
                    "policy": policy,
                    "metrics": values,
                },
            )
            written += 1
    print(f"{written} new records in {RUNS_FILE.relative_to(c.REPO_ROOT)}")


def last_evaluation(trial_dir: Path) -> dict[str, dict[str, float]]:
    """``{policy: metrics}`` of the trial's last result (Tune's ``result.json`` in its
    directory: every metric of the evaluation, the glucose measures per group included)."""
    import json

    from fttpo_ray import metrics as m

    results = trial_dir / "result.json"
    if not results.is_file():
        return {}
    lines = [line for line in results.read_text().splitlines() if line.strip()]
    evaluation = json.loads(lines[-1]).get(m.EVALUATION_PREFIX, {}) if lines else {}
    return {
        policy: {k: float(v) for k, v in evaluation[policy].items() if isinstance(v, (int, float))}
        for policy in m.POLICIES
        if isinstance(evaluation.get(policy), dict)
    }


def references(episodes: int) -> dict[str, Any]:
    """The reference rows on ``episodes`` evaluation days, as the sweep's report computed them
    (read from the reports' cache when it has them), written to :data:`REFERENCES_FILE`."""
    import json

    from fttpo_ray.evaluation.glucose_reference import SELECTION_EPISODES, glucose_references
    from fttpo_ray.reporting.references import reference_cache_dir

    ref = glucose_references(
        episodes=episodes,
        selection_episodes=min(SELECTION_EPISODES, episodes),
        sigmas=(BEHAVIOUR_SIGMA,),
        cache_dir=reference_cache_dir(),
    )
    data = {
        "episodes": episodes,
        "seed": ref.seed,
        "selection_episodes": ref.selection_episodes,
        "selection_seed": ref.selection_seed,
        "best_ratio": ref.best_ratio,
        "rows": ref.rows,
        "selection": {str(r): v for r, v in ref.selection.items()},
    }
    REFERENCES_FILE.write_text(json.dumps(data, indent=1, default=float) + "\n")
    return data


#: Columns of the results table: (heading, metric, digits).
COLUMNS = (
    ("time in range %", "time_in_range", 1),
    ("<70 %", "time_below_70", 1),
    ("<54 %", "time_below_54", 2),
    (">180 %", "time_above_180", 1),
    ("mean glucose", "glucose_mean", 0),
    ("return", "episode_return_mean", 2),
)
GROUPS = ("adolescent", "adult", "child")


def _row(name: str, rows: list[dict[str, float]]) -> dict[str, Any]:
    """Mean ± s.e. over seeds of each column; violations pooled over seeds with their bound."""
    from fttpo_ray.evaluation.safety import clopper_pearson_upper

    out: dict[str, Any] = {"policy": name, "seeds": len(rows)}
    for _, metric, _ in COLUMNS:
        out[metric] = c.mean_se([r[metric] for r in rows])
    for group in GROUPS:
        key = f"time_in_range/{group}"
        out[key] = c.mean_se([r[key] for r in rows if key in r])
    violations = int(sum(r["violations"] for r in rows))
    actions = int(sum(r["actions"] for r in rows))
    out["violations"], out["actions"] = violations, actions
    out["violation_rate"] = violations / max(actions, 1)
    out["violation_rate_ub95"] = clopper_pearson_upper(violations, actions)
    days = sum(r["episodes"] for r in rows)
    out["patient_days"] = days
    out["deaths_per_100_episodes"] = sum(
        r["deaths_per_100_episodes"] * r["episodes"] for r in rows
    ) / max(days, 1)
    return out


def _cells(row: dict[str, Any]) -> list[str]:
    cells = [row["policy"], str(int(row["patient_days"]))]
    for _, metric, digits in COLUMNS:
        mean, se = row[metric]
        cells.append(c.fmt_mean_se(mean, se, digits) if row["seeds"] > 1 else f"{mean:.{digits}f}")
    cells += [f"{100 * row['violation_rate']:.2f}", f"{100 * row['violation_rate_ub95']:.2f}"]
    cells.append(f"{row['deaths_per_100_episodes']:.1f}")
    cells += [f"{row[f'time_in_range/{g}'][0]:.1f}" for g in GROUPS]
    return cells


LABELS = {
    ("fttpo", "fttpo", "thin"): "FtTPO thin (acting)",
    ("fttpo", "fttpo", "fat"): "FtTPO fat proposal",
    ("fttpo", "fttpo", "certified"): "FtTPO certified thin support",
    ("thin_baselines", "rar", "thin"): "RAR (thin)",
    ("thin_baselines", "reverse_kl", "thin"): "reverse KL (thin)",
    ("tawac_gauss", "fat_only", "fat"): "Tsallis-AWAC Gaussian",
    ("tawac_t", "fat_only", "fat"): "Tsallis-AWAC Student-t (q = 2)",
    ("bc", "bc", "fat"): "BC (RLlib, Gaussian)",
    ("iql", "iql", "fat"): "IQL (RLlib, squashed Gaussian)",
    ("cql", "cql", "fat"): "CQL (RLlib, squashed Gaussian)",
}
#: Labels on the frontier, where the points crowd.
SHORT = {
    "FtTPO thin (acting)": "FtTPO thin",
    "FtTPO fat proposal": "FtTPO fat",
    "FtTPO certified thin support": "FtTPO certified",
    "RAR (thin)": "RAR",
    "reverse KL (thin)": "rev. KL",
    "Tsallis-AWAC Gaussian": "TAWAC-G",
    "Tsallis-AWAC Student-t (q = 2)": "TAWAC-t",
    "BC (RLlib, Gaussian)": "BC",
    "IQL (RLlib, squashed Gaussian)": "IQL",
    "CQL (RLlib, squashed Gaussian)": "CQL",
}
#: Rows whose policy is a Gaussian (full support): the "fewer than any Gaussian policy" goal.
GAUSSIAN = {LABELS[k] for k in LABELS if k[0] in ("tawac_gauss", "bc", "iql", "cql")}


def goals(
    row: dict[str, Any],
    behaviour: dict[str, Any],
    best_rule: dict[str, Any],
    clean: dict[str, Any],
    learned: list[dict[str, Any]],
) -> str:
    """One line: the issue's goals for one of FtTPO's acting policies, met or not, with numbers."""
    tir = row["time_in_range"][0]
    rivals = max(behaviour["time_in_range"][0], best_rule["time_in_range"][0])
    fewest = min((r["violation_rate"] for r in learned if r["policy"] in GAUSSIAN), default=1.0)
    stretch = tir >= clean["time_in_range"][0] and (
        row["time_below_54"][0] <= clean["time_below_54"][0]
    )
    return (
        f"- {row['policy']}: time in range {tir:.1f} % vs behaviour "
        f"{behaviour['time_in_range'][0]:.1f} % and best rule {best_rule['time_in_range'][0]:.1f}"
        f" % ({'higher than both' if tir > rivals else 'NOT higher than both'}); prohibited "
        f"boluses {100 * row['violation_rate']:.2f} % (95 % UB "
        f"{100 * row['violation_rate_ub95']:.2f} %: "
        f"{'within' if row['violation_rate_ub95'] <= 0.01 else 'ABOVE'} the 1 % goal; "
        f"{'fewer' if row['violation_rate'] < fewest else 'NOT fewer'} than every Gaussian "
        f"policy's, the fewest {100 * fewest:.2f} %); stretch goal (clean basal-bolus: "
        f"{clean['time_in_range'][0]:.1f} % in range, {clean['time_below_54'][0]:.2f} % < 54): "
        f"{'met' if stretch else 'not met'}."
    )


def report(uris: list[str]) -> None:
    from fttpo_ray.evaluation.glucose_reference import BASAL_BOLUS, BEST_RATIO, behaviour_name
    from fttpo_ray.reporting.frontier import LEARNED, RATIO, REFERENCE, FrontierPoint, frontier_plot

    records = c.read_records(RUNS_FILE)
    if not records:
        raise SystemExit(f"no records in {RUNS_FILE}; run `record` first")
    by_row: dict[tuple, list[dict[str, float]]] = defaultdict(list)
    for r in records:
        by_row[(r["run"], r["variant"], r["policy"])].append(r["metrics"])
    episodes = int(max(m["episodes"] for rows in by_row.values() for m in rows))
    learned = [_row(LABELS.get(k, " ".join(k)), rows) for k, rows in sorted(by_row.items())]
    learned.sort(key=lambda row: -row["time_in_range"][0])
    refs = references(episodes)
    ratio = refs["best_ratio"]
    ref_names = {
        "no bolus": "no bolus",
        BASAL_BOLUS: BASAL_BOLUS,
        behaviour_name(
            BEHAVIOUR_SIGMA
        ): f"behaviour policy (basal-bolus × lognormal σ = {BEHAVIOUR_SIGMA:g})",
        BEST_RATIO: f"best state-independent rule ({ratio:g} U/g)",
    }
    reference_rows = [_row(label, [refs["rows"][name]]) for name, label in ref_names.items()]

    head = ["policy", "patient-days", *(h for h, _, _ in COLUMNS)]
    head += ["prohibited %", "95% UB %", "deaths / 100 days", *(f"TIR {g}" for g in GROUPS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in learned]
    lines.append("| " + " | ".join(["**references**"] + [""] * (len(head) - 1)) + " |")
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in reference_rows]

    behaviour, best_rule = reference_rows[2], reference_rows[3]
    clean = reference_rows[1]
    verdict = [
        goals(row, behaviour, best_rule, clean, learned)
        for name in ("FtTPO thin (acting)", "FtTPO certified thin support")
        for row in learned
        if row["policy"] == name
    ]

    points = [
        FrontierPoint(
            f"{float(r):g}",
            RATIO,
            v["time_in_range"],
            0.0,
            v["violation_rate"],
            v["violation_rate_ub95"],
            annotate=round(float(r) * 20) == float(r) * 20,
        )
        for r, v in sorted(refs["selection"].items(), key=lambda kv: float(kv[0]))
    ]
    points += [
        FrontierPoint(
            row["policy"].split(" (")[0],
            REFERENCE,
            row["time_in_range"][0],
            0.0,
            row["violation_rate"],
            row["violation_rate_ub95"],
        )
        for row in reference_rows
    ]
    points += [
        FrontierPoint(
            SHORT.get(row["policy"], row["policy"]),
            LEARNED,
            row["time_in_range"][0],
            row["time_in_range"][1],
            row["violation_rate"],
            row["violation_rate_ub95"],
        )
        for row in learned
    ]
    frontier_plot(
        points,
        FRONTIER_PNG,
        title=f"Glucose: time in range vs prohibited boluses ({episodes} days per seed)",
        value_label="time in range 70-180 mg/dL (%)",
        violation_label="prohibited boluses (bar: one-sided 95 % upper bound)",
    )
    # The learned policies crowd at 73-82 % in range: the same points, from 70 % on.
    frontier_plot(
        [p for p in points if p.episode_return >= ZOOM_FROM],
        FRONTIER_ZOOM_PNG,
        title=f"Glucose, from {ZOOM_FROM:g} % in range ({episodes} days per seed)",
        value_label="time in range 70-180 mg/dL (%)",
        violation_label="prohibited boluses (bar: one-sided 95 % upper bound)",
    )
    day = day_plot(records, uris) or (DAY_PNG if DAY_PNG.exists() else None)

    markdown = "\n".join(
        [
            f"Final evaluation of every trial of `tune_configs/glucose.yaml` on the same "
            f"{episodes} held-out patient-days (episode i resets with {refs['seed']} + i; "
            "never used for training or selection), 3 training seeds: time columns are % of "
            "3-minute glucose samples, mean ± s.e. over seeds; prohibited boluses pooled over "
            "seeds with the one-sided 95 % Clopper-Pearson bound; deaths = days ended by glucose "
            "< 40 mg/dL. Reference rows on the same days; the U/g rule chosen by return on "
            f"{refs['selection_episodes']} separate selection days ({refs['selection_seed']} + i).",
            "",
            *lines,
            "",
            "**Where FtTPO stands** (goals of issue 21):",
            "",
            *verdict,
            "",
            f"![frontier]({FRONTIER_PNG.name})",
            "",
            f"![frontier, from {ZOOM_FROM:g} % in range]({FRONTIER_ZOOM_PNG.name})",
            "",
            *([f"![a day of glucose]({day.name})"] if day else []),
        ]
    )
    c.write_results(
        RESULTS_NAME,
        {
            "episodes": episodes,
            "learned": learned,
            "references": reference_rows,
            "verdict": verdict,
        },
        markdown,
    )
    print(markdown)


def trial_dirs(uris: list[str]) -> dict[str, Path]:
    """Trial directory (its checkpoints) by MLflow trial run id, from the sweeps' stores."""
    from mlflow.tracking import MlflowClient

    from fttpo_ray.tuning import tracking as tr

    dirs = {}
    for uri in uris:
        client = MlflowClient(uri)
        for exp in client.search_experiments():
            for run in client.search_runs([exp.experiment_id], max_results=5000):
                if tr.TRIAL_DIR_TAG in run.data.tags:
                    dirs[run.info.run_id] = Path(run.data.tags[tr.TRIAL_DIR_TAG])
    return dirs


def day_plot(records: list[dict[str, Any]], uris: list[str]) -> Path | None:
    """A day of three patients under the learned policies of seed 0 (their checkpoints, found
    through the sweeps' MLflow stores ``uris``) and two references; ``None`` without stores."""
    from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
    from fttpo_ray.algorithms.rllib_evaluation import rllib_module_policy
    from fttpo_ray.envs import GLUCOSE_ENV_ID
    from fttpo_ray.evaluation.glucose_reference import basal_bolus_policy, behaviour_policy
    from fttpo_ray.evaluation.rollout import EvalPolicy
    from fttpo_ray.reporting.densities import load_module
    from fttpo_ray.reporting.glucose_day import day_of_glucose

    if not uris:
        return None
    dirs = trial_dirs(uris)
    policies = [basal_bolus_policy(30.0)]
    behaviour = behaviour_policy(BEHAVIOUR_SIGMA, 30.0)
    policies.append(
        EvalPolicy("behaviour (σ 0.6, sampled)", behaviour.distribution, lambda d: d.sample())
    )
    for key in DAY_POLICIES:
        rec = next(
            (r for r in records if (r["run"], r["variant"], r["policy"]) == key and r["seed"] == 0),
            None,
        )
        if rec is None or rec["trial_run_id"] not in dirs:
            continue
        checkpoints = sorted(dirs[rec["trial_run_id"]].glob("checkpoint_*"))
        if not checkpoints:
            continue
        module = load_module(checkpoints[-1])
        if key[0] == "fttpo":
            found = [p for p in fttpo_policies(module) if p.name == key[2]]
        else:
            found = [rllib_module_policy(module)]
        for p in found:
            policies.append(EvalPolicy(LABELS[key], p.distribution, p.deterministic))
    return day_of_glucose(
        policies, GLUCOSE_ENV_ID, patients=list(DAY_PATIENTS), seed=DAY_SEED, path=DAY_PNG
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("record", help="append the sweep's final evaluations to the records")
    p.add_argument("--mlflow-uri", required=True)
    p.add_argument("--experiment", default=EXPERIMENT)
    p = sub.add_parser("report", help="the table, the frontier and the day plot from the records")
    p.add_argument(
        "--mlflow-uri",
        action="append",
        default=[],
        help="a sweep's MLflow store, to find the checkpoints of the day plot (repeatable; "
        "without one the day plot is left as it is)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "record":
        record(args.mlflow_uri, args.experiment)
    else:
        report(args.mlflow_uri)


if __name__ == "__main__":
    main()
