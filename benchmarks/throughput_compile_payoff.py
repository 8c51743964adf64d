"""Does ``compile_update`` pay for itself within the quick start's 1 000 gradient steps?

One process, one torch thread, the treatment shape (batch 256, 2x256 MLPs, variant ``fttpo``):
``FtTPO.train()`` eager and with ``compile_update``, interleaved (one first call each, then
``--rounds`` rounds of ``--steps`` steps per contender; medians of the learner's own
``learner/grad_steps_per_s`` and of the whole call's steps/s). The compile time is the compiled
algorithm's first ``train()`` minus its steps at the compiled rate. Run it twice on one
``TORCHINDUCTOR_CACHE_DIR``: the first run (a fresh folder) times a cold compilation, the second,
with other ``--fat-q``/``--thin-q``/``--kl-weight``, a warm one (inductor's on-disk caches hold
the graph, which reads q and tau as tensors)::

    export TORCHINDUCTOR_CACHE_DIR="$(mktemp -d)"
    .venv/bin/python benchmarks/throughput_compile_payoff.py \
        --results-name throughput_compile_cold
    .venv/bin/python benchmarks/throughput_compile_payoff.py \
        --fat-q 1.5 --thin-q -1 --kl-weight 1 --results-name throughput_compile_warm

Also: dynamo's graph count, the 256x256 matmul FLOP rate of the same run, and the share of a
gradient step spent in the (eager) fused Adam steps and the polyak update.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import _common as c
import torch
from throughput import build_algo, matmul_rate
from torch.utils.flop_counter import FlopCounterMode

QUICK_START_STEPS = 1000


def first_and_rounds(algos: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Each algorithm's first ``train()`` (seconds), then ``rounds`` interleaved rounds."""
    steps = next(iter(algos.values())).config.num_gradient_steps_per_iteration
    out: dict[str, Any] = {"first_s": {}, "learner": {}, "wall": {}}
    for name, algo in algos.items():
        start = time.perf_counter()
        algo.train()
        out["first_s"][name] = time.perf_counter() - start
        out["learner"][name], out["wall"][name] = [], []
    for _ in range(rounds):
        for name, algo in algos.items():
            start = time.perf_counter()
            result = algo.train()
            out["wall"][name].append(steps / (time.perf_counter() - start))
            out["learner"][name].append(float(result["learner"]["grad_steps_per_s"]))
    return out


def optimizer_share(algo: Any, repeats: int = 200) -> float:
    """Seconds per gradient step of the learner's fused Adam steps and polyak update."""
    from fttpo_ray.algorithms.fttpo.torch.fttpo_torch_learner import polyak_update

    learner = algo.learner_group._learner
    module_id, module = next(iter(learner.module.items()))
    module = module.unwrapped()
    optimizers = [opt for _, opt in learner.get_optimizers_for_module(module_id)]
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p) * 1e-3
    start = time.perf_counter()
    for _ in range(repeats):
        for opt in optimizers:
            opt.step()
        polyak_update(module, 0.005)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250, help="gradient steps per train()")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fat-q", type=float, default=2.0)
    parser.add_argument("--thin-q", type=float, default=0.0)
    parser.add_argument("--kl-weight", type=float, default=0.1)
    parser.add_argument("--results-name", default="throughput_compile_payoff")
    args = parser.parse_args()
    import ray
    from torch._dynamo.utils import counters

    from fttpo_ray.data import ensure_dataset

    torch.set_num_threads(1)
    ensure_dataset(c.TREATMENT_DATASET)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    load_start = os.getloadavg()[0]
    training = {"fat_q": args.fat_q, "thin_q": args.thin_q, "kl_weight": args.kl_weight}
    algos = {
        "eager": build_algo(c.TREATMENT_DATASET, args.steps, "cpu", **training),
        "compiled": build_algo(
            c.TREATMENT_DATASET, args.steps, "cpu", compile_update=True, **training
        ),
    }
    try:
        mm = matmul_rate("cpu", seconds=1.0)
        out = first_and_rounds(algos, args.rounds)
        optimizer_s = optimizer_share(algos["eager"])
        sampler = c.BatchSampler(c.TREATMENT_DATASET)
        loop = c.PlainLoop(algos["eager"].config, *_spaces())
        counter = FlopCounterMode(display=False)
        with counter:
            loop.step(sampler())
        flops = int(counter.get_total_flops())
    finally:
        for algo in algos.values():
            algo.stop()
        ray.shutdown()
    learner = {k: c.median(v) for k, v in out["learner"].items()}
    wall = {k: c.median(v) for k, v in out["wall"].items()}
    compile_s = out["first_s"]["compiled"] - args.steps / wall["compiled"]
    per_step = {k: 1.0 / v for k, v in wall.items()}
    saved = per_step["eager"] - per_step["compiled"]
    results = {
        "args": vars(args),
        "inductor_cache_dir": c.portable(os.environ.get(c.INDUCTOR_CACHE_VARIABLE, "")),
        "loadavg_1min": [load_start, os.getloadavg()[0]],
        **out,
        "learner_median": learner,
        "wall_median": wall,
        "paired_learner_ratio": c.median(
            [
                x / y
                for x, y in zip(out["learner"]["compiled"], out["learner"]["eager"], strict=True)
            ]
        ),
        "compile_s": compile_s,
        "break_even_steps": compile_s / saved if saved > 0 else float("inf"),
        "quick_start_s": {
            "eager": QUICK_START_STEPS * per_step["eager"],
            "compiled": compile_s + QUICK_START_STEPS * per_step["compiled"],
        },
        "dynamo_unique_graphs": counters["stats"]["unique_graphs"],
        "optimizer_and_polyak_s_per_step": optimizer_s,
        "matmul_flops_per_s": mm,
        "flops_per_update": flops,
        "flop_rate_over_matmul": {k: flops * v / mm for k, v in learner.items()},
    }
    text = markdown(results)
    print(text)
    c.write_results(args.results_name, results, text)


def _spaces() -> tuple[Any, Any]:
    from fttpo_ray.data import dataset_spaces

    return dataset_spaces(c.TREATMENT_DATASET)


def markdown(r: dict[str, Any]) -> str:
    a = r["args"]
    lines = [
        f"`FtTPO.train()` on the treatment data (variant `fttpo`, batch 256, 2x256 MLPs, one "
        f"torch thread; fat_q {a['fat_q']}, thin_q {a['thin_q']}, kl_weight {a['kl_weight']}), "
        f"eager and with `compile_update`, interleaved: a first call each, then {a['rounds']} "
        f"rounds of {a['steps']} steps; medians. Inductor cache folder: "
        f"`{r['inductor_cache_dir'] or '(default)'}`; load {r['loadavg_1min'][0]:.1f} → "
        f"{r['loadavg_1min'][1]:.1f}.\n",
        "| | eager | compiled |",
        "|---|---|---|",
        f"| learner steps/s | {r['learner_median']['eager']:.1f} | "
        f"{r['learner_median']['compiled']:.1f} |",
        f"| train() steps/s | {r['wall_median']['eager']:.1f} | "
        f"{r['wall_median']['compiled']:.1f} |",
        f"| FLOP rate / matmul ({r['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s) | "
        f"{r['flop_rate_over_matmul']['eager']:.2f} | "
        f"{r['flop_rate_over_matmul']['compiled']:.2f} |",
        f"| first train() s | {r['first_s']['eager']:.1f} | {r['first_s']['compiled']:.1f} |",
        f"| {QUICK_START_STEPS} steps, s (compiled: + compile time) | "
        f"{r['quick_start_s']['eager']:.1f} | {r['quick_start_s']['compiled']:.1f} |",
        "",
        f"Compiled / eager learner steps/s, median of paired rounds: "
        f"{r['paired_learner_ratio']:.2f}. Compile time: {r['compile_s']:.1f} s; it pays for "
        f"itself after {r['break_even_steps']:.0f} steps. Dynamo graphs compiled in this "
        f"process: {r['dynamo_unique_graphs']}. Fused Adam steps + polyak update (eager): "
        f"{1e3 * r['optimizer_and_polyak_s_per_step']:.2f} ms per step "
        f"({r['optimizer_and_polyak_s_per_step'] * r['wall_median']['compiled']:.0%} of a "
        "compiled step).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
