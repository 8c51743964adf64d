"""Sweep scaling: trials per hour with 1 vs 2 concurrent Tune trials (FtTPO by name, 1 CPU per
trial, short trials), and the fixed costs of ``ray.init`` and of building an FtTPO algorithm.

Each trial is one ``train()`` of ``--steps`` gradient steps on the treatment data plus an
evaluation of ``--eval-episodes`` episodes; trials/hour = trials / experiment wall time
(including Tune's actor start-up per trial). The two concurrency settings alternate
``--repeats`` times.

With ``--nodes``: trials/hour of the same kind of sweep on a Ray cluster of 1 vs 2 nodes of
1 CPU each, made with ``ray start`` on this machine as docs/tuning.md shows (token
authentication; the worker node has no dataset: the table goes through the object store) and
run by ``fttpo sweep --address`` (one iteration per trial, one trial per seed); wall time of
the whole command, dataset collected beforehand (results: ``sweep_scaling_nodes``).

    .venv/bin/python benchmarks/sweep_scaling.py
    .venv/bin/python benchmarks/sweep_scaling.py --nodes
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import torch
import yaml

sys.path.insert(0, str(c.REPO_ROOT))

#: The CLI's closing line: "Results of '<name>' (<n> trials, <k> failed, <s> s)".
RESULTS_LINE = re.compile(r"\((\d+) trials, (\d+) failed, (\d+) s\)")


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


def node_sweep_yaml(path: Path, trials: int, steps: int, episodes: int) -> Path:
    """FtTPO, one iteration of ``steps`` gradient steps + ``episodes`` evaluation episodes, one
    trial per seed (``trials`` seeds)."""
    data = {
        "dataset": {"env": "fttpo/TreatmentSim-v0", "id": c.TREATMENT_DATASET},
        "evaluation": {"episodes": episodes},
        "runs": [
            {
                "algorithm": "FtTPO",
                "config": {"gamma": 0.9, "num_gradient_steps_per_iteration": steps},
                "name": "fttpo",
            }
        ],
        "seeds": list(range(trials)),
        "stop": {"iterations": 1},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


def run_on_cluster(cluster: Any, yaml_path: Path, tmp: Path, label: str) -> dict[str, float]:
    """Wall seconds of ``fttpo sweep --address`` on the cluster and the CLI's own sweep time."""
    import os

    start = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("fttpo")), "sweep", str(yaml_path), "--address",
         cluster.address, "--mlflow-uri", f"sqlite:///{tmp / f'mlflow-{label}.db'}",
         "--storage", str(tmp / f"results-{label}")],
        env=cluster.env(Path(os.environ["MINARI_DATASETS_PATH"])),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sweep on {label} failed:\n{done.stderr[-3000:]}")
    found = RESULTS_LINE.search(done.stdout)
    return {"wall_s": wall, "sweep_s": float(found.group(3)) if found else float("nan")}


def main_nodes(args: argparse.Namespace) -> None:
    from fttpo_ray.data import ensure_dataset
    from tests.tuning.ray_cluster import LocalCluster

    ensure_dataset(c.TREATMENT_DATASET)
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    cluster = LocalCluster()
    try:
        with tempfile.TemporaryDirectory(prefix="fttpo-node-bench-") as tmp_name:
            tmp = Path(tmp_name)
            path = node_sweep_yaml(tmp / "node_scaling.yaml", args.trials, args.steps,
                                   args.eval_episodes)  # fmt: skip
            cluster.start_head()
            for _ in range(args.repeats):
                runs[1].append(run_on_cluster(cluster, path, tmp, f"1node-{len(runs[1])}"))
                print(f"1 node: {runs[1][-1]}", flush=True)
            cluster.add_worker("worker")
            for _ in range(args.repeats):
                runs[2].append(run_on_cluster(cluster, path, tmp, f"2nodes-{len(runs[2])}"))
                print(f"2 nodes: {runs[2][-1]}", flush=True)
    finally:
        cluster.stop()
    per_hour = {k: [3600.0 * args.trials / r["wall_s"] for r in rs] for k, rs in runs.items()}
    m1, m2 = c.median(per_hour[1]), c.median(per_hour[2])
    payload = {
        "args": vars(args),
        "runs": runs,
        "trials_per_hour": per_hour,
        "trials_per_hour_median": {1: m1, 2: m2},
        "machine": c.machine(),
    }
    text = "\n".join(
        [
            f"`fttpo sweep --address` on a `ray start` cluster of 1 CPU nodes on this machine "
            f"(token authentication, the worker with an empty Minari root): FtTPO, "
            f"{args.trials} trials (one per seed), each one `train()` of {args.steps} gradient "
            f"steps on `{c.TREATMENT_DATASET}` + {args.eval_episodes} evaluation episodes; "
            f"wall time of the whole command (connect, object store, Tune, MLflow, report); "
            f"{args.repeats} repeat(s) per size, 1 node first, medians.\n",
            "| nodes (1 CPU each) | trials/hour (median) | command wall s | CLI sweep s |",
            "|---|---|---|---|",
            *(
                f"| {k} | {c.median(per_hour[k]):.0f} | "
                + ", ".join(f"{r['wall_s']:.1f}" for r in runs[k])
                + " | "
                + ", ".join(f"{r['sweep_s']:.0f}" for r in runs[k])
                + " |"
                for k in (1, 2)
            ),
            f"\nSpeed-up of 2 nodes: {m2 / m1:.2f}x (both nodes share this machine's 2 cores "
            "with the driver and other jobs).",
        ]
    )
    print(text)
    c.write_results("sweep_scaling_nodes", payload, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nodes", action="store_true", help="1 vs 2 Ray nodes (see above)")
    args = parser.parse_args()
    if args.nodes:
        main_nodes(args)
        return

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
