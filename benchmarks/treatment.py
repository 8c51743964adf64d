"""Quality and safety on the treatment simulator (docs/algorithm.md §4–§5): train FtTPO, its
baselines and RLlib's IQL and CQL, and append one record per run.

``run`` trains the given methods for the given seeds on one environment and appends one JSON
record per (method, seed) to ``benchmarks/results/treatment_runs.jsonl``. Every method is
evaluated every ``evaluation.every`` gradient steps on ``evaluation.episodes`` episodes and, at
the end, on ``evaluation.final_episodes`` episodes; episode ``i`` resets with
``evaluation.seed + i`` for every policy (common random numbers). ``treatment_report.py`` turns
the records into ``benchmarks/results/treatment.{json,md}``.

Every hyper-parameter (per method), the number of steps and the evaluation protocol come from
``benchmarks/treatment.yaml`` (``--config``). The commands behind the committed results are in
``benchmarks/README.md`` and in each record of the runs file; for example::

    .venv/bin/python benchmarks/treatment.py run --env normal --methods fttpo iql --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import _common as c
import torch
import yaml

ENVS = {
    "normal": ("fttpo/TreatmentSim-v0", c.TREATMENT_DATASET),
    "lethal": ("fttpo/TreatmentSimLethal-v0", c.LETHAL_DATASET),
}
CONFIG_FILE = Path(__file__).resolve().with_name("treatment.yaml")
CONFIG_KEYS = {"common", "evaluation", "methods", "steps"}
ALGORITHMS = ("FtTPO", "IQL", "CQL")
RUNS_FILE = c.RESULTS_DIR / "treatment_runs.jsonl"


def load_config(path: Path = CONFIG_FILE) -> dict[str, Any]:
    """The benchmark YAML, checked: top-level keys, and each method's ``algorithm``."""
    cfg = yaml.safe_load(Path(path).read_text())
    if set(cfg) != CONFIG_KEYS:
        raise ValueError(
            f"{path}: expected top-level keys {sorted(CONFIG_KEYS)}; got {sorted(cfg)}"
        )
    for name, method in cfg["methods"].items():
        keys_ok = (
            {"algorithm", "training"} <= set(method) <= {"algorithm", "training", "offline_data"}
        )
        if not keys_ok or method["algorithm"] not in ALGORITHMS:
            raise ValueError(
                f"{path}: method {name!r} needs `algorithm` (one of {ALGORITHMS}) and `training`, "
                f"optionally `offline_data` (RLlib built-ins); got {method}"
            )
    return cfg


def fttpo_config(
    cfg: dict[str, Any], method: str, env_key: str, seed: int, steps_per_iteration: int
) -> Any:
    """``FtTPOConfig`` of an FtTPO-family method; evaluation off (``evaluate_policies`` is
    called directly) unless the caller turns it on."""
    import fttpo_ray

    return (
        fttpo_ray.FtTPOConfig()
        .dataset(ENVS[env_key][1])
        .training(
            num_gradient_steps_per_iteration=steps_per_iteration,
            **cfg["common"],
            **cfg["methods"][method]["training"],
        )
        .evaluation(evaluation_interval=None)
        .debugging(seed=seed)
    )


def _summary(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def build_algo(cfg: dict[str, Any], method: str, env_key: str, seed: int) -> Any:
    """One ``train()`` = ``evaluation.every`` gradient steps + an evaluation on
    ``evaluation.episodes`` episodes (RLlib built-ins through ``configure_evaluation``)."""
    from fttpo_ray.algorithms.rllib_evaluation import configure_evaluation
    from fttpo_ray.data.parquet import configure_rllib_offline

    ev = cfg["evaluation"]
    algorithm = cfg["methods"][method]["algorithm"]
    dataset_id = ENVS[env_key][1]
    if algorithm == "FtTPO":
        config = fttpo_config(cfg, method, env_key, seed, ev["every"]).evaluation(
            evaluation_interval=1, evaluation_duration=ev["episodes"], evaluation_seed=ev["seed"]
        )
        return config.build_algo()
    if algorithm == "IQL":
        from ray.rllib.algorithms.iql import IQLConfig as Config
    else:
        from ray.rllib.algorithms.cql import CQLConfig as Config
    config = Config().training(**cfg["common"], **cfg["methods"][method]["training"])
    configure_rllib_offline(
        config,
        dataset_id,
        dataset_num_iters_per_learner=ev["every"],
        **cfg["methods"][method].get("offline_data", {}),
    )
    config.learners(num_learners=0).env_runners(num_env_runners=0).debugging(seed=seed)
    configure_evaluation(
        config, episodes=ev["episodes"], seed=ev["seed"], interval=1, dataset_id=dataset_id
    )
    return config.build_algo()


def final_policies(algo: Any, algorithm: str, *, selected: bool = False) -> list[Any]:
    """The acting policies of the learner's module; with ``selected``, of a copy holding the
    weights of the iteration FtTPO selected on its held-out episodes."""
    import copy

    from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
    from fttpo_ray.algorithms.learner_module import learner_module
    from fttpo_ray.algorithms.rllib_evaluation import rllib_module_policy

    module = learner_module(algo)
    if selected:
        module = copy.deepcopy(module)
        module.set_state(algo.selected_module_state())
    if algorithm == "FtTPO":
        return fttpo_policies(module)
    return [rllib_module_policy(module)]


def run_one(
    cfg: dict[str, Any], method: str, env_key: str, seed: int, deadline: float | None = None
) -> dict[str, Any]:
    """Train, evaluating every ``evaluation.every`` steps; then the final evaluation.

    With a ``deadline`` (``time.time()`` value) training stops at the first evaluation after
    it; the final evaluation still runs, and the record's ``steps`` are those trained."""
    from fttpo_ray.evaluation import evaluate_policies

    ev = cfg["evaluation"]
    algo = build_algo(cfg, method, env_key, seed)
    try:
        curve = []
        for it in range(cfg["steps"] // ev["every"]):
            if deadline is not None and it > 0 and time.time() > deadline:
                break
            result = algo.train()
            point = {
                "steps": (it + 1) * ev["every"],
                **{
                    p: _summary(result["evaluation"][p])
                    for p in ("thin", "fat")
                    if p in result["evaluation"]
                },
                **{k: _summary(result[k]) for k in ("selection", "selected") if k in result},
            }
            curve.append(point)
            returns = {
                p: round(point[p]["episode_return_mean"], 3) for p in ("thin", "fat") if p in point
            }
            print(method, env_key, seed, point["steps"], returns, flush=True)
            # The whole point, one JSON line: a run stopped early still leaves its curve.
            print("curve_point", json.dumps({"method": method, "seed": seed, **point}), flush=True)
        algorithm = cfg["methods"][method]["algorithm"]
        final = evaluate_policies(
            final_policies(algo, algorithm),
            ENVS[env_key][0],
            episodes=ev["final_episodes"],
            seed=ev["seed"],
        )
        out = {
            "steps": curve[-1]["steps"],
            "curve": curve,
            "final": {p: _summary(v) for p, v in final.items()},
        }
        if algorithm == "FtTPO" and algo.selected_module_state() is not None:
            selected = evaluate_policies(
                final_policies(algo, algorithm, selected=True),
                ENVS[env_key][0],
                episodes=ev["final_episodes"],
                seed=ev["seed"],
            )
            out["selected"] = {p: _summary(v) for p, v in selected.items()}
            out["selected_steps"] = algo.selected_iteration() * ev["every"]
    finally:
        algo.stop()
    return out


def cmd_run(args: argparse.Namespace) -> None:
    import ray

    import fttpo_ray  # noqa: F401  (registers the envs)
    from fttpo_ray.data import ensure_dataset

    cfg = load_config(args.config)
    if args.every is not None:
        cfg["evaluation"]["every"] = args.every
    if args.steps is not None:
        if args.steps < cfg["evaluation"]["every"] or args.steps % cfg["evaluation"]["every"]:
            raise SystemExit(
                f"--steps must be a positive multiple of evaluation.every "
                f"({cfg['evaluation']['every']}); got {args.steps}"
            )
        cfg["steps"] = args.steps
    unknown = sorted(set(args.methods) - set(cfg["methods"]))
    if unknown:
        raise SystemExit(
            f"unknown methods {unknown}; {args.config} defines {sorted(cfg['methods'])}"
        )
    torch.set_num_threads(1)
    ensure_dataset(ENVS[args.env][1])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for method in args.methods:
            for seed in args.seeds:
                start = time.perf_counter()
                deadline = None
                if args.deadline:
                    deadline = datetime.datetime.fromisoformat(args.deadline).timestamp()
                out = run_one(cfg, method, args.env, seed, deadline)
                record = {
                    "method": method,
                    "env": args.env,
                    "seed": seed,
                    "planned_steps": cfg["steps"],
                    "evaluation": cfg["evaluation"],
                    "config": {"common": cfg["common"], **cfg["methods"][method]},
                    "wall_s": time.perf_counter() - start,
                    "command": c.command_line(),
                    "machine": c.machine(),
                    **out,
                }
                c.append_record(Path(args.runs_file), record)
                print("done", method, args.env, seed, f"{record['wall_s']:.0f}s", flush=True)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("run")
    p.add_argument("--config", type=Path, default=CONFIG_FILE)
    p.add_argument("--env", choices=tuple(ENVS), required=True)
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--runs-file", default=str(RUNS_FILE), help="JSON-lines file to append to")
    p.add_argument("--steps", type=int, help="gradient steps per run (default: the config's)")
    p.add_argument(
        "--every", type=int, help="gradient steps per iteration and evaluation (default: config)"
    )
    p.add_argument(
        "--deadline",
        help="ISO time (e.g. 2026-12-02T15:38+00:00): stop training at the first evaluation "
        "after it, evaluate and record the steps trained",
    )
    p.set_defaults(func=cmd_run)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
