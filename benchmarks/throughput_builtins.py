"""Gradient steps per second of RLlib's BC, MARWIL, IQL and CQL: in memory vs. Ray Data, RLlib's
own IQL/CQL module and learner vs. the lean ones, with FtTPO in the same run, on the treatment
dataset and a HalfCheetah stand-in.

Each (dataset, algorithm, path) builds the algorithm (local learner, no env runners, batch 256,
2x256 ReLU MLPs, the algorithm's defaults otherwise), runs one warm-up ``train()`` and times a
second one of ``steps`` gradient steps (``dataset_num_iters_per_learner``). In memory:
:func:`fttpo_ray.algorithms.baselines.builtin_offline.configure_builtin_offline`; Ray Data:
:func:`fttpo_ray.data.configure_rllib_offline` (the settings RLlib needs on 2 CPUs); both with
RLlib's own module and learner. "in memory, lean": IQL and CQL with
:func:`~fttpo_ray.algorithms.baselines.builtin_offline.use_lean_learner` (the default of
``configure_builtin_offline``). FtTPO uses its own in-memory path (eager, as its default). The
machine is shared: compare rows of one run only::

    .venv/bin/python benchmarks/throughput_builtins.py --standins DIR
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as c
import torch

CHEETAH = "fttpo/halfcheetah/medium-sac-v0"
ALGORITHMS = ("FtTPO", "BC", "MARWIL", "IQL", "CQL")
IN_MEMORY = "in memory"
LEAN = "in memory, lean"
RAY_DATA = "Ray Data"
#: Algorithms with a lean module and learner (fttpo_ray.algorithms.lean_*).
HAS_LEAN = ("IQL", "CQL")


def build(algorithm: str, dataset_id: str, path: str, steps: int) -> Any:
    if algorithm == "FtTPO":
        import fttpo_ray

        config = (
            fttpo_ray.FtTPOConfig()
            .dataset(dataset_id)
            .training(num_gradient_steps_per_iteration=steps, train_batch_size_per_learner=256)
            .evaluation(evaluation_interval=None)
        )
        return config.debugging(seed=0).build_algo()
    from ray.tune.registry import get_trainable_cls

    from fttpo_ray.algorithms.baselines.builtin_offline import configure_builtin_offline

    config = (
        get_trainable_cls(algorithm)
        .get_default_config()
        .training(train_batch_size_per_learner=256)
        .rl_module(model_config={"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"})
        .learners(num_learners=0)
        .env_runners(num_env_runners=0)
    )
    if algorithm == "CQL":
        config.training(lr=None)
    if algorithm == "IQL":
        config.training(beta=0.61)
    configure_builtin_offline(
        config,
        dataset_id,
        in_memory=path != RAY_DATA,
        lean=path == LEAN,
        dataset_num_iters_per_learner=steps,
    )
    return config.debugging(seed=0).build_algo()


def measure(algorithm: str, dataset_id: str, path: str, steps: int) -> dict[str, Any]:
    start = time.perf_counter()
    algo = build(algorithm, dataset_id, path, steps)
    try:
        build_s = time.perf_counter() - start
        algo.train()
        t0 = time.perf_counter()
        algo.train()
        seconds = time.perf_counter() - t0
    finally:
        algo.stop()
    return {
        "algorithm": algorithm,
        "dataset": dataset_id,
        "path": path,
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "build_s": build_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standins", type=Path, help="Minari root holding the stand-ins")
    parser.add_argument(
        "--steps",
        type=int,
        default=500,
        help="timed steps in memory (FtTPO's train() also scores its held-out episodes once, "
        "about 40 steps' worth of work: use hundreds of steps)",
    )
    parser.add_argument("--ray-data-steps", type=int, default=5, help="timed steps, Ray Data")
    parser.add_argument("--cql-steps", type=int, default=30, help="timed CQL steps (every path)")
    args = parser.parse_args()
    import ray

    import fttpo_ray  # noqa: F401
    from fttpo_ray.data import ensure_dataset

    torch.set_num_threads(1)
    if args.standins is not None:
        from halfcheetah import link_standins

        link_standins(args.standins, [CHEETAH])
    datasets = [c.TREATMENT_DATASET, CHEETAH]
    for dataset_id in datasets:
        ensure_dataset(dataset_id)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for dataset_id in datasets:
            for algorithm in ALGORITHMS:
                paths = [IN_MEMORY] if algorithm == "FtTPO" else [IN_MEMORY, RAY_DATA]
                if algorithm in HAS_LEAN:
                    paths.append(LEAN)
                for path in paths:
                    steps = args.ray_data_steps if path == RAY_DATA else args.steps
                    if algorithm == "CQL":
                        steps = args.cql_steps
                    row = measure(algorithm, dataset_id, path, steps)
                    rows.append(row)
                    print(
                        f"{dataset_id} {algorithm} {path}: {row['steps_per_s']:.2f} steps/s",
                        flush=True,
                    )
    finally:
        ray.shutdown()
    lines = [
        "Gradient steps per second (batch 256, 2x256 MLPs, local learner, 1 torch thread), "
        "timed on the second `train()` after a warm-up one; FtTPO measured in the same run. "
        "*in memory* and *Ray Data*: RLlib's own module and learner; *lean*: IQL and CQL with "
        "`use_lean_learner` (the default in memory). Last column: the fastest in-memory rate "
        "over FtTPO's on the same dataset.\n",
        "| dataset | algorithm | Ray Data | in memory | in memory / Ray Data | lean | "
        "best in memory / FtTPO |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset_id in datasets:
        by = {
            (r["algorithm"], r["path"]): r["steps_per_s"]
            for r in rows
            if r["dataset"] == dataset_id
        }
        fttpo = by[("FtTPO", IN_MEMORY)]
        for algorithm in ALGORITHMS:
            mem = by[(algorithm, IN_MEMORY)]
            ray_data = by.get((algorithm, RAY_DATA))
            lean = by.get((algorithm, LEAN))
            speedup = f"{mem / ray_data:.1f}x" if ray_data else "–"
            ray_text = f"{ray_data:.2f}" if ray_data else "–"
            lean_text = f"{lean:.2f}" if lean else "–"
            best = max(mem, lean or 0.0)
            lines.append(
                f"| `{dataset_id}` | {algorithm} | {ray_text} | {mem:.2f} | {speedup} | "
                f"{lean_text} | {best / fttpo:.2f} |"
            )
    text = "\n".join(lines)
    print(text)
    c.write_results("throughput_builtins", {"rows": rows}, text)


if __name__ == "__main__":
    main()
