"""The certified thin support on the treatment simulator (docs/algorithm.md §5.1): violation rate
(with its 95 % upper bound), return and abstention of the certified policy at several
``certificate_alpha``, beside the plain thin policy, the best constant dose and the other
reference rows, and the return/violation frontier as a PNG.

``run`` trains FtTPO (the ``fttpo`` method of ``benchmarks/treatment.yaml``, plus the
certificate of ``benchmarks/treatment_safe.yaml``) once per seed, then evaluates the plain thin
policy and the certified policy, recalibrated at each alpha (the reward ensemble is fitted once;
only the multiplier changes), on the same ``evaluation.episodes`` episodes; one JSON record per
(env, seed) is appended to ``benchmarks/results/treatment_safe_runs.jsonl``. ``report`` rolls out
the reference rows (constant-dose grid chosen on separate selection episodes, no treatment,
uniform random, myopic oracle) on the same episodes and writes
``benchmarks/results/treatment_safe.{json,md}`` and ``treatment_safe_frontier_<env>.png``::

    .venv/bin/python benchmarks/treatment_safe.py run --env normal --seeds 0 1 2
    .venv/bin/python benchmarks/treatment_safe.py run --env lethal --seeds 0 1 2
    .venv/bin/python benchmarks/treatment_safe.py report
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as c
import torch
import yaml
from treatment import CONFIG_FILE as TREATMENT_CONFIG_FILE
from treatment import ENVS, fttpo_config
from treatment import load_config as load_treatment_config

CONFIG_FILE = Path(__file__).resolve().with_name("treatment_safe.yaml")
CONFIG_KEYS = {"alphas", "certificate", "evaluation", "steps"}
RUNS_FILE = c.RESULTS_DIR / "treatment_safe_runs.jsonl"
RESULTS_NAME = "treatment_safe"
#: Reference rollouts (nothing trained), kept so that a report does not roll them out again.
REFERENCES_FILE = c.RESULTS_DIR / "treatment_safe_references.json"
#: Gradient steps per train() call.
STEPS_PER_ITERATION = 1000


def load_config(path: Path = CONFIG_FILE) -> dict[str, Any]:
    cfg = yaml.safe_load(Path(path).read_text())
    if set(cfg) != CONFIG_KEYS:
        raise ValueError(f"{path}: expected keys {sorted(CONFIG_KEYS)}; got {sorted(cfg)}")
    return cfg


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def run_one(cfg: dict[str, Any], tcfg: dict[str, Any], env_key: str, seed: int) -> dict[str, Any]:
    """Train once, then the thin policy and the certified policy at every alpha."""
    from fttpo_ray import metrics as m
    from fttpo_ray.algorithms.fttpo.certificate import recalibrate
    from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
    from fttpo_ray.algorithms.learner_module import learner_module
    from fttpo_ray.evaluation import evaluate_policies

    ev = cfg["evaluation"]
    config = (
        fttpo_config(tcfg, "fttpo", env_key, seed, STEPS_PER_ITERATION)
        .training(
            safety_certificate=True,
            certificate_alpha=cfg["alphas"][env_key][0],
            **cfg["certificate"],
        )
        .evaluation(evaluation_interval=None)
    )
    algo = config.build_algo()
    try:
        for _ in range(cfg["steps"] // STEPS_PER_ITERATION):
            algo.train()
        module = learner_module(algo)
        policies = {p.name: p for p in fttpo_policies(module)}
        episodes = {"episodes": ev["episodes"], "seed": ev["seed"]}
        env_id = ENVS[env_key][0]
        with torch.no_grad():
            thin = evaluate_policies([policies[m.THIN]], env_id, **episodes)[m.THIN]
            certified = {}
            for alpha in cfg["alphas"][env_key]:
                calibration = recalibrate(module.certificate, algo.prepared.split, alpha)
                result = evaluate_policies([policies[m.CERTIFIED]], env_id, **episodes)
                certified[str(alpha)] = {
                    **_floats(result[m.CERTIFIED]),
                    "held_out_certified": calibration.held_out_certified,
                    "held_out_risk": calibration.held_out_risk,
                    "held_out_pairs": calibration.held_out_pairs,
                }
                print(
                    env_key,
                    seed,
                    alpha,
                    round(certified[str(alpha)][m.EPISODE_RETURN_MEAN], 2),
                    round(certified[str(alpha)][m.VIOLATION_RATE], 4),
                    round(certified[str(alpha)][m.ABSTENTION_RATE], 3),
                    flush=True,
                )
    finally:
        algo.stop()
    return {"thin": _floats(thin), "certified": certified}


def cmd_run(args: argparse.Namespace) -> None:
    import ray

    import fttpo_ray  # noqa: F401  (registers the envs)
    from fttpo_ray.data import ensure_dataset

    cfg, tcfg = load_config(args.config), load_treatment_config(TREATMENT_CONFIG_FILE)
    torch.set_num_threads(1)
    ensure_dataset(ENVS[args.env][1])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for seed in args.seeds:
            start = time.perf_counter()
            out = run_one(cfg, tcfg, args.env, seed)
            record = {
                "env": args.env,
                "seed": seed,
                "steps": cfg["steps"],
                "config": {
                    "common": tcfg["common"],
                    **tcfg["methods"]["fttpo"],
                    **cfg["certificate"],
                    "alphas": cfg["alphas"][args.env],
                },
                "evaluation": cfg["evaluation"],
                "wall_s": time.perf_counter() - start,
                "command": c.command_line(),
                "machine": c.machine(),
                **out,
            }
            c.append_record(args.runs_file, record)
            print(args.env, seed, "thin", round(out["thin"]["episode_return_mean"], 2), flush=True)
    finally:
        ray.shutdown()


def _pooled(label: str, rows: list[dict[str, float]]) -> dict[str, Any]:
    """Mean ± s.e. over seeds of the return; violations pooled over seeds (rate and 95 % UB)."""
    from fttpo_ray import metrics as m
    from fttpo_ray.evaluation.safety import clopper_pearson_upper

    v = int(sum(r[m.VIOLATIONS] for r in rows))
    n = int(sum(r[m.ACTIONS] for r in rows))
    ret, se = c.mean_se([r[m.EPISODE_RETURN_MEAN] for r in rows])
    out = {
        "policy": label,
        "seeds": len(rows),
        "return": ret,
        "return_se": se,
        "violations": v,
        "actions": n,
        "violation_rate": v / n,
        "violation_rate_ub95": clopper_pearson_upper(v, n),
        "deaths": float(sum(r[m.DEATHS_PER_100_EPISODES] * r[m.EPISODES] / 100 for r in rows)),
        "deaths_per_seed": [r[m.DEATHS_PER_100_EPISODES] * r[m.EPISODES] / 100 for r in rows],
    }
    for key in (
        m.ABSTENTION_RATE,
        m.CERTIFIED_SHARE_MEAN,
        m.CERTIFIED_WIDTH_MEAN,
        m.CERTIFICATE_BOUND_WIDTH_MEAN,
        m.CERTIFICATE_MULTIPLIER,
        "held_out_certified",
    ):
        if key in rows[0]:
            out[key] = c.mean_se([r[key] for r in rows])
    return out


def _reference_row(label: str, r: dict[str, float]) -> dict[str, Any]:
    from fttpo_ray import metrics as m

    return {
        "policy": label,
        "seeds": None,
        "return": r[m.EPISODE_RETURN_MEAN],
        "return_se": r[m.EPISODE_RETURN_SEM],
        "violations": int(r[m.VIOLATIONS]),
        "actions": int(r[m.ACTIONS]),
        "violation_rate": r[m.VIOLATION_RATE],
        "violation_rate_ub95": r[m.VIOLATION_RATE_UB95],
        "deaths": r[m.DEATHS_PER_100_EPISODES] * r[m.EPISODES] / 100,
    }


def _table(rows: list[dict[str, Any]], lethal: bool) -> str:
    head = "| policy | seeds | return | violation rate (95% UB) | abstention | certified share |"
    sep = "|---|---|---|---|---|---|"
    if lethal:
        head += " deaths (per seed) |"
        sep += "---|"
    lines = [head, sep]
    for r in rows:
        seeds = "–" if r["seeds"] is None else str(r["seeds"])
        se = r["return_se"]
        ret = f"{r['return']:.2f} ± {se:.2f}" if se == se else f"{r['return']:.2f}"
        line = (
            f"| {r['policy']} | {seeds} | {ret} | {r['violation_rate']:.4f} "
            f"({r['violation_rate_ub95']:.4f}) | "
        )
        abst = r.get("abstention_rate")
        share = r.get("certified_share_mean")
        line += f"{abst[0]:.3f} | " if abst else "– | "
        line += f"{share[0]:.3f} |" if share else "– |"
        if lethal:
            per_seed = r.get("deaths_per_seed")
            line += (
                f" {r['deaths']:g} ({', '.join(f'{d:g}' for d in per_seed)}) |"
                if per_seed
                else f" {r['deaths']:g} |"
            )
        lines.append(line)
    return "\n".join(lines)


def _references(env_id: str, episodes: int, seed: int) -> tuple[dict[str, Any], Any]:
    """The reference rows and the constant-dose grid of ``env_id``, rolled out once and kept in
    ``REFERENCES_FILE`` (keyed by env, episodes and seed: they depend on nothing trained)."""
    import json

    from fttpo_ray.evaluation.reference import (
        ConstantDoseReference,
        constant_dose_reference,
        reference_policies,
    )

    cache = json.loads(REFERENCES_FILE.read_text()) if REFERENCES_FILE.exists() else {}
    key = f"{env_id}|{episodes}|{seed}"
    if key not in cache:
        const = constant_dose_reference(env_id, episodes=episodes, seed=seed)
        cache[key] = {
            "references": reference_policies(env_id, episodes=episodes, seed=seed),
            "constant": {
                "best_dose": const.best_dose,
                "selection": [[d, r] for d, r in const.selection.items()],
                "evaluation": [[d, r] for d, r in const.evaluation.items()],
                "selection_seed": const.selection_seed,
                "selection_episodes": const.selection_episodes,
            },
            "command": c.command_line(),
            "commit": c.machine()["git_commit"],
        }
        REFERENCES_FILE.write_text(json.dumps(cache, indent=1, default=float) + "\n")
    entry = cache[key]["constant"]
    const = ConstantDoseReference(
        best_dose=entry["best_dose"],
        selection={float(d): r for d, r in entry["selection"]},
        evaluation={float(d): r for d, r in entry["evaluation"]},
        selection_seed=entry["selection_seed"],
        evaluation_seed=seed,
        episodes=episodes,
        selection_episodes=entry["selection_episodes"],
        doses=tuple(float(d) for d, _ in entry["selection"]),
    )
    return cache[key]["references"], const


def cmd_report(args: argparse.Namespace) -> None:
    import fttpo_ray  # noqa: F401  (registers the envs)
    from fttpo_ray.evaluation.reference import (
        MYOPIC_ORACLE,
        NO_TREATMENT,
        UNIFORM_RANDOM,
    )
    from fttpo_ray.reporting.frontier import (
        CERTIFIED,
        CONSTANT,
        LEARNED,
        REFERENCE,
        FrontierPoint,
        frontier_plot,
    )

    cfg = load_config(args.config)
    records = c.read_records(args.runs_file)
    if not records:
        raise SystemExit(f"no records in {args.runs_file}; run `treatment_safe.py run` first")
    payload: dict[str, Any] = {"runs_file": c.portable(str(args.runs_file))}
    md = [
        "Certified thin support (docs/algorithm.md §5.1). Every policy on the same "
        f"{cfg['evaluation']['episodes']} evaluation episodes (episode i resets with "
        f"{cfg['evaluation']['seed']} + i). Learned rows: return mean ± s.e. over seeds, "
        "violations pooled over seeds with the one-sided 95 % Clopper–Pearson upper bound. The "
        "best constant dose is chosen on separate selection episodes (2 000 000 + i) from a "
        "41-dose grid. *abstention*: share of visited states given the safe action (a = 0); "
        "*certified share*: certified share of the thin support. One trained module per seed; "
        "the certificate is recalibrated per alpha on the held-out episodes.",
        "",
        "Reading: the calibration (conformal risk control on 240 held-out transitions, "
        "docs/algorithm.md §5.1) bounds a joint rate on noisy labels; the violation rate here "
        "is measured with the simulator's oracle. The reward noise (standard deviation about "
        "1.5 at a typical state) is far above the gain of a good dose (a few tenths), so small "
        "alphas certify few doses: the certified policy mostly abstains (a = 0) and its return "
        "stays near no treatment's. Larger alphas certify more, with more violations; on the "
        "lethal variant a lethal dose next to a certified one can be certified at alpha >= 0.1 "
        "(the smooth reward model does not resolve the cliff at |a| = 0.9).",
        "",
    ]
    for env_key in ("normal", "lethal"):
        recs = [r for r in records if r["env"] == env_key]
        if not recs:
            continue
        env_id = ENVS[env_key][0]
        lethal = env_key == "lethal"
        ev = recs[0]["evaluation"]
        refs, const = _references(env_id, ev["episodes"], ev["seed"])
        rows = [_reference_row(name, refs[name]) for name in (NO_TREATMENT, UNIFORM_RANDOM)]
        if MYOPIC_ORACLE in refs:
            rows.append(
                _reference_row(f"{MYOPIC_ORACLE} (sees the hidden state)", refs[MYOPIC_ORACLE])
            )
        rows.append(_reference_row(f"best constant dose (a = {const.best_dose:g})", const.best))
        rows.append(_pooled("FtTPO thin (plain)", [r["thin"] for r in recs]))
        alphas = sorted(recs[0]["certified"], key=float)
        for alpha in alphas:
            rows.append(
                _pooled(f"FtTPO certified, α = {alpha}", [r["certified"][alpha] for r in recs])
            )
        points = [
            FrontierPoint(
                f"{d:g}",
                CONSTANT,
                r["episode_return_mean"],
                r["episode_return_sem"],
                r["violation_rate"],
                r["violation_rate_ub95"],
                annotate=abs(d * 10 - round(d * 10)) < 1e-9,
            )
            for d, r in sorted(const.evaluation.items())
        ]
        for row in rows:
            if row["policy"].startswith(("best constant", UNIFORM_RANDOM)):
                continue
            kind = (
                CERTIFIED
                if "certified" in row["policy"]
                else LEARNED
                if row["seeds"]
                else REFERENCE
            )
            se = row["return_se"] if row["return_se"] == row["return_se"] else 0.0
            points.append(
                FrontierPoint(
                    row["policy"].replace("FtTPO ", ""),
                    kind,
                    row["return"],
                    se,
                    row["violation_rate"],
                    row["violation_rate_ub95"],
                )
            )
        png = frontier_plot(
            points,
            c.RESULTS_DIR / f"{RESULTS_NAME}_frontier_{env_key}.png",
            title=f"{env_id}: return vs violation rate ({ev['episodes']} episodes)",
        )
        seeds = sorted(r["seed"] for r in recs)
        md += [
            f"## {env_id} (seeds {', '.join(map(str, seeds))}, {recs[0]['steps']} gradient steps)",
            "",
            "Runs: "
            + "; ".join(f"`{cmd}`" for cmd in sorted({r["command"] for r in recs}))
            + f" (commit {', '.join(sorted({r['machine']['git_commit'][:9] for r in recs}))})",
            "",
            _table(rows, lethal),
            "",
            f"![frontier]({png.name})",
            "",
        ]
        payload[env_key] = {
            "rows": rows,
            "best_constant_dose": const.best_dose,
            "constant_grid": {str(d): r for d, r in const.evaluation.items()},
            "constant_selection_returns": {
                str(d): r["episode_return_mean"] for d, r in const.selection.items()
            },
            "seeds": seeds,
            "wall_s": [r["wall_s"] for r in recs],
            "commands": sorted({r["command"] for r in recs}),
        }
    c.write_results(RESULTS_NAME, payload, "\n".join(md))
    print("\n".join(md))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG_FILE)
    parser.add_argument("--runs-file", type=Path, default=RUNS_FILE)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train and evaluate; append one record per seed")
    p.add_argument("--env", choices=tuple(ENVS), required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="reference rows, tables and frontier PNGs from the records")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
