"""FtTPO vs its full-support baseline (fat-only Gaussian, "TAWAC") and RLlib's IQL on a
HalfCheetah-v5 dataset made here (short budget).

Dataset: ``mujoco/halfcheetah/random-fttpo-v0`` — 100 episodes x 1 000 steps of a uniform-random
policy, reset seeds 0..99, collected with ``fttpo_ray.data.collect_dataset`` (the same as
``fttpo collect --env HalfCheetah-v5 --policy random --episodes 100
--dataset-id mujoco/halfcheetah/random-fttpo-v0``) into the benchmark Minari root.

Normalised score (D4RL style): ``100 (R - R_random) / (R_expert - R_random)`` with
``R_random`` = the dataset's own mean episode return (its random behaviour policy) and
``R_expert`` = D4RL's HalfCheetah expert reference 12 135.0 (no expert or medium policy is
trained here); the table also gives D4RL's own normalisation (random -280.18).

Hyper-parameters: ``benchmarks/halfcheetah.yaml``. ``run`` appends one record per (method,
seed) to ``benchmarks/results/halfcheetah_runs.jsonl``; ``report`` writes
``benchmarks/results/halfcheetah.{json,md}``::

    .venv/bin/python benchmarks/halfcheetah.py run --methods fttpo tawac_gauss iql --seeds 0 1 2
    .venv/bin/python benchmarks/halfcheetah.py report
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import torch
import yaml

D4RL_EXPERT = 12135.0
D4RL_RANDOM = -280.178953
ENV_ID = "HalfCheetah-v5"
CONFIG_FILE = Path(__file__).resolve().with_name("halfcheetah.yaml")
RUNS_FILE = c.RESULTS_DIR / "halfcheetah_runs.jsonl"


def build_algo(cfg: dict[str, Any], method: str, dataset_id: str, seed: int) -> Any:
    """One ``train()`` = ``steps`` gradient steps (no evaluation inside)."""
    spec = cfg["methods"][method]
    training = {**cfg["common"], **spec["training"]}
    if spec["algorithm"] == "FtTPO":
        import fttpo_ray

        config = (
            fttpo_ray.FtTPOConfig()
            .dataset(dataset_id)
            .training(num_gradient_steps_per_iteration=cfg["steps"], **training)
            .evaluation(evaluation_interval=None)
        )
    elif spec["algorithm"] == "IQL":
        from ray.rllib.algorithms.iql import IQLConfig

        from fttpo_ray.data.parquet import configure_rllib_offline

        config = IQLConfig().training(**training)
        configure_rllib_offline(
            config,
            dataset_id,
            dataset_num_iters_per_learner=cfg["steps"],
            **spec.get("offline_data", {}),
        )
        config.learners(num_learners=0).env_runners(num_env_runners=0)
    else:
        raise ValueError(f"method {method!r}: algorithm must be FtTPO or IQL; got {spec}")
    return config.debugging(seed=seed).build_algo()


def cmd_run(args: argparse.Namespace) -> None:
    import ray

    import fttpo_ray  # noqa: F401
    from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
    from fttpo_ray.algorithms.learner_module import learner_module
    from fttpo_ray.algorithms.rllib_evaluation import rllib_module_policy
    from fttpo_ray.evaluation import evaluate_policies

    cfg = yaml.safe_load(args.config.read_text())
    torch.set_num_threads(1)
    dataset_id = c.ensure_cheetah_random()
    ev = cfg["evaluation"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for method in args.methods:
            for seed in args.seeds:
                start = time.perf_counter()
                algo = build_algo(cfg, method, dataset_id, seed)
                try:
                    result = algo.train()
                    train_s = time.perf_counter() - start
                    module = learner_module(algo)
                    if cfg["methods"][method]["algorithm"] == "FtTPO":
                        policies = fttpo_policies(module)
                    else:
                        policies = [rllib_module_policy(module)]
                    with torch.no_grad():
                        final = evaluate_policies(
                            policies, ENV_ID, episodes=ev["episodes"], seed=ev["seed"]
                        )
                finally:
                    algo.stop()
                learner = result.get("learner", {})
                record = {
                    "method": method,
                    "seed": seed,
                    "steps": cfg["steps"],
                    "config": {"common": cfg["common"], **cfg["methods"][method]},
                    "train_s": train_s,
                    "wall_s": time.perf_counter() - start,
                    "grad_steps_per_s": float(learner.get("grad_steps_per_s", float("nan"))),
                    "command": c.command_line(),
                    "machine": c.machine(),
                    "final": {p: {k: float(v) for k, v in m.items()} for p, m in final.items()},
                }
                c.append_record(Path(args.runs_file), record)
                returns = {p: round(m["episode_return_mean"], 1) for p, m in final.items()}
                print("done", method, seed, returns, f"{record['wall_s']:.0f}s", flush=True)
    finally:
        ray.shutdown()


def cmd_report(args: argparse.Namespace) -> None:
    from fttpo_ray.data import load_transitions

    cfg = yaml.safe_load(args.config.read_text())
    dataset_id = c.ensure_cheetah_random()
    transitions = load_transitions(dataset_id)
    dataset_returns = transitions.episode_returns()
    r_random = float(dataset_returns.mean())
    records = c.read_records(RUNS_FILE)

    def score(r: float) -> float:
        return 100.0 * (r - r_random) / (D4RL_EXPERT - r_random)

    def d4rl(r: float) -> float:
        return 100.0 * (r - D4RL_RANDOM) / (D4RL_EXPERT - D4RL_RANDOM)

    ev = cfg["evaluation"]
    lines = [
        f"Hyper-parameters: `benchmarks/halfcheetah.yaml` ({cfg['steps']} gradient steps per run, "
        "a short budget on 2 shared cores; batch "
        f"{cfg['common']['train_batch_size_per_learner']}, "
        f"2x256 MLPs, gamma {cfg['common']['gamma']}); evaluation at the end of each run on "
        f"{ev['episodes']} episodes of {ENV_ID} (episode i resets with seed {ev['seed']} + i, the "
        "same for every policy; stochastic actions). Mean ± s.e. over seeds; per-run records with "
        "their commands: `halfcheetah_runs.jsonl`.\n",
        f"Dataset `{dataset_id}`: {len(dataset_returns)} episodes x 1 000 steps "
        f"({len(transitions)} transitions) of a uniform-random policy on {ENV_ID}, reset seeds "
        "0..99, made with `fttpo_ray.data.collect_dataset(env_id='HalfCheetah-v5', "
        "policy='random', episodes=100, seed=0)`; its episode returns: mean "
        f"{r_random:.1f}, s.d. {dataset_returns.std(ddof=1):.1f}, min {dataset_returns.min():.1f}, "
        f"max {dataset_returns.max():.1f}. No medium dataset: training a behaviour policy did not "
        "fit this session's compute budget.\n",
        f"Score = 100 (R − R_random) / ({D4RL_EXPERT} − R_random) with R_random = {r_random:.1f} "
        f"(the dataset's own random return); D4RL score uses D4RL's random reference "
        f"{D4RL_RANDOM}. Boundary-action rate: fraction of action coordinates at the box edge.\n",
        "| policy | seeds | return | score | D4RL score | boundary-action rate | thin half-width "
        "| steps/s (build + train wall) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for method in cfg["methods"]:
        recs = [r for r in records if r["method"] == method]
        for policy in ("thin", "fat"):
            evs = [r["final"][policy] for r in recs if policy in r["final"]]
            if not evs:
                continue
            seeds = ",".join(str(r["seed"]) for r in recs if policy in r["final"])
            ret = c.mean_se([e["episode_return_mean"] for e in evs])
            sc = c.mean_se([score(e["episode_return_mean"]) for e in evs])
            sc_d4rl = c.mean_se([d4rl(e["episode_return_mean"]) for e in evs])
            bound = float(np.mean([e["boundary_action_rate"] for e in evs]))
            hw = (
                f"{np.mean([e['support_halfwidth_mean'] for e in evs]):.3f}"
                if "support_halfwidth_mean" in evs[0]
                else "–"
            )
            rate = c.median([r["steps"] / r["train_s"] for r in recs])
            label = f"{method} ({policy})" if method == "fttpo" else method
            rows.append(
                {"policy": label, "seeds": seeds, "return": ret, "score": sc, "d4rl_score": sc_d4rl}
            )
            lines.append(
                f"| {label} | {seeds} | {c.fmt_mean_se(*ret, digits=1)} | {c.fmt_mean_se(*sc)} | "
                f"{c.fmt_mean_se(*sc_d4rl)} | {bound:.3f} | {hw} | {rate:.1f} |"
            )
    text = "\n".join(lines)
    print(text)
    c.write_results(
        "halfcheetah",
        {
            "config": cfg,
            "dataset_id": dataset_id,
            "dataset_return_mean": r_random,
            "dataset_return_sd": float(dataset_returns.std(ddof=1)),
            "d4rl_expert": D4RL_EXPERT,
            "d4rl_random": D4RL_RANDOM,
            "runs_file": str(RUNS_FILE.relative_to(c.REPO_ROOT)),
            "rows": rows,
        },
        text,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("run")
    p.add_argument("--config", type=Path, default=CONFIG_FILE)
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--runs-file", default=str(RUNS_FILE), help="JSON-lines file to append to")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report")
    p.add_argument("--config", type=Path, default=CONFIG_FILE)
    p.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
