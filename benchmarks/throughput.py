"""Gradient steps per second of FtTPO's learner on one torch thread: the reference step, each
optimisation alone, all together, and the RLlib learner inside ``FtTPO.train()``, side by side.

Contenders (batch 256, 2x256 MLPs, variant ``fttpo``, float32), per data shape (treatment:
8-d observations, 1-d action; HalfCheetah-v5 random: 17-d, 6-d):

- ``reference``: the plain step of ``tests/algorithms/reference_step.py`` — one MLP per critic
  and target, torch's default per-tensor Adam, statistics read after every step (today's code
  path before the optimisations, minus the distributions' own host reads, which are gone from
  the library);
- ``fused_adam``, ``no_host_reads``: the reference with one optimisation each; ``ensemble``:
  the library's critic ensemble with per-tensor Adam and per-step reads;
- ``plain_all``: all of them (``benchmarks/_common.py:PlainLoop``: the learner's step minus
  RLlib); ``plain_all_compiled``: plus ``compile_update``'s compiled step (``--compile``);
- ``rllib``: ``FtTPO.train()`` with evaluation off, the learner's own
  ``learner/grad_steps_per_s``; ``rllib_compiled`` with ``compile_update=True`` (``--compile``).

Every comparison interleaves its contenders (one warm-up, then ``--repeats`` rounds), reports
medians and the median of per-round ratios to ``reference``; FLOPs of one update
(``FlopCounterMode``) times steps/s against a 256x256 matmul measured in the same run; compile
times; the process's peak RSS; optionally 2 concurrent 1-thread processes vs 1
(``--concurrent-steps``) and a cProfile of the learner. ``--device cuda`` runs everything on the
GPU (``num_gpus_per_learner=1`` for RLlib).

    .venv/bin/python benchmarks/throughput.py --compile --concurrent-steps 3000
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as c
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(c.REPO_ROOT))

from tests.algorithms.reference_step import ReferenceStep  # noqa: E402

DATASETS = {"treatment": c.TREATMENT_DATASET, "halfcheetah": c.CHEETAH_RANDOM_DATASET}
PLAIN = ("reference", "fused_adam", "no_host_reads", "ensemble", "plain_all")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: str, seconds: float = 2.0) -> float:
    """FLOP/s of ``(256 x 256) @ (256 x 256)`` in float32 on the current torch thread(s)."""
    a, b = torch.randn(256, 256, device=device), torch.randn(256, 256, device=device)
    for _ in range(50):
        a @ b
    synchronize(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            a @ b
        n += 50
    synchronize(device)
    return n * 2 * 256**3 / (time.perf_counter() - start)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fttpo_config(**training: Any):
    import fttpo_ray

    return fttpo_ray.FtTPOConfig().training(gamma=0.99, **training)


def plain_contenders(dataset_id: str, device: str, compile: bool) -> tuple[dict, dict, Any]:
    """The plain loops of one data shape, their samplers' step functions and compile times."""
    from fttpo_ray.data import dataset_spaces

    obs_space, act_space = dataset_spaces(dataset_id)
    config = fttpo_config()
    sampler = c.BatchSampler(dataset_id, device=device)

    def reference(**switches: bool) -> Callable[[dict], Any]:
        loop = c.PlainLoop(config, obs_space, act_space, device=device)
        return ReferenceStep(copy.deepcopy(loop.module), config, **switches).step

    loops: dict[str, Callable[[dict], Any]] = {
        "reference": reference(),
        "fused_adam": reference(fused=True),
        "no_host_reads": reference(read_values=False),
        "ensemble": c.PlainLoop(
            config, obs_space, act_space, fused=False, read_values=True, device=device
        ).step,
        "plain_all": c.PlainLoop(config, obs_space, act_space, device=device).step,
    }
    compile_s: dict[str, float] = {}
    if compile:
        loop = c.PlainLoop(config, obs_space, act_space, compile=True, device=device)
        batch = sampler()
        start = time.perf_counter()
        loop.step(batch)
        synchronize(device)
        compile_s["plain_all_compiled"] = time.perf_counter() - start
        loops["plain_all_compiled"] = loop.step
    counter = FlopCounterMode(display=False)
    flop_loop = c.PlainLoop(config, obs_space, act_space, device=device)
    with counter:
        flop_loop.step(sampler())
    return loops, compile_s, (sampler, int(counter.get_total_flops()))


def timer(
    step: Callable[[dict], Any], sampler: Any, steps: int, device: str
) -> Callable[[], float]:
    def run() -> float:
        batches = [sampler() for _ in range(steps)]
        synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        synchronize(device)
        return steps / (time.perf_counter() - start)

    return run


def build_algo(dataset_id: str, steps: int, device: str, **training: Any) -> Any:
    import fttpo_ray

    config = (
        fttpo_ray.FtTPOConfig()
        .dataset(dataset_id)
        .training(gamma=0.99, num_gradient_steps_per_iteration=steps, **training)
        .evaluation(evaluation_interval=None)
        .debugging(seed=0)
    )
    if device == "cuda":
        config.learners(num_gpus_per_learner=1)
    return config.build_algo()


def rllib_timer(algo: Any, walls: list[float]) -> Callable[[], float]:
    """Learner steps/s of one ``train()``; appends the whole call's steps/s to ``walls``."""

    def run() -> float:
        steps = algo.config.num_gradient_steps_per_iteration
        start = time.perf_counter()
        result = algo.train()
        walls.append(steps / (time.perf_counter() - start))
        return float(result["learner"]["grad_steps_per_s"])

    return run


def compare(name: str, contenders: dict[str, Callable[[], float]], repeats: int) -> dict:
    """Interleave the contenders: one warm-up, ``repeats`` rounds; medians, the median of the
    per-round ratios to the first contender, the 1-minute load average before and after."""
    load_start = os.getloadavg()[0]
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():
        fn()
    for _ in range(repeats):
        for k, fn in contenders.items():
            samples[k].append(fn())
    first = next(iter(samples))
    out: dict[str, Any] = {k: {"median": c.median(v), "samples": v} for k, v in samples.items()}
    out["paired_ratio_median"] = {
        k: c.median([x / y for x, y in zip(v, samples[first], strict=True)])
        for k, v in samples.items()
    }
    out["loadavg_1min"] = [load_start, os.getloadavg()[0]]
    print(name, {k: round(out[k]["median"], 1) for k in samples}, flush=True)
    return out


def concurrent(steps: int, processes: int) -> list[float]:
    """Steps/s of ``processes`` simultaneous 1-thread ``plain_all`` loops (treatment shape)."""
    command = [sys.executable, __file__, "--worker-steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(processes)
    ]
    return [float(json.loads(p.communicate()[0].strip().splitlines()[-1])) for p in procs]


def worker(steps: int) -> None:
    from fttpo_ray.data import dataset_spaces

    torch.set_num_threads(1)
    obs_space, act_space = dataset_spaces(c.TREATMENT_DATASET)
    loop = c.PlainLoop(fttpo_config(), obs_space, act_space)
    sampler = c.BatchSampler(c.TREATMENT_DATASET)
    timer(loop.step, sampler, 20, "cpu")()
    print(json.dumps(timer(loop.step, sampler, steps, "cpu")()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="gradient steps per timed round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time the compiled step")
    parser.add_argument("--concurrent-steps", type=int, default=0, help="0: skip 2-vs-1 check")
    parser.add_argument("--profile-steps", type=int, default=300, help="0: no profile")
    parser.add_argument("--results-name", default="throughput")
    parser.add_argument("--worker-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_steps:
        worker(args.worker_steps)
        return

    import ray

    from fttpo_ray.data import ensure_dataset

    torch.set_num_threads(1)
    ensure_dataset(c.TREATMENT_DATASET)
    c.ensure_cheetah_random()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: dict[str, Any] = {"args": vars(args), "loadavg_start": list(os.getloadavg())}
    try:
        results["matmul_flops_per_s"] = mm = matmul_rate(args.device)
        for shape, dataset_id in DATASETS.items():
            loops, compile_s, (sampler, flops) = plain_contenders(
                dataset_id, args.device, args.compile
            )
            contenders = {
                k: timer(step, sampler, args.steps, args.device) for k, step in loops.items()
            }
            algos = {"rllib": build_algo(dataset_id, args.steps, args.device)}
            if args.compile:
                algos["rllib_compiled"] = build_algo(
                    dataset_id, args.steps, args.device, compile_update=True
                )
                start = time.perf_counter()
                algos["rllib_compiled"].train()
                compile_s["rllib_compiled_first_train"] = time.perf_counter() - start
            walls: dict[str, list[float]] = {k: [] for k in algos}
            contenders |= {k: rllib_timer(a, walls[k]) for k, a in algos.items()}
            try:
                out = compare(shape, contenders, args.repeats)
            finally:
                for algo in algos.values():
                    algo.stop()
            out["train_wall_steps_per_s"] = {k: c.median(v[1:]) for k, v in walls.items()}
            out["flops_per_update"] = flops
            out["flop_rate_over_matmul"] = {k: flops * out[k]["median"] / mm for k in contenders}
            out["rllib_over_plain_all"] = c.median(
                [
                    x / y
                    for x, y in zip(
                        out["rllib"]["samples"], out["plain_all"]["samples"], strict=True
                    )
                ]
            )
            out["compile_s"] = compile_s
            out["peak_rss_mb_after"] = peak_rss_mb()
            results[shape] = out

        if args.concurrent_steps:
            load = os.getloadavg()[0]
            one = concurrent(args.concurrent_steps, 1)
            two = concurrent(args.concurrent_steps, 2)
            results["concurrent"] = {
                "one": one,
                "two": two,
                "loadavg_1min": [load, os.getloadavg()[0]],
            }

        if args.profile_steps:
            algo = build_algo(c.TREATMENT_DATASET, args.profile_steps, args.device)
            try:
                algo.train()
                profiler = cProfile.Profile()
                profiler.enable()
                algo.train()
                profiler.disable()
            finally:
                algo.stop()
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(25)
            results["profile_tottime_top25"] = buffer.getvalue()
    finally:
        ray.shutdown()
    results["peak_rss_mb"] = peak_rss_mb()
    c.write_results(args.results_name, results, markdown(results))
    print(markdown(results))


def _load(o: dict[str, Any]) -> str:
    return f"{o['loadavg_1min'][0]:.1f} → {o['loadavg_1min'][1]:.1f}"


def markdown(r: dict[str, Any]) -> str:
    a = r["args"]
    mm = r["matmul_flops_per_s"]
    lines = [
        f"Gradient steps/s of FtTPO (variant `fttpo`, batch 256, 2x256 MLPs, float32) on "
        f"{a['device']}, one torch thread; see the docstring of `benchmarks/throughput.py` for "
        f"the contenders. Interleaved: one warm-up, then {a['repeats']} rounds of {a['steps']} "
        "steps per contender; medians. **ratio**: median of the per-round ratios to "
        "`reference` (back to back, the least load-sensitive figure). **FLOP rate**: FLOPs of "
        "one update (`FlopCounterMode`) × steps/s, over the rate of a 256×256 @ 256×256 "
        f"float32 matmul measured in the same run ({mm / 1e9:.1f} GFLOP/s). The RLlib rows "
        "use the learner's own update time (`learner/grad_steps_per_s`); `train()` = the whole "
        "call (also samples the minibatches).\n",
    ]
    for shape in DATASETS:
        o = r[shape]
        lines += [
            f"\n**{shape}** ({o['flops_per_update'] / 1e9:.3f} GFLOP per update; load "
            f"{_load(o)}; RLlib learner / plain_all, paired: "
            f"{o['rllib_over_plain_all']:.3f}; peak RSS {o['peak_rss_mb_after']:.0f} MB):\n",
            "| contender | steps/s | ratio to reference | FLOP rate / matmul | train() steps/s |",
            "|---|---|---|---|---|",
        ]
        for k in o["paired_ratio_median"]:
            wall = o["train_wall_steps_per_s"].get(k)
            lines.append(
                f"| {k} | {o[k]['median']:.1f} | {o['paired_ratio_median'][k]:.2f} | "
                f"{o['flop_rate_over_matmul'][k]:.2f} | "
                f"{'' if wall is None else f'{wall:.1f}'} |"
            )
        for k, v in o["compile_s"].items():
            lines.append(f"\nCompile time, {k}: {v:.1f} s")
    if "concurrent" in r:
        con = r["concurrent"]
        lines.append(
            f"\nConcurrent 1-thread `plain_all` processes (treatment): alone "
            f"{con['one'][0]:.1f} steps/s; two at once {', '.join(f'{x:.1f}' for x in con['two'])}"
            f" steps/s (load {con['loadavg_1min'][0]:.1f} → {con['loadavg_1min'][1]:.1f})."
        )
    if "profile_tottime_top25" in r:
        lines += [
            f"\ncProfile of one `train()` of {a['profile_steps']} steps (treatment), top by "
            "own time:\n",
            "```",
            r["profile_tottime_top25"].strip(),
            "```",
        ]
    lines.append(f"\nPeak RSS of the benchmark process: {r['peak_rss_mb']:.0f} MB.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
