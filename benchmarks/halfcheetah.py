"""HalfCheetah-v5 medium-expert (and medium): FtTPO against RAR, reverse KL, Tsallis-AWAC and
RLlib's IQL, CQL and BC, the same number of gradient steps for every method.

Datasets: the HalfCheetah-v5 stand-ins for Minari's hosted MuJoCo datasets (soft actor-critic
behaviour policies, Minari's HDF5 format): ``fttpo/halfcheetah/medium-sac-v0`` and
``expert-sac-v0``; medium-expert is their mixture, combined once with Minari's
``combine_datasets`` (:func:`fttpo_ray.data.ensure_mixture`). ``--standins DIR`` names a Minari
root that holds them: their ``data/`` folders are linked into the benchmark's Minari root (the
stand-ins are never copied or written to).

Each run: ``steps`` gradient steps in ``steps / eval_every`` ``train()`` calls; after each, the
policy is evaluated on ``evaluation.episodes`` episodes (episode ``i`` reset with
``evaluation.seed + i``, the same for every policy) with stochastic actions — the learning
curve — and again with deterministic actions (each policy's mode or mean: the convention of the
IQL, CQL and D4RL papers; recorded from the runs started after it was added).
"last" = the final evaluation. "selected (criterion)" = the evaluation at the iteration an
*offline* criterion picks (FtTPO's held-out ``selection/<criterion>``, every criterion reported
at every iteration; the evaluation episodes never select); methods without one report "last"
only. Normalised score
``100 (R - ref_min) / (ref_max - ref_min)`` with the references of
:func:`fttpo_ray.data.references.dataset_references` (source named in the report).

Hyper-parameters: ``--config`` (default ``benchmarks/halfcheetah.yaml``: 30 000 steps;
``benchmarks/halfcheetah_long.yaml``: 100 000 on medium-expert, 30 000 on medium); ``steps``
and ``eval_every`` are one number or one per dataset key. The results files are named after the
config (``results/<stem>_runs.jsonl``, ``<stem>_progress.jsonl``, ``<stem>.md``,
``<stem>_curves.png``). ``run`` runs seed-major (every method at seed 0, then seed 1, ...), each
run in its own process, skipping (dataset, method, seed) records already in the runs file, and
appends one record per finished run (plus one progress line per evaluation) — a stopped
benchmark loses only the run in progress; two ``run`` commands with different ``--methods`` or
``--seeds`` use two cores. ``report`` writes the table and the learning curves::

    .venv/bin/python benchmarks/halfcheetah.py run --standins DIR --datasets medium_expert
    .venv/bin/python benchmarks/halfcheetah.py report
    .venv/bin/python benchmarks/halfcheetah.py run --config benchmarks/halfcheetah_long.yaml \
        --standins DIR --datasets medium_expert medium --methods fttpo bc --seeds 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import torch
import yaml

from fttpo_ray.algorithms.fttpo.selection import (
    MAXIMISE,
    POLICY_Q,
    RELATIVE_TD_ERROR,
    SELECTION,
    TD_ERROR,
)
from fttpo_ray.metrics import THIN

CONFIG_FILE = Path(__file__).resolve().with_name("halfcheetah.yaml")
FTTPO = "FtTPO"
#: Result keys of FtTPO's offline model selection (held-out criteria), where present.
SELECTION_KEY = SELECTION
SELECTION_CRITERION = "selection_criterion"
#: The held-out criteria whose picks the report shows (FtTPO reports all of them every
#: iteration, whichever one its config selects with).
SHOWN_CRITERIA = (TD_ERROR, RELATIVE_TD_ERROR, POLICY_Q)
#: Progress-point key of the deterministic evaluation (each policy's mode or mean action, the
#: convention of the IQL, CQL and D4RL papers), beside the stochastic one under "policies".
DETERMINISTIC = "deterministic"


def results_name(config: Path) -> str:
    """The results files' stem: the config's (``halfcheetah`` -> ``halfcheetah_runs.jsonl``,
    ``halfcheetah.md``, ``halfcheetah_progress.jsonl``, ``halfcheetah_curves.png``)."""
    return config.stem


def runs_file(config: Path) -> Path:
    return c.RESULTS_DIR / f"{results_name(config)}_runs.jsonl"


def progress_file(config: Path) -> Path:
    return c.RESULTS_DIR / f"{results_name(config)}_progress.jsonl"


def per_dataset(cfg: dict[str, Any], key: str, dataset: str) -> int:
    """``steps`` or ``eval_every``: one number for every dataset, or a mapping by dataset key."""
    value = cfg[key]
    return int(value[dataset]) if isinstance(value, dict) else int(value)


def link_standins(source_root: Path, dataset_ids: list[str]) -> None:
    """Link each stand-in's ``data/`` folder from ``source_root`` into the Minari root."""
    from fttpo_ray.data import dataset_exists, dataset_path

    for dataset_id in dataset_ids:
        if dataset_exists(dataset_id):
            continue
        source = source_root / dataset_id / "data"
        if not (source / "metadata.json").is_file():
            sys.exit(f"halfcheetah.py: error: --standins {source_root} has no dataset {dataset_id}")
        target = dataset_path(dataset_id)
        target.mkdir(parents=True, exist_ok=True)
        (target / "data").symlink_to(source.resolve(), target_is_directory=True)


def dataset_parts(cfg: dict[str, Any], key: str) -> list[str]:
    value = cfg["datasets"][key]
    return [value] if isinstance(value, str) else list(value)


def build_algo(cfg: dict[str, Any], method: str, dataset_key: str, dataset_id: str, seed: int):
    """One ``train()`` = ``eval_every`` gradient steps (no evaluation inside)."""
    spec = cfg["methods"][method]
    training = {**cfg["common"], **spec.get("training", {})}
    if "beta_by_dataset" in spec:
        training["beta"] = spec["beta_by_dataset"][dataset_key]
    steps = per_dataset(cfg, "eval_every", dataset_key)
    if spec["algorithm"] == FTTPO:
        import fttpo_ray

        config = (
            fttpo_ray.FtTPOConfig()
            .dataset(dataset_id)
            .training(num_gradient_steps_per_iteration=steps, **training)
            .evaluation(evaluation_interval=None)
        )
    else:
        from ray.tune.registry import get_trainable_cls

        from fttpo_ray.algorithms.baselines.builtin_offline import configure_builtin_offline

        model_config = training.pop("model_config", None)
        config = get_trainable_cls(spec["algorithm"]).get_default_config().training(**training)
        if model_config:
            config.rl_module(model_config=model_config)
        configure_builtin_offline(config, dataset_id, dataset_num_iters_per_learner=steps)
        config.learners(num_learners=0).env_runners(num_env_runners=0)
    return config.debugging(seed=seed).build_algo()


def policies_of(algo: Any, algorithm: str) -> list[Any]:
    from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
    from fttpo_ray.algorithms.learner_module import learner_module
    from fttpo_ray.algorithms.rllib_evaluation import rllib_module_policy

    module = learner_module(algo)
    return fttpo_policies(module) if algorithm == FTTPO else [rllib_module_policy(module)]


def cmd_run_one(args: argparse.Namespace) -> None:
    """One (dataset, method, seed) run in this process; appends its record."""
    import ray

    import fttpo_ray  # noqa: F401
    from fttpo_ray.data import load_transitions
    from fttpo_ray.data.references import dataset_references
    from fttpo_ray.evaluation import evaluate_policies

    torch.set_num_threads(1)
    cfg = yaml.safe_load(args.config.read_text())
    spec = cfg["methods"][args.method]
    dataset_id = args.dataset_id
    references = dataset_references(dataset_id)
    ev = cfg["evaluation"]
    env_id = load_transitions(dataset_id).env_id
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    curve, train_s = [], 0.0
    steps = per_dataset(cfg, "steps", args.dataset)
    eval_every = per_dataset(cfg, "eval_every", args.dataset)
    try:
        algo = build_algo(cfg, args.method, args.dataset, dataset_id, args.seed)
        try:
            for iteration in range(1, steps // eval_every + 1):
                t0 = time.perf_counter()
                result = algo.train()
                train_s += time.perf_counter() - t0
                policies = policies_of(algo, spec["algorithm"])
                with torch.no_grad():
                    final = evaluate_policies(
                        policies, env_id, episodes=ev["episodes"], seed=ev["seed"]
                    )
                    greedy = evaluate_policies(
                        policies, env_id, episodes=ev["episodes"], seed=ev["seed"], explore=False
                    )
                point = {
                    "steps": iteration * eval_every,
                    "train_s": train_s,
                    "policies": {
                        name: {
                            "return": metrics["episode_return_mean"],
                            "return_sem": metrics["episode_return_sem"],
                            "score": references.normalize(metrics["episode_return_mean"]),
                            "boundary_action_rate": metrics["boundary_action_rate"],
                        }
                        for name, metrics in final.items()
                    },
                    DETERMINISTIC: {
                        name: {
                            "return": metrics["episode_return_mean"],
                            "return_sem": metrics["episode_return_sem"],
                            "score": references.normalize(metrics["episode_return_mean"]),
                        }
                        for name, metrics in greedy.items()
                    },
                    "selection": {
                        k: float(v)
                        for k, v in (result.get(SELECTION_KEY) or {}).items()
                        if isinstance(v, (int, float))
                    },
                }
                curve.append(point)
                c.append_record(
                    progress_file(args.config),
                    {"dataset": args.dataset, "method": args.method, "seed": args.seed, **point},
                )
                scores = {n: round(p["score"], 1) for n, p in point["policies"].items()}
                print(f"{args.method} seed {args.seed} {point['steps']} steps {scores}", flush=True)
            criterion = getattr(algo.config, SELECTION_CRITERION, None)
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    record = {
        "dataset": args.dataset,
        "dataset_id": dataset_id,
        "method": args.method,
        "algorithm": spec["algorithm"],
        "seed": args.seed,
        "steps": steps,
        "eval_every": eval_every,
        "evaluation": ev,
        "config": {"common": cfg["common"], **spec},
        "references": {
            "min": references.ref_min,
            "max": references.ref_max,
            "source": references.source,
        },
        "selection_criterion": criterion,
        "curve": curve,
        "train_s": train_s,
        "grad_steps_per_s": steps / train_s,
        "wall_s": time.perf_counter() - start,
        "command": c.portable(c.command_line()),
        "machine": c.machine(),
    }
    c.append_record(runs_file(args.config), record)


def cmd_run(args: argparse.Namespace) -> None:
    """Seed-major over datasets x seeds x methods, one process per run, finished ones skipped."""
    from fttpo_ray.data import resolve_dataset

    cfg = yaml.safe_load(args.config.read_text())
    if args.standins is not None:
        standins = sorted({d for key in args.datasets for d in dataset_parts(cfg, key)})
        link_standins(args.standins, standins)
    dataset_ids = {key: resolve_dataset(dataset_parts(cfg, key)) for key in args.datasets}
    methods = args.methods or list(cfg["methods"])
    for dataset in args.datasets:
        for seed in args.seeds:
            for method in methods:
                done = {
                    (r.get("dataset"), r["method"], r["seed"])
                    for r in c.read_records(runs_file(args.config))
                }
                if (dataset, method, seed) in done:
                    continue
                command = [
                    sys.executable,
                    __file__,
                    "run-one",
                    "--config", str(args.config),
                    "--dataset", dataset,
                    "--dataset-id", dataset_ids[dataset],
                    "--method", method,
                    "--seed", str(seed),
                ]  # fmt: skip
                print("run", dataset, method, seed, flush=True)
                code = subprocess.call(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
                if code != 0:
                    print(f"run {dataset} {method} {seed} failed with exit code {code}", flush=True)


def selected_point(record: dict[str, Any], criterion: str) -> dict[str, Any] | None:
    """The curve point that the held-out ``criterion`` picks (its best value over the
    evaluations; ``None`` where the run did not report it at every evaluation)."""
    points = record["curve"]
    if not all(criterion in p.get(SELECTION_KEY, {}) for p in points):
        return None
    value = lambda p: p[SELECTION_KEY][criterion]  # noqa: E731
    return max(points, key=value) if MAXIMISE[criterion] else min(points, key=value)


def acting_policy(record: dict[str, Any]) -> str:
    """The policy that acts: FtTPO's thin one where the run reports it, else its only one."""
    policies = record["curve"][-1]["policies"]
    return THIN if THIN in policies else next(iter(policies))


def selection_check(records: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """How well each held-out criterion picks, over the runs that report all of them at every
    evaluation: the acting policy's score at the picked evaluation, how many runs it sends to
    the first evaluation, and its shortfall from the run's best evaluation; beside the last
    evaluation and the best one (an oracle: it reads the evaluation episodes)."""
    runs = [r for r in records if all(selected_point(r, k) for k in SHOWN_CRITERIA)]
    if not runs:
        return [], []

    def score(record: dict[str, Any], point: dict[str, Any]) -> float:
        return point["policies"][acting_policy(record)]["score"]

    picks = {k: [selected_point(r, k) for r in runs] for k in SHOWN_CRITERIA}
    picks["last evaluation"] = [r["curve"][-1] for r in runs]
    best = [max(r["curve"], key=lambda p, r=r: score(r, p)) for r in runs]
    picks["best evaluation (oracle)"] = best
    lines = [
        f"\nSelection check ({len(runs)} runs: "
        + ", ".join(sorted({f"{r['method']} seed {r['seed']}" for r in runs}))
        + "; the acting policy, stochastic actions):\n",
        "| picked by | score at the pick | runs picking the first evaluation | shortfall from the "
        "run's best |",
        "|---|---|---|---|",
    ]

    best_scores = [score(r, b) for r, b in zip(runs, best, strict=True)]
    rows = []
    for name, points in picks.items():
        pairs = list(zip(runs, points, strict=True))
        scores = [score(r, p) for r, p in pairs]
        first = sum(p is r["curve"][0] for r, p in pairs)
        shortfall = [b - s for b, s in zip(best_scores, scores, strict=True)]
        lines.append(
            f"| {name} | {c.fmt_mean_se(*c.mean_se(scores), digits=1)} | {first} of {len(runs)} "
            f"| {c.fmt_mean_se(*c.mean_se(shortfall), digits=1)} |"
        )
        rows.append(
            {"picked_by": name, "score": c.mean_se(scores), "first": first, "runs": len(runs)}
        )
    return lines, rows


def cmd_report(args: argparse.Namespace) -> None:
    cfg = yaml.safe_load(args.config.read_text())
    name = results_name(args.config)
    records = c.read_records(runs_file(args.config))
    budget = "; ".join(
        f"{d}: {per_dataset(cfg, 'steps', d)} gradient steps, evaluated every "
        f"{per_dataset(cfg, 'eval_every', d)}"
        for d in cfg["datasets"]
    )
    lines = [
        f"Hyper-parameters: `benchmarks/{args.config.name}`; every run of a dataset the same "
        f"number of gradient steps (batch {cfg['common']['train_batch_size_per_learner']}; "
        f"{budget}), evaluated on {cfg['evaluation']['episodes']} episodes of HalfCheetah-v5 "
        f"(episode i resets with seed {cfg['evaluation']['seed']} + i, the same for every policy; "
        "stochastic actions; *deterministic*: the same episodes with each policy's mode or mean "
        "action, recorded for runs started after it was added). Normalised score = "
        "100 (R − ref_min) / (ref_max − ref_min), mean ± s.e. over seeds. *last*: the final "
        "evaluation; *selected (criterion)*: the evaluation at the iteration picked by that "
        "offline criterion on held-out episodes (never the evaluation episodes): `td_error`, the "
        "held-out TD error, `relative_td_error`, the same divided by the variance of the "
        "held-out TD targets (scale-free), and `policy_q`, the critic's mean value of the "
        "acting policy's location at held-out states (highest); `–` where a method has none or "
        "the run did not "
        f"report it. Per-run records with their commands: `{name}_runs.jsonl`; learning curves: "
        f"`{name}_curves.png`.\n",
    ]
    rows = []
    selection_rows: dict[str, list[dict[str, Any]]] = {}
    for dataset in cfg["datasets"]:
        recs = [r for r in records if r.get("dataset") == dataset]
        if not recs:
            continue
        ref = recs[0]["references"]
        lines += [
            f"\n## {dataset} (`{recs[0]['dataset_id']}`)\n",
            f"References {ref['min']} / {ref['max']}: {ref['source']}.\n",
            "| method (policy) | seeds | last return | last score | "
            + " | ".join(f"selected ({k})" for k in SHOWN_CRITERIA)
            + " | last score, deterministic | boundary-action rate | grad steps/s |",
            "|---|---|---|---|" + "---|" * len(SHOWN_CRITERIA) + "---|---|---|",
        ]
        for method in cfg["methods"]:
            mrecs = sorted((r for r in recs if r["method"] == method), key=lambda r: r["seed"])
            if not mrecs:
                continue
            for policy in mrecs[0]["curve"][-1]["policies"]:
                last = [r["curve"][-1]["policies"][policy] for r in mrecs]
                selected = {}
                for criterion in SHOWN_CRITERIA:
                    picked = [selected_point(r, criterion) for r in mrecs]
                    if all(p is not None for p in picked):
                        selected[criterion] = c.mean_se(
                            [p["policies"][policy]["score"] for p in picked]
                        )
                sel_text = " | ".join(
                    c.fmt_mean_se(*selected[k], digits=1) if k in selected else "–"
                    for k in SHOWN_CRITERIA
                )
                ret = c.mean_se([p["return"] for p in last])
                score = c.mean_se([p["score"] for p in last])
                greedy = [
                    r["curve"][-1][DETERMINISTIC][policy]["score"]
                    for r in mrecs
                    if DETERMINISTIC in r["curve"][-1]
                ]
                greedy_text = (
                    f"{c.fmt_mean_se(*c.mean_se(greedy), digits=1)}"
                    + ("" if len(greedy) == len(mrecs) else f" ({len(greedy)} of {len(mrecs)})")
                    if greedy
                    else "–"
                )
                label = f"{method} ({policy})"
                seeds = ",".join(str(r["seed"]) for r in mrecs)
                rate = c.median([r["grad_steps_per_s"] for r in mrecs])
                bound = float(np.mean([p["boundary_action_rate"] for p in last]))
                rows.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "policy": policy,
                        "seeds": [r["seed"] for r in mrecs],
                        "last_return": ret,
                        "last_score": score,
                        "selected_score": selected,
                        "last_score_deterministic": c.mean_se(greedy) if greedy else None,
                        "deterministic_seeds": len(greedy),
                    }
                )
                lines.append(
                    f"| {label} | {seeds} | {c.fmt_mean_se(*ret, digits=0)} | "
                    f"{c.fmt_mean_se(*score, digits=1)} | {sel_text} | {greedy_text} | "
                    f"{bound:.3f} | {rate:.1f} |"
                )
        check_lines, check_rows = selection_check(recs)
        lines += check_lines
        selection_rows[dataset] = check_rows
    partial = unfinished_runs(records, progress_file(args.config))
    if partial:
        lines += [
            f"\n## Runs in progress (not finished; from `{name}_progress.jsonl`)\n",
            "| dataset | method (policy) | seed | steps so far | score at the latest evaluation |",
            "|---|---|---|---|---|",
        ]
        for (dataset, method, seed), points in partial.items():
            latest = points[-1]
            for policy, value in latest["policies"].items():
                lines.append(
                    f"| {dataset} | {method} ({policy}) | {seed} | {latest['steps']} | "
                    f"{value['score']:.1f} (return {value['return']:.0f}) |"
                )
    plot_curves(records, cfg, args.config)
    text = "\n".join(lines)
    print(text)
    c.write_results(
        name,
        {
            "config": cfg,
            "runs_file": str(runs_file(args.config).relative_to(c.REPO_ROOT)),
            "rows": rows,
            "selection_check": selection_rows,
        },
        text,
    )


def unfinished_runs(
    records: list[dict[str, Any]], progress: Path
) -> dict[tuple, list[dict[str, Any]]]:
    """Progress points of (dataset, method, seed) runs that have no finished record: those of
    the latest attempt (a restarted run starts again from its first evaluation)."""
    done = {(r.get("dataset"), r["method"], r["seed"]) for r in records}
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for point in c.read_records(progress):
        key = (point["dataset"], point["method"], point["seed"])
        if key in done:
            continue
        points = runs.setdefault(key, [])
        if points and point["steps"] <= points[-1]["steps"]:
            points.clear()
        points.append(point)
    return runs


def plot_curves(records: list[dict[str, Any]], cfg: dict[str, Any], config: Path) -> None:
    """Mean normalised score against gradient steps, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    in_progress = unfinished_runs(records, progress_file(config))
    partial = {key[0] for key in in_progress}
    datasets = [
        d for d in cfg["datasets"] if d in partial or any(r.get("dataset") == d for r in records)
    ]
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for method in cfg["methods"]:
            mrecs = [r for r in records if r.get("dataset") == dataset and r["method"] == method]
            if not mrecs:
                continue
            for policy in mrecs[0]["curve"][-1]["policies"]:
                steps = [p["steps"] for p in mrecs[0]["curve"]]
                scores = np.array(
                    [[p["policies"][policy]["score"] for p in r["curve"]] for r in mrecs]
                )
                label = f"{method} ({policy}), {len(mrecs)} seed(s)"
                ax.plot(steps, scores.mean(axis=0), marker="o", label=label)
        for (d, method, seed), points in in_progress.items():
            if d != dataset:
                continue
            for policy in points[-1]["policies"]:
                ax.plot(
                    [p["steps"] for p in points],
                    [p["policies"][policy]["score"] for p in points],
                    linestyle="--",
                    marker="x",
                    label=f"{method} ({policy}), seed {seed}, in progress",
                )
        ax.set_title(f"HalfCheetah-v5 {dataset}")
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("normalised score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(c.RESULTS_DIR / f"{results_name(config)}_curves.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("run")
    p.add_argument("--config", type=Path, default=CONFIG_FILE)
    p.add_argument("--standins", type=Path, help="Minari root holding the stand-in datasets")
    p.add_argument("--datasets", nargs="+", default=["medium_expert"])
    p.add_argument("--methods", nargs="+", help="default: every method of the config, in order")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("run-one")
    p.add_argument("--config", type=Path, default=CONFIG_FILE)
    p.add_argument("--dataset", required=True)
    p.add_argument("--dataset-id", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.set_defaults(func=cmd_run_one)
    p = sub.add_parser("report")
    p.add_argument("--config", type=Path, default=CONFIG_FILE)
    p.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
