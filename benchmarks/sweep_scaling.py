"""Sweep scaling: trials per hour with 1 vs 2 concurrent Tune trials (FtTPO by name, 1 CPU per
trial, short trials), and the fixed costs of ``ray.init`` and of building an FtTPO algorithm.

Each trial is one ``train()`` of ``--steps`` gradient steps on the treatment data plus an
evaluation of ``--eval-episodes`` episodes; trials/hour = trials / experiment wall time
(including Tune's actor start-up per trial). The two concurrency settings alternate
``--repeats`` times.

    .venv/bin/python benchmarks/sweep_scaling.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import _common as c
import torch


def run_experiment(concurrency: int, trials: int, steps: int, episodes: int, storage: str) -> float:
    """Wall seconds of a Tune experiment of ``trials`` one-iteration FtTPO trials."""
    from ray import tune

    import fttpo_ray

    config = (
        fttpo_ray.FtTPOConfig()
        .dataset(c.TREATMENT_DATASET)
        .training(
            gamma=0.9,
            num_gradient_steps_per_iteration=steps,
            kl_weight=tune.grid_search([0.1, 0.5] * (trials // 2)),
        )
        .evaluation(evaluation_duration=episodes, evaluation_interval=1)
    )
    tuner = tune.Tuner(
        "FtTPO",
        param_space=config,
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(stop={"training_iteration": 1}, storage_path=storage, verbose=0),
    )
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} trials failed: {errors[0]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray

    import fttpo_ray
    from fttpo_ray.data import ensure_dataset

    torch.set_num_threads(1)
    ensure_dataset(c.TREATMENT_DATASET)
    init_s: list[float] = []
    build_s: list[float] = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        init_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        algo = (
            fttpo_ray.FtTPOConfig()
            .dataset(c.TREATMENT_DATASET)
            .training(gamma=0.9)
            .evaluation(evaluation_interval=None)
            .build_algo()
        )
        build_s.append(time.perf_counter() - start)
        algo.stop()
        ray.shutdown()
    print("ray.init s", init_s, "build s", build_s, flush=True)

    walls: dict[int, list[float]] = {1: [], 2: []}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="fttpo-sweep-bench-") as storage:
            for _ in range(args.repeats):
                for k in (1, 2):
                    wall = run_experiment(k, args.trials, args.steps, args.eval_episodes, storage)
                    walls[k].append(wall)
                    print(f"concurrency {k}: {args.trials} trials in {wall:.1f} s", flush=True)
    finally:
        ray.shutdown()

    per_hour = {k: [3600.0 * args.trials / w for w in ws] for k, ws in walls.items()}
    payload: dict[str, Any] = {
        "args": vars(args),
        "ray_init_s": init_s,
        "build_algo_s": build_s,
        "experiment_wall_s": walls,
        "trials_per_hour": per_hour,
        "trials_per_hour_median": {k: c.median(v) for k, v in per_hour.items()},
    }
    m1, m2 = c.median(per_hour[1]), c.median(per_hour[2])
    text = "\n".join(
        [
            f"Trials: one `train()` of {args.steps} gradient steps on `{c.TREATMENT_DATASET}` + "
            f"{args.eval_episodes} evaluation episodes; {args.trials} trials per experiment "
            f'(grid over kl_weight), `tune.Tuner("FtTPO")`, 1 CPU per trial, '
            f"`ray.init(num_cpus=2)`; {args.repeats} alternating repeats, medians.\n",
            "| concurrent trials | trials/hour (median) | experiment wall s (each repeat) |",
            "|---|---|---|",
            f"| 1 | {m1:.0f} | {', '.join(f'{w:.1f}' for w in walls[1])} |",
            f"| 2 | {m2:.0f} | {', '.join(f'{w:.1f}' for w in walls[2])} |",
            f"\nSpeed-up of 2 concurrent trials: {m2 / m1:.2f}x.\n",
            f"Fixed costs: `ray.init` {c.median(init_s):.1f} s (runs: "
            f"{', '.join(f'{x:.1f}' for x in init_s)}); `FtTPOConfig.build_algo()` "
            f"{c.median(build_s):.1f} s (runs: {', '.join(f'{x:.1f}' for x in build_s)}).",
        ]
    )
    print(text)
    c.write_results("sweep_scaling", payload, text)


if __name__ == "__main__":
    main()
