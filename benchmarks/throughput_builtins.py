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
machine is shared: compare rows of one run only.

Then, per dataset, lean CQL against FtTPO eager and with ``compile_update``, interleaved
(``--paired-rounds`` rounds after a first ``train()`` each): the median of the per-round ratios
of CQL's steps/s to FtTPO's, each one's FLOPs per gradient step (``FlopCounterMode``) and FLOP
rate over a 256x256 matmul's in the same run, and the ratio CQL would reach at the matmul's
rate (its ceiling without less arithmetic)::

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
FTTPO_COMPILED = "FtTPO compiled"


def build(algorithm: str, dataset_id: str, path: str, steps: int, **fttpo_training: Any) -> Any:
    if algorithm == "FtTPO":
        import fttpo_ray

        config = (
            fttpo_ray.FtTPOConfig()
            .dataset(dataset_id)
            .training(
                num_gradient_steps_per_iteration=steps,
                train_batch_size_per_learner=256,
                **fttpo_training,
            )
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


def flops_per_step(algorithm: str, dataset_id: str, steps: int) -> float:
    """FLOPs of one gradient step: FtTPO's plain step (``_common.PlainLoop``, the learner's step
    minus RLlib), CQL's lean learner over one ``train()`` of ``steps`` steps."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if algorithm == "FtTPO":
        import fttpo_ray
        from fttpo_ray.data import dataset_spaces

        loop = c.PlainLoop(fttpo_ray.FtTPOConfig(), *dataset_spaces(dataset_id))
        batch = c.BatchSampler(dataset_id)()
        with counter:
            loop.step(batch)
        return float(counter.get_total_flops())
    algo = build(algorithm, dataset_id, LEAN, steps)
    try:
        with counter:
            algo.train()
    finally:
        algo.stop()
    return counter.get_total_flops() / steps


def paired(dataset_id: str, steps: int, cql_steps: int, rounds: int) -> dict[str, Any]:
    """Lean CQL vs FtTPO (eager, ``compile_update``) interleaved; see the module docstring."""
    from throughput import matmul_rate

    algos = {"FtTPO": build("FtTPO", dataset_id, IN_MEMORY, steps)}
    algos[FTTPO_COMPILED] = build("FtTPO", dataset_id, IN_MEMORY, steps, compile_update=True)
    algos["CQL"] = build("CQL", dataset_id, LEAN, cql_steps)
    samples: dict[str, list[float]] = {k: [] for k in algos}
    try:
        for algo in algos.values():
            algo.train()
        for _ in range(rounds):
            for name, algo in algos.items():
                n = algo.config.num_gradient_steps_per_iteration if name != "CQL" else cql_steps
                start = time.perf_counter()
                algo.train()
                samples[name].append(n / (time.perf_counter() - start))
    finally:
        for algo in algos.values():
            algo.stop()
    mm = matmul_rate("cpu", seconds=1.0)
    flops = {
        "FtTPO": flops_per_step("FtTPO", dataset_id, steps),
        "CQL": flops_per_step("CQL", dataset_id, cql_steps),
    }
    flops[FTTPO_COMPILED] = flops["FtTPO"]
    medians = {k: c.median(v) for k, v in samples.items()}
    return {
        "dataset": dataset_id,
        "samples": samples,
        "steps_per_s": medians,
        "cql_over": {
            k: c.median([x / y for x, y in zip(samples["CQL"], samples[k], strict=True)])
            for k in ("FtTPO", FTTPO_COMPILED)
        },
        "flops_per_step": flops,
        "matmul_flops_per_s": mm,
        "flop_rate_over_matmul": {k: flops[k] * v / mm for k, v in medians.items()},
        "cql_ceiling_over": {
            k: (mm / flops["CQL"]) / medians[k] for k in ("FtTPO", FTTPO_COMPILED)
        },
    }


def paired_markdown(results: list[dict[str, Any]], rounds: int) -> str:
    lines = [
        f"\n\nLean CQL against FtTPO, interleaved ({rounds} rounds after a first `train()` each; "
        "FtTPO compiled: `compile_update`, its compilation in the first call): steps/s "
        "(medians), CQL / FtTPO as the median of per-round ratios, FLOPs per gradient step, "
        "FLOP rate over the 256x256 matmul's of the same run, and the ratio CQL would reach at "
        "the matmul's full rate.\n",
        "| dataset | FtTPO | FtTPO compiled | CQL | CQL / FtTPO | CQL / FtTPO compiled | "
        "GFLOP per step (FtTPO, CQL) | FLOP rate / matmul (FtTPO, compiled, CQL) | "
        "CQL ceiling / FtTPO (eager, compiled) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, f, rate = r["steps_per_s"], r["flops_per_step"], r["flop_rate_over_matmul"]
        lines.append(
            f"| `{r['dataset']}` | {s['FtTPO']:.1f} | {s[FTTPO_COMPILED]:.1f} | {s['CQL']:.2f} | "
            f"{r['cql_over']['FtTPO']:.3f} | {r['cql_over'][FTTPO_COMPILED]:.3f} | "
            f"{f['FtTPO'] / 1e9:.3f}, {f['CQL'] / 1e9:.2f} | {rate['FtTPO']:.2f}, "
            f"{rate[FTTPO_COMPILED]:.2f}, {rate['CQL']:.2f} | "
            f"{r['cql_ceiling_over']['FtTPO']:.2f}, {r['cql_ceiling_over'][FTTPO_COMPILED]:.2f} |"
        )
    return "\n".join(lines)


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
    parser.add_argument("--paired-rounds", type=int, default=3, help="0: no CQL/FtTPO pairing")
    parser.add_argument("--paired-only", action="store_true", help="only the CQL/FtTPO pairing")
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
    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    try:
        for dataset_id in datasets if not args.paired_only else []:
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
        for dataset_id in datasets if args.paired_rounds else []:
            pairs.append(paired(dataset_id, args.steps, args.cql_steps, args.paired_rounds))
            print(pairs[-1]["cql_over"], flush=True)
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
    for dataset_id in datasets if rows else []:
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
    text = "\n".join(lines) if rows else ""
    if pairs:
        text += paired_markdown(pairs, args.paired_rounds)
    print(text)
    name = "throughput_builtins" if rows else "throughput_cql_pairing"
    c.write_results(name, {"rows": rows, "paired": pairs}, text)


if __name__ == "__main__":
    main()
