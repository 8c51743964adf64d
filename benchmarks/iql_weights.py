"""Why IQL stays below BC on the HalfCheetah medium-expert stand-ins: its advantage weights.

IQL's policy maximises ``E[min(exp(beta (Q(s, a) - V(s))), 100) log pi(a | s)]`` over logged
pairs; with ``beta -> 0`` it is behaviour cloning through the same policy class. This script
trains the benchmark's IQL (``benchmarks/halfcheetah.yaml``: lean IQL, the paper's networks and
policy) at each ``--betas`` value and, every ``--every`` gradient steps, records on a fixed
sample of ``--rows`` logged pairs (drawn once with ``--sample-seed``):

- the advantages ``A = Q_target(s, a) - V(s)`` (mean, s.d., 5/50/95 % quantiles) and the mean
  target Q;
- the weights ``min(exp(beta A), 100)``: the share clipped at 100 and the effective sample size
  ``(sum w)^2 / sum w^2`` per batch of 256 rows (256 = uniform weights);
- the policy's standard deviation (median);
- the deterministic return (the policy's mean action) on the benchmark's evaluation episodes.

It is a diagnosis, not a tuning: nothing here selects the benchmark's ``beta`` (the benchmark
keeps the paper's rule). One record per evaluation point is appended to
``results/iql_weights_runs.jsonl`` (finished points of a stopped run are kept)::

    .venv/bin/python benchmarks/iql_weights.py run --standins DIR --betas 0.61 --steps 30000
    .venv/bin/python benchmarks/iql_weights.py report
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as c
import halfcheetah as hc
import numpy as np
import torch
import yaml

RUNS_FILE = c.RESULTS_DIR / "iql_weights_runs.jsonl"
DATASET_KEY = "medium_expert"
METHOD = "iql"
#: RLlib's clip of IQL's exponentiated advantages.
WEIGHT_CLIP = 100.0
BATCH = 256


def weight_statistics(module: Any, obs: torch.Tensor, actions: torch.Tensor, beta: float) -> dict:
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.models.base import ENCODER_OUT
    from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT

    with torch.no_grad():
        q = module.forward_target({Columns.OBS: obs, Columns.ACTIONS: actions}).reshape(-1)
        v = module.compute_values({Columns.OBS: obs}).reshape(-1)
        advantages = q - v
        weights = torch.clamp(torch.exp(beta * advantages), max=WEIGHT_CLIP)
        per_batch = weights[: len(weights) // BATCH * BATCH].reshape(-1, BATCH)
        ess = per_batch.sum(dim=1) ** 2 / (per_batch**2).sum(dim=1)
        logits = module.pi(module.pi_encoder({Columns.OBS: obs})[ENCODER_OUT])
        std = torch.clamp(logits.chunk(2, dim=-1)[1], MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT).exp()
        quantiles = torch.quantile(advantages, torch.tensor([0.05, 0.5, 0.95]))
    return {
        "q_mean": float(q.mean()),
        "advantage_mean": float(advantages.mean()),
        "advantage_sd": float(advantages.std()),
        "advantage_quantiles": [float(x) for x in quantiles],
        "clipped_share": float((weights >= WEIGHT_CLIP).float().mean()),
        "ess_per_256": float(ess.mean()),
        "policy_std_median": float(std.median()),
    }


def cmd_run(args: argparse.Namespace) -> None:
    import ray

    import fttpo_ray  # noqa: F401
    from fttpo_ray.algorithms.learner_module import learner_module
    from fttpo_ray.data import load_transitions, resolve_dataset
    from fttpo_ray.data.references import dataset_references
    from fttpo_ray.evaluation import evaluate_policies

    torch.set_num_threads(1)
    cfg = yaml.safe_load(hc.CONFIG_FILE.read_text())
    parts = hc.dataset_parts(cfg, DATASET_KEY)
    if args.standins is not None:
        hc.link_standins(args.standins, parts)
    dataset_id = resolve_dataset(parts)
    data = load_transitions(dataset_id)
    references = dataset_references(dataset_id)
    rows = np.random.default_rng(args.sample_seed).choice(len(data), args.rows, replace=False)
    obs = torch.as_tensor(data.obs[rows])
    actions = torch.as_tensor(data.actions[rows])
    ev = cfg["evaluation"]
    cfg["eval_every"] = args.every
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for beta in args.betas:
            cfg["methods"][METHOD]["beta_by_dataset"][DATASET_KEY] = beta
            algo = hc.build_algo(cfg, METHOD, DATASET_KEY, dataset_id, args.seed)
            train_s = 0.0
            try:
                for iteration in range(1, args.steps // args.every + 1):
                    t0 = time.perf_counter()
                    algo.train()
                    train_s += time.perf_counter() - t0
                    module = learner_module(algo)
                    policies = hc.policies_of(algo, cfg["methods"][METHOD]["algorithm"])
                    with torch.no_grad():
                        greedy = evaluate_policies(
                            policies, data.env_id, episodes=ev["episodes"], seed=ev["seed"],
                            explore=False,
                        )  # fmt: skip
                    returns = next(iter(greedy.values()))
                    record = {
                        "beta": beta,
                        "seed": args.seed,
                        "steps": iteration * args.every,
                        "train_s": train_s,
                        **weight_statistics(module, obs, actions, beta),
                        "deterministic_return": returns["episode_return_mean"],
                        "deterministic_return_sem": returns["episode_return_sem"],
                        "deterministic_score": references.normalize(returns["episode_return_mean"]),
                        "deterministic_score_sem": references.normalize(
                            returns["episode_return_mean"] + returns["episode_return_sem"]
                        )
                        - references.normalize(returns["episode_return_mean"]),
                        "rows": args.rows,
                        "evaluation": ev,
                        "command": c.portable(c.command_line()),
                        "machine": c.machine(),
                    }
                    c.append_record(RUNS_FILE, record)
                    print(
                        f"beta {beta} {record['steps']} steps: ESS {record['ess_per_256']:.0f}"
                        f"/256, clipped {record['clipped_share']:.3f}, deterministic score "
                        f"{record['deterministic_score']:.1f}",
                        flush=True,
                    )
            finally:
                algo.stop()
    finally:
        ray.shutdown()


def cmd_report(args: argparse.Namespace) -> None:
    records = sorted(c.read_records(RUNS_FILE), key=lambda r: (-r["beta"], r["seed"], r["steps"]))
    lines = [
        "IQL (`benchmarks/halfcheetah.yaml`, lean IQL) on the HalfCheetah medium-expert stand-in "
        "mixture. Advantages `A = Q_target(s, a) - V(s)` and weights `min(exp(beta A), 100)` on "
        f"a fixed sample of {records[0]['rows'] if records else '?'} logged pairs; ESS: effective "
        "sample size per batch of 256 (256 = uniform weights, plain behaviour cloning); "
        "deterministic score: normalised return of the policy's mean action on the benchmark's "
        f"{records[0]['evaluation']['episodes'] if records else '?'} evaluation episodes "
        "(± s.e. over episodes). A diagnosis: nothing here tunes the benchmark.\n",
        "| beta | seed | steps | mean target Q | A s.d. | A 5/50/95 % | clipped | ESS / 256 | "
        "policy s.d. (median) | deterministic score |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        quantiles = "/".join(f"{x:.1f}" for x in r["advantage_quantiles"])
        lines.append(
            f"| {r['beta']} | {r['seed']} | {r['steps']} | {r['q_mean']:.0f} | "
            f"{r['advantage_sd']:.2f} | {quantiles} | {r['clipped_share']:.3f} | "
            f"{r['ess_per_256']:.0f} | {r['policy_std_median']:.3f} | "
            f"{r['deterministic_score']:.1f} ± {r['deterministic_score_sem']:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    c.write_results("iql_weights", {"runs_file": "benchmarks/results/iql_weights_runs.jsonl",
                                    "rows": records}, text)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("run")
    p.add_argument("--standins", type=Path, help="Minari root holding the stand-in datasets")
    p.add_argument("--betas", nargs="+", type=float, default=[0.61])
    p.add_argument("--steps", type=int, default=30000)
    p.add_argument("--every", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--sample-seed", type=int, default=0)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
